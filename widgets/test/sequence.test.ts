/** SeqGate: duplicates dropped, gaps noticed, one resync in flight. */
import { describe, expect, it } from 'vitest';
import { RESYNC_TIMEOUT_MS, SeqGate } from '../src/sequence';

describe('SeqGate', () => {
  it('applies messages in order and drops what it has seen', () => {
    const g = new SeqGate();
    expect(g.admit('batch', 1)).toEqual({ apply: true, resync: false });
    expect(g.admit('update', 2)).toEqual({ apply: true, resync: false });
    expect(g.admit('update', 2)).toEqual({ apply: false, resync: false });
    expect(g.admit('insert', 1)).toEqual({ apply: false, resync: false });
    expect(g.last).toBe(2);
  });

  it('applies a message after a gap and asks for one sync until it comes', () => {
    const g = new SeqGate();
    g.admit('batch', 1);
    expect(g.admit('batch', 4)).toEqual({ apply: true, resync: true });
    expect(g.admit('batch', 7)).toEqual({ apply: true, resync: false }); // one in flight
    expect(g.gaps).toBe(2);
    expect(g.admit('sync', 7)).toEqual({ apply: true, resync: false });
    expect(g.resyncing).toBe(false);
    expect(g.admit('batch', 9)).toEqual({ apply: true, resync: true });
  });

  it('asks again when a sync does not come in time', () => {
    let now = 0;
    const g = new SeqGate(() => now);
    g.admit('batch', 1);
    expect(g.admit('batch', 3).resync).toBe(true);
    now += RESYNC_TIMEOUT_MS + 1;
    expect(g.admit('batch', 5).resync).toBe(true);
  });

  it('applies a sync it asked for, the first one, or a newer one; not a stale one', () => {
    const g = new SeqGate();
    expect(g.admit('sync', 5).apply).toBe(true); // the first: the answer to our hello
    g.admit('batch', 6);
    expect(g.admit('sync', 6).apply).toBe(false); // another client's: nothing new in it
    expect(g.admit('sync', 8).apply).toBe(true);
    g.expectSync();
    expect(g.admit('sync', 8).apply).toBe(true); // after a reconnect: ours
  });

  it('starts again for a new kernel process', () => {
    const g = new SeqGate();
    g.admit('batch', 40);
    g.reset();
    expect(g.admit('batch', 1)).toEqual({ apply: true, resync: false });
  });
});
