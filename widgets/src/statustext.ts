/**
 * The run bar's status as text: a short line (state, step k of max, sub-calls done, in flight,
 * queued, failed, cancelled, tokens, cost, elapsed, the reason) and the full text the tooltip
 * and the click-open detail show, one fact per line.
 */
import type { IRunState } from './runs';

/** The status as a short line and as the full text (one fact per line). */
export interface IStatusText {
  line: string;
  full: string;
}

/** A reason without the outcome it repeats ("stopped: interrupted" -> "interrupted"). */
export function reasonText(outcome: string, reason: string | null | undefined): string | null {
  if (!reason) {
    return null;
  }
  const r = reason.trim();
  const prefix = new RegExp(`^\\(?${outcome}\\)?\\s*[:·-]\\s*`, 'i');
  return r.replace(prefix, '') || null;
}

export function formatStatus(r: IRunState | null, now = performance.now()): IStatusText {
  if (!r) {
    return { line: 'RLM: no run', full: 'RLM: no run yet in this notebook' };
  }
  const s = r.status;
  const outcome = r.finish ? r.finish.outcome : (s?.state ?? 'starting');
  let state: string = outcome;
  if (r.pending === 'pausing') {
    state += ' (pausing at the next step)';
  } else if (r.pending === 'resuming') {
    state = 'resuming';
  } else if (r.pending === 'stopping') {
    state += ' (stopping)';
  }
  const line = [`RLM ${state}`];
  const full = [`RLM run ${r.run}: ${state}`];
  if (s) {
    // Tick elapsed locally between throttled status messages while the run is live.
    const live = !r.finish && s.state === 'running';
    const elapsed = s.elapsed_s + (live ? (now - r.statusAt) / 1000 : 0);
    const c = s.subcalls;
    const calls = [`${c.done} done`, `${c.inflight} in flight`, `${c.queued} queued`];
    if (c.failed) {
      calls.push(`${c.failed} failed`);
    }
    if (c.cancelled) {
      calls.push(`${c.cancelled} cancelled`);
    }
    const tokens = `${s.tokens.toLocaleString('en-US')} tok`;
    const cost = `$${s.cost_usd.toFixed(4)}`;
    const time = `${elapsed.toFixed(1)} s`;
    line.push(
      `step ${s.step}/${s.max_steps}`,
      `sub-calls ${calls.join(' · ')}`,
      tokens,
      cost,
      time
    );
    full.push(
      `step ${s.step} of at most ${s.max_steps}`,
      `sub-calls: ${c.done} done, ${c.inflight} in flight, ${c.queued} queued, ` +
        `${c.failed} failed, ${c.cancelled} cancelled`,
      `${tokens}, ${cost}`,
      `${time} active (time paused is not counted)`
    );
  }
  const reason = reasonText(outcome, r.finish?.reason ?? s?.reason);
  if (reason) {
    line.push(reason);
    full.push(`why: ${reason}`);
  }
  if (r.finish?.answer != null && r.finish.outcome === 'final') {
    full.push(`answer: ${r.finish.answer}`);
  }
  return { line: line.join(' · '), full: full.join('\n') };
}
