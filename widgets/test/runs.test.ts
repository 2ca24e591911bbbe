/** RunStore: the front-end's own record of each run, from status / finish / sync messages. */
import { describe, expect, it } from 'vitest';
import type { IFinishMsg, IStatus, RunState } from '../src/protocol';
import { RunStore } from '../src/runs';

function status(state: RunState, extra: Partial<IStatus> = {}): IStatus {
  return {
    state,
    step: 2,
    max_steps: 30,
    subcalls: { done: 3, queued: 5, inflight: 16, failed: 0, cancelled: 0 },
    tokens: 1200,
    cost_usd: 0.01,
    elapsed_s: 4.5,
    reason: null,
    ...extra
  };
}

const finish = (outcome: IFinishMsg['outcome'], reason: string | null = null): IFinishMsg => ({
  type: 'finish',
  run: 'r1',
  outcome,
  answer: outcome === 'final' ? '42' : null,
  reason
});

describe('RunStore', () => {
  it('follows a live run to its end', () => {
    const runs = new RunStore();
    const seen: string[] = [];
    runs.changed.connect((_, r) => seen.push(r.finish?.outcome ?? r.status?.state ?? 'new'));
    runs.touch('r1', 'q');
    runs.setStatus('r1', status('running'));
    expect(runs.live && runs.controllable && !runs.paused).toBe(true);
    expect(runs.state).toBe('running');
    runs.setFinish(finish('final'));
    expect(runs.live || runs.controllable).toBe(false);
    expect(runs.state).toBe('final');
    expect(seen).toEqual(['new', 'running', 'final']);
  });

  it('treats a paused run as resumable and a later status as resumed', () => {
    const runs = new RunStore();
    runs.touch('r1', 'q');
    runs.setFinish(finish('paused', 'step mode: step 2 is proposed, not run'));
    expect(runs.paused && runs.controllable && !runs.live).toBe(true);
    runs.setPending('r1', 'resuming');
    expect(runs.live && !runs.paused).toBe(true);
    runs.setStatus('r1', status('running'));
    expect(runs.active?.finish).toBeNull();
    expect(runs.active?.pending).toBeNull();
  });

  it('shows a stop as stopped, not as an error, and clears what the human asked for', () => {
    const runs = new RunStore();
    runs.touch('r1', 'q');
    runs.setStatus('r1', status('running'));
    runs.setPending('r1', 'stopping');
    runs.setFinish(finish('stopped', 'stopped by the user'));
    expect(runs.state).toBe('stopped');
    expect(runs.active?.pending).toBeNull();
    expect(runs.controllable).toBe(false);
  });

  it('takes the whole state of a run from a sync', () => {
    const runs = new RunStore();
    runs.sync({ run: 'r1', anchor: 'q', cells: [], status: status('running'), finished: null });
    expect(runs.live).toBe(true);
    const { type: _type, ...finished } = finish('error', 'the model server failed');
    runs.sync({ run: 'r1', anchor: 'q', cells: [], status: status('error'), finished });
    expect(runs.active?.finish).toMatchObject({ type: 'finish', run: 'r1', outcome: 'error' });
    expect(runs.state).toBe('error');
  });

  it('makes the run that spoke last the active one', () => {
    const runs = new RunStore();
    runs.touch('r1', 'q1');
    runs.touch('r2', 'q2');
    expect(runs.active?.run).toBe('r2');
    runs.setStatus('r1', status('running'));
    expect(runs.active?.run).toBe('r1');
    expect([...runs.all()].map(r => r.anchor)).toEqual(['q1', 'q2']);
  });
});
