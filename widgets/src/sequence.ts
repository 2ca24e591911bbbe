/**
 * The v2 sequence rule for one kernel's messages. IOPub drops messages under load and
 * jupyter_server rate-limits it, and a kernel may send one message to several comms: so a client
 * ignores what it has seen (seq <= last), applies a message after a gap anyway (every operation
 * is an idempotent upsert or patch by cell id) and asks for a `sync` (by saying `hello` again),
 * with at most one such request in flight.
 */

/** What to do with one incoming message. */
export interface IVerdict {
  apply: boolean;
  /** Messages were lost: say `hello` now (the kernel answers with a `sync`). */
  resync: boolean;
}

/** A resync unanswered this long may be asked again (its reply may itself have been lost). */
export const RESYNC_TIMEOUT_MS = 10_000;

export class SeqGate {
  constructor(now: () => number = () => performance.now()) {
    this._now = now;
  }

  /** The last seq applied, or null before any. */
  get last(): number | null {
    return this._last;
  }

  /** Times messages were found missing (for diagnostics; as the Python mirror's `gaps`). */
  get gaps(): number {
    return this._gaps;
  }

  /** True while a `hello` sent for a gap (or a reconnect) awaits its `sync`. */
  get resyncing(): boolean {
    return this._resyncAt !== null && this._now() - this._resyncAt < RESYNC_TIMEOUT_MS;
  }

  /**
   * Judge one top-level message (a `batch` counts as one). A `sync` is applied when it answers
   * our own `hello` or is newer than what we have; otherwise its effects are already here.
   */
  admit(type: string, seq: number): IVerdict {
    if (type === 'sync') {
      const apply = this._resyncAt !== null || this._last === null || seq > this._last;
      if (apply) {
        this._last = seq;
        this._resyncAt = null;
      }
      return { apply, resync: false };
    }
    const last = this._last;
    if (last !== null && seq <= last) {
      return { apply: false, resync: false };
    }
    this._last = seq;
    if (last === null || seq === last + 1) {
      return { apply: true, resync: false };
    }
    this._gaps += 1;
    const resync = !this.resyncing;
    if (resync) {
      this._resyncAt = this._now();
    }
    return { apply: true, resync };
  }

  /** We said `hello` for another reason (attach, reconnect): its `sync` is to be applied. */
  expectSync(): void {
    this._resyncAt = this._now();
  }

  /** A new kernel process: its counter starts again. */
  reset(): void {
    this._last = null;
    this._resyncAt = null;
  }

  private _now: () => number;
  private _last: number | null = null;
  private _resyncAt: number | null = null;
  private _gaps = 0;
}
