/**
 * The live status line: state, step k of max, sub-calls (done, in flight, queued, failed,
 * cancelled), tokens, cost, elapsed. The bar keeps it to one line (cut with "…"); its tooltip
 * and a click-open detail show the whole status with the reason (why paused or stopped, the
 * step-mode hint).
 */
import { Widget } from '@lumino/widgets';
import type { RunStore } from './runs';
import { formatStatus } from './statustext';

export class StatusLine extends Widget {
  constructor(runs: RunStore) {
    super();
    this.addClass('rlm-status');
    this.node.tabIndex = 0;
    this.node.setAttribute('role', 'status');
    this._runs = runs;
    runs.changed.connect(this._render, this);
    this.node.addEventListener('click', this._toggleDetail);
    this.node.addEventListener('keydown', e => {
      if (e.key === 'Enter' || e.key === ' ') {
        this._toggleDetail();
      }
    });
    this._render();
  }

  dispose(): void {
    window.clearInterval(this._timer);
    window.clearTimeout(this._noteTimer);
    this._closeDetail();
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
    const text = formatStatus(this._runs.active);
    const line = this._note || text.line;
    if (this.node.textContent !== line) {
      this.node.textContent = line;
    }
    const full = this._note ? `${this._note}\n\n${text.full}` : text.full;
    if (this.node.title !== full) {
      this.node.title = full;
    }
    if (this._detail) {
      this._detail.textContent = full;
    }
    this.node.dataset.state = this._runs.state;
    const r = this._runs.active;
    const live = !!r && !r.finish && r.status?.state === 'running';
    if (live && !this._timer) {
      this._timer = window.setInterval(() => this._render(), 1000);
    } else if (!live && this._timer) {
      window.clearInterval(this._timer);
      this._timer = 0;
    }
  }

  /** The whole status in a box under the line, until clicked again, Escape or a click away. */
  private _toggleDetail = (): void => {
    if (this._detail) {
      this._closeDetail();
      return;
    }
    const box = (this._detail = document.createElement('div'));
    box.className = 'rlm-status-detail';
    box.setAttribute('role', 'tooltip');
    box.textContent = this.node.title;
    const rect = this.node.getBoundingClientRect();
    box.style.left = `${Math.max(4, rect.left)}px`;
    box.style.top = `${rect.bottom + 2}px`;
    document.body.appendChild(box);
    document.addEventListener('mousedown', this._onAway, true);
    document.addEventListener('keydown', this._onKey, true);
  };

  private _onAway = (e: MouseEvent): void => {
    if (!this.node.contains(e.target as Node) && !this._detail?.contains(e.target as Node)) {
      this._closeDetail();
    }
  };

  private _onKey = (e: KeyboardEvent): void => {
    if (e.key === 'Escape') {
      this._closeDetail();
    }
  };

  private _closeDetail(): void {
    this._detail?.remove();
    this._detail = null;
    document.removeEventListener('mousedown', this._onAway, true);
    document.removeEventListener('keydown', this._onKey, true);
  }

  private _runs: RunStore;
  private _timer = 0;
  private _note = '';
  private _noteTimer = 0;
  private _detail: HTMLDivElement | null = null;
}
