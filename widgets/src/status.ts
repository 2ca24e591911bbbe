/** The live status line: state, step k of max, sub-calls, tokens, cost, elapsed. */
import { Widget } from '@lumino/widgets';
import type { IStatus } from './protocol';
import type { IRunState, RunStore } from './runs';

/** `12 done · 4 in flight · 28 queued · 0 failed` (queued and cancelled only when there are). */
export function subcallsText(sc: IStatus['subcalls']): string {
  const parts = [`${sc.done} done`, `${sc.inflight} in flight`];
  if (sc.queued) {
    parts.push(`${sc.queued} queued`);
  }
  parts.push(`${sc.failed} failed`);
  if (sc.cancelled) {
    parts.push(`${sc.cancelled} cancelled`);
  }
  return parts.join(' · ');
}

export function formatStatus(r: IRunState | null, now = performance.now()): string {
  if (!r) {
    return 'RLM: no run';
  }
  const s = r.status;
  let state = r.finish ? r.finish.outcome : s?.state ?? 'starting';
  if (r.pending === 'pausing') {
    state += ' (pausing at the next step)';
  } else if (r.pending === 'resuming') {
    state = 'resuming';
  } else if (r.pending === 'stopping') {
    state += ' (stopping)';
  }
  const parts = [`RLM ${state}`];
  if (s) {
    // Tick elapsed locally between throttled status messages while the run is live.
    const live = !r.finish && s.state === 'running';
    const elapsed = s.elapsed_s + (live ? (now - r.statusAt) / 1000 : 0);
    parts.push(
      `step ${s.step}/${s.max_steps}`,
      `sub-calls ${subcallsText(s.subcalls)}`,
      `${s.tokens.toLocaleString('en-US')} tok`,
      `$${s.cost_usd.toFixed(4)}`,
      `${elapsed.toFixed(1)} s`
    );
  }
  if (r.finish?.reason) {
    parts.push(r.finish.reason);
  }
  return parts.join(' · ');
}

export class StatusLine extends Widget {
  constructor(runs: RunStore) {
    super();
    this.addClass('rlm-status');
    this._runs = runs;
    runs.changed.connect(this._render, this);
    this._render();
  }

  dispose(): void {
    window.clearInterval(this._timer);
    window.clearTimeout(this._noteTimer);
    super.dispose();
  }

  /** Show a short message in place of the status for a few seconds. */
  note(text: string, ms = 4000): void {
    this._note = text;
    window.clearTimeout(this._noteTimer);
    this._noteTimer = window.setTimeout(() => {
      this._note = '';
      this._render();
    }, ms);
    this._render();
  }

  private _render(): void {
    const r = this._runs.active;
    this.node.textContent = this._note || formatStatus(r);
    this.node.dataset.state = r ? r.finish?.outcome ?? r.status?.state ?? 'starting' : 'none';
    const live = !!r && !r.finish && r.status?.state === 'running';
    if (live && !this._timer) {
      this._timer = window.setInterval(() => this._render(), 1000);
    } else if (!live && this._timer) {
      window.clearInterval(this._timer);
      this._timer = 0;
    }
  }

  private _runs: RunStore;
  private _timer = 0;
  private _note = '';
  private _noteTimer = 0;
}
