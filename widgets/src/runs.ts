/**
 * The front-end's own record of each run's state. JupyterLab's busy indicator can read idle
 * while a `%%rlm` cell still runs (comm traffic), so the UI trusts only these messages.
 */
import { ISignal, Signal } from '@lumino/signaling';
import { ENDED_OUTCOMES } from './protocol';
import type { IFinishMsg, IStatus, ISyncRun, RunState } from './protocol';

export interface IRunState {
  run: string;
  anchor: string | null;
  status: IStatus | null;
  /** performance.now() when `status` arrived, to tick elapsed time between messages. */
  statusAt: number;
  finish: IFinishMsg | null;
  /**
   * What the human asked for that the kernel has not confirmed yet: `pausing` (Pause acts at
   * the next step boundary), `resuming` (a `%rlm continue` / `%rlm step` was sent), `stopping`.
   */
  pending: 'pausing' | 'resuming' | 'stopping' | null;
}

export class RunStore {
  get changed(): ISignal<this, IRunState> {
    return this._changed;
  }

  /** The run that spoke last: the one the controls and status line refer to. */
  get active(): IRunState | null {
    return this._active;
  }

  /** True while the active run can still take a control message. */
  get controllable(): boolean {
    const r = this._active;
    return !!r && !(r.finish && ENDED_OUTCOMES.has(r.finish.outcome));
  }

  /** The active run is executing in the kernel (not paused, not ended). */
  get live(): boolean {
    const r = this._active;
    return !!r && (!r.finish || r.pending === 'resuming');
  }

  /** The active run is paused: Continue / Step resume it with a `%rlm continue|step` execution. */
  get paused(): boolean {
    const r = this._active;
    return !!r && r.finish?.outcome === 'paused' && r.pending !== 'resuming';
  }

  /** The active run's state as the UI shows it: how it ended, else its live state. */
  get state(): RunState | 'starting' | 'none' {
    const r = this._active;
    return r ? (r.finish?.outcome ?? r.status?.state ?? 'starting') : 'none';
  }

  all(): IterableIterator<IRunState> {
    return this._runs.values();
  }

  get(run: string): IRunState | undefined {
    return this._runs.get(run);
  }

  touch(run: string, anchor?: string | null): IRunState {
    let state = this._runs.get(run);
    if (!state) {
      state = {
        run,
        anchor: anchor ?? null,
        status: null,
        statusAt: 0,
        finish: null,
        pending: null
      };
      this._runs.set(run, state);
      this._active = state;
      this._changed.emit(state);
    } else if (anchor) {
      state.anchor = anchor;
    }
    this._active = state;
    return state;
  }

  setStatus(run: string, status: IStatus): void {
    const state = this.touch(run);
    state.status = status;
    state.statusAt = performance.now();
    // A paused run that reports again has been continued or stepped.
    if (state.finish?.outcome === 'paused' && status.state !== 'paused') {
      state.finish = null;
    }
    if (state.pending === 'resuming' && status.state === 'running') {
      state.pending = null;
    }
    this._changed.emit(state);
  }

  setFinish(msg: IFinishMsg): void {
    const state = this.touch(msg.run);
    state.finish = msg;
    state.pending = null;
    this._changed.emit(state);
  }

  /** Record a request the kernel has yet to act on (shown in the status line). */
  setPending(run: string, pending: IRunState['pending']): void {
    const state = this._runs.get(run);
    if (state) {
      state.pending = pending;
      this._changed.emit(state);
    }
  }

  sync(run: ISyncRun): void {
    const state = this.touch(run.run, run.anchor);
    if (run.status) {
      state.status = run.status;
      state.statusAt = performance.now();
    }
    // `finished` is the run's finish message (without its type), or null while it runs.
    state.finish = run.finished ? { ...run.finished, type: 'finish', run: run.run } : null;
    if (state.finish) {
      state.pending = null;
    }
    this._changed.emit(state);
  }

  private _runs = new Map<string, IRunState>();
  private _active: IRunState | null = null;
  private _changed = new Signal<this, IRunState>(this);
}
