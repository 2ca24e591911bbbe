/**
 * Routes the kernel's `rlm.cells` messages for one notebook: the sequence rule first (duplicates
 * dropped, gaps noticed), then each message of a `batch` in order to the cell mirror or the run
 * store. Free of JupyterLab's comm plumbing (connection.ts owns that), so the unit tests drive the
 * very code a panel runs with a recorded transcript.
 */
import { check, unbatch } from './protocol';
import type { IFinishMsg, IStatusMsg, KernelMsg } from './protocol';
import type { CellMirror } from './mirror';
import type { RunStore } from './runs';
import { SeqGate } from './sequence';

/** What one received message led to. */
export interface IReceipt {
  /** Messages were lost: say `hello` again (the kernel answers with a `sync`). */
  resync: boolean;
  /** Runs of this notebook that the message spoke about (the connection maps them to comms). */
  runs: string[];
}

const NOTHING: IReceipt = { resync: false, runs: [] };

export class Router {
  constructor(mirror: CellMirror, runs: RunStore, gate = new SeqGate()) {
    this._mirror = mirror;
    this._runs = runs;
    this.gate = gate;
  }

  readonly gate: SeqGate;

  /** Messages dropped as duplicates (for diagnostics). */
  get duplicates(): number {
    return this._duplicates;
  }

  /** Take one comm message's data; invalid or front-end messages are logged and ignored. */
  receive(data: unknown): IReceipt {
    let msg: KernelMsg;
    try {
      const checked = check(data);
      if (checked.type === 'hello' || checked.type === 'control') {
        return NOTHING; // front-end -> kernel messages; nothing to do if echoed
      }
      msg = checked;
    } catch (err) {
      console.warn(`rlm.cells: ${(err as Error).message}`);
      return NOTHING;
    }
    const verdict = this.gate.admit(msg.type, msg.seq);
    if (!verdict.apply) {
      this._duplicates += 1;
      return NOTHING;
    }
    const runs = new Set<string>();
    for (const m of unbatch(msg)) {
      switch (m.type) {
        case 'insert':
          if (this._claim(m.run, m.anchor, m.after)) {
            this._mirror.insert(m);
            runs.add(m.run);
          }
          break;
        case 'update':
          // Matched by cell id in the mirror, so a foreign run's update is a no-op.
          this._mirror.update(m);
          break;
        case 'status':
        case 'finish':
          if (this._runs.get(m.run)) {
            this._applyRunMsg(m);
            runs.add(m.run);
          } else {
            // Status can precede the first insert; hold it until the run proves to be ours.
            const held = (this._held.get(m.run) ?? []).filter(h => h.type !== m.type);
            this._held.set(m.run, [...held, m]);
          }
          break;
        case 'sync':
          for (const run of m.runs) {
            const first = run.cells[0]?.id ?? null;
            if (this._claim(run.run, run.anchor, first)) {
              this._mirror.sync(run);
              this._runs.sync(run);
              runs.add(run.run);
            }
          }
          break;
      }
    }
    return { resync: verdict.resync, runs: [...runs] };
  }

  /** A new kernel process: its sequence starts again; held messages belong to the old one. */
  reset(): void {
    this.gate.reset();
    this._held.clear();
  }

  /** Is this run anchored in this notebook? If so, record it and replay held messages. */
  private _claim(run: string, anchor: string | null, after: string | null): boolean {
    if (!this._runs.get(run)) {
      if (!(anchor && this._mirror.has(anchor)) && !(after && this._mirror.has(after))) {
        return false;
      }
    }
    this._runs.touch(run, anchor);
    const held = this._held.get(run);
    if (held) {
      this._held.delete(run);
      held.forEach(m => this._applyRunMsg(m));
    }
    return true;
  }

  private _applyRunMsg(msg: IStatusMsg | IFinishMsg): void {
    if (msg.type === 'status') {
      this._runs.setStatus(msg.run, msg.status);
    } else {
      this._runs.setFinish(msg);
    }
  }

  private _mirror: CellMirror;
  private _runs: RunStore;
  private _held = new Map<string, (IStatusMsg | IFinishMsg)[]>();
  private _duplicates = 0;
}
