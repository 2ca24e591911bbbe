/**
 * The JupyterLab client replays the shared `rlm.cells` transcript (tests/data/cells_transcript.json,
 * also replayed by the Python mirror in tests/test_mirror_transcript.py) and must end with exactly
 * its expected cells: the same router, sequence gate, mirror and run store a panel runs, on the
 * shared notebook model JupyterLab's views follow.
 */
import { describe, expect, it } from 'vitest';
import { Router } from '../src/router';
import { RunStore } from '../src/runs';
import { mirrorOn, normalOutput, notebook, readTranscript, view } from './helpers';

function replay(frameEvery: 'message' | 'end') {
  const t = readTranscript();
  const nb = notebook(t.initial_cells);
  const { mirror, frames } = mirrorOn(nb);
  const runs = new RunStore();
  const router = new Router(mirror, runs);
  let resyncs = 0;
  for (const msg of t.messages) {
    if (router.receive(msg).resync) {
      resyncs += 1;
    }
    if (frameEvery === 'message') {
      frames.drain();
    }
  }
  frames.drain();
  return { t, nb, runs, router, resyncs, mirror };
}

const expectedCells = () =>
  readTranscript().expected.cells.map(c =>
    c.outputs ? { ...c, outputs: c.outputs.map(normalOutput) } : c
  );

describe('the transcript replayed through the JupyterLab client', () => {
  it.each(['message', 'end'] as const)(
    'ends with exactly the expected cells (frames run after each %s)',
    frameEvery => {
      const { nb, mirror } = replay(frameEvery);
      expect(mirror.pending).toBe(0);
      expect(nb.cells.map(c => view(c.toJSON()))).toEqual(expectedCells());
    }
  );

  it('drops duplicates and asks for a sync after a gap, one at a time', () => {
    const { t, router, resyncs } = replay('message');
    if (t.expected.duplicates !== undefined) {
      expect(router.duplicates).toBe(t.expected.duplicates);
    }
    if (t.expected.gaps !== undefined) {
      expect(router.gate.gaps).toBe(t.expected.gaps);
      expect(resyncs).toBeGreaterThanOrEqual(t.expected.gaps > 0 ? 1 : 0);
      expect(resyncs).toBeLessThanOrEqual(t.expected.gaps);
    }
    expect(router.gate.resyncing).toBe(false);
  });

  it('records how each run ended', () => {
    const { t, runs } = replay('message');
    for (const [run, want] of Object.entries(t.expected.runs ?? {})) {
      const finish = runs.get(run)?.finish as unknown as Record<string, unknown> | null;
      expect(finish).not.toBeNull();
      expect(Object.fromEntries(Object.keys(want).map(k => [k, finish![k]]))).toEqual(want);
    }
  });

  it('collapses sub-call cells as they arrive and keeps them collapsed after the sync', () => {
    const { nb } = replay('message');
    const subcalls = nb.cells.filter(
      c => (c.getMetadata('rlm') as { kind?: string } | undefined)?.kind === 'llm'
    );
    expect(subcalls.length).toBeGreaterThan(0);
    for (const c of subcalls) {
      expect(c.getMetadata('jupyter')).toMatchObject({ source_hidden: true, outputs_hidden: true });
    }
  });
});
