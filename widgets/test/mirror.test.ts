/** CellMirror: O(1) work per operation on the shared notebook, frames within a budget. */
import { describe, expect, it } from 'vitest';
import type * as nbformat from '@jupyterlab/nbformat';
import { FRAME_BUDGET_MS, INSERT_CHUNK, PACE_MS } from '../src/mirror';
import type { IInsertMsg, InsertKind, WireCell } from '../src/protocol';
import { mirrorOn, notebook } from './helpers';

const RUN = 'r1';

function code(id: string, kind: InsertKind, extra: Record<string, unknown> = {}): WireCell {
  return {
    id,
    cell_type: 'code',
    source: `%%llm --call ${id}\nprompt ${id}`,
    metadata: { rlm: { kind, run: RUN, ...extra } },
    outputs: [],
    execution_count: null
  } as unknown as WireCell;
}

function insert(cell: WireCell, after: string | null, anchor = 'q'): IInsertMsg {
  const kind = (cell.metadata.rlm as { kind: InsertKind }).kind;
  return { type: 'insert', run: RUN, id: cell.id, anchor, after, kind, cell };
}

const answer = (text: string): nbformat.IOutput[] => [
  {
    output_type: 'execute_result',
    data: { 'text/plain': text },
    metadata: {},
    execution_count: null
  }
];

const start = () =>
  notebook([
    {
      id: 'q',
      cell_type: 'code',
      source: '%%rlm\nq',
      metadata: {},
      outputs: [],
      execution_count: null
    },
    { id: 'tail', cell_type: 'markdown', source: 'below the run', metadata: {} }
  ]);

const ids = (nb: ReturnType<typeof notebook>) => nb.cells.map(c => c.id);

describe('CellMirror', () => {
  it('inserts each cell after its predecessor and in front of the cells below the run', () => {
    const nb = start();
    const { mirror } = mirrorOn(nb);
    mirror.insert(insert(code('s1', 'step'), 'q'));
    mirror.insert(insert(code('s2', 'step'), 's1'));
    expect(ids(nb)).toEqual(['q', 's1', 's2', 'tail']);
  });

  it('applies sub-call bursts on animation frames, and a sparse message at once with what precedes it', () => {
    const nb = start();
    const { mirror, frames } = mirrorOn(nb);
    mirror.insert(insert(code('s1', 'step'), 'q'));
    mirror.insert(insert(code('c1', 'llm'), 's1'));
    mirror.insert(insert(code('c2', 'llm'), 'c1'));
    expect(ids(nb)).toEqual(['q', 's1', 'tail']);
    expect(frames.waiting).toBe(1);
    mirror.update({ type: 'update', run: RUN, id: 's1', patch: { execution_count: 3 } });
    expect(ids(nb)).toEqual(['q', 's1', 'c1', 'c2', 'tail']);
    expect(frames.waiting).toBe(0);
  });

  it('folds patches into a queued cell and merges metadata keys', () => {
    const nb = start();
    const { mirror, frames } = mirrorOn(nb);
    mirror.insert(insert(code('c1', 'llm', { call: { status: 'queued' } }), 'q'));
    mirror.update({ type: 'update', run: RUN, id: 'c1', patch: { metadata: { extra: 1 } } });
    mirror.update({
      type: 'update',
      run: RUN,
      id: 'c1',
      patch: {
        outputs: answer('42'),
        metadata: { rlm: { kind: 'llm', run: RUN, call: { status: 'ok' } } }
      }
    });
    expect(mirror.pending).toBe(1);
    frames.drain();
    const cell = nb.cells[1];
    expect(cell.getMetadata('extra')).toBe(1);
    expect(cell.getMetadata('rlm')).toMatchObject({ call: { status: 'ok' } });
    expect((cell.toJSON() as nbformat.ICodeCell).outputs).toEqual(answer('42'));
  });

  it("keeps the human's expanded sub-call expanded when a sync re-sends it", () => {
    const nb = start();
    const { mirror, frames } = mirrorOn(nb);
    mirror.insert(insert(code('c1', 'llm'), 'q'));
    frames.drain();
    expect(nb.cells[1].getMetadata('jupyter')).toEqual({
      source_hidden: true,
      outputs_hidden: true
    });
    nb.cells[1].deleteMetadata('jupyter'); // what JupyterLab does when both are expanded
    const resent = code('c1', 'llm');
    resent.metadata.jupyter = { source_hidden: true, outputs_hidden: true };
    mirror.sync({ run: RUN, anchor: 'q', cells: [resent], status: null, finished: null });
    frames.drain();
    expect(nb.cells[1].getMetadata('jupyter')).toBeUndefined();
    mirror.update({ type: 'update', run: RUN, id: 'c1', patch: { metadata: resent.metadata } });
    frames.drain();
    expect(nb.cells[1].getMetadata('jupyter')).toBeUndefined();
  });

  it('folds a cell away when its run is superseded, and only then', () => {
    const nb = start();
    const { mirror, frames } = mirrorOn(nb);
    mirror.insert(insert(code('s1', 'step'), 'q'));
    frames.drain();
    expect(nb.cells[1].getMetadata('jupyter')).toBeUndefined();
    const hidden = { source_hidden: true, outputs_hidden: true };
    const metadata = { rlm: { kind: 'step', run: RUN, superseded_by: 'r2' }, jupyter: hidden };
    mirror.update({ type: 'update', run: RUN, id: 's1', patch: { metadata } });
    frames.drain();
    expect(nb.cells[1].getMetadata('jupyter')).toEqual(hidden);
    nb.cells[1].deleteMetadata('jupyter'); // the human opens the earlier version
    mirror.update({ type: 'update', run: RUN, id: 's1', patch: { metadata } });
    frames.drain();
    expect(nb.cells[1].getMetadata('jupyter')).toBeUndefined();
  });

  it('leaves sub-calls expanded when the setting says so', () => {
    const nb = start();
    const { mirror, frames } = mirrorOn(nb, { collapse: false });
    const cell = code('c1', 'llm');
    cell.metadata.jupyter = { source_hidden: true, outputs_hidden: true };
    mirror.insert(insert(cell, 'q'));
    frames.drain();
    expect(nb.cells[1].getMetadata('jupyter')).toBeUndefined();
  });

  it('changes nothing when a sync re-sends cells it already holds (the file stays clean)', () => {
    const nb = start();
    const { mirror, frames } = mirrorOn(nb);
    const cells = [code('s1', 'step'), code('c1', 'llm'), code('c2', 'llm')];
    cells[1].outputs = answer('7');
    let after = 'q';
    for (const c of cells) {
      mirror.insert(insert(c, after));
      after = c.id;
    }
    frames.drain();
    let changes = 0;
    nb.changed.connect(() => (changes += 1));
    nb.cells.forEach(c => c.changed.connect(() => (changes += 1)));
    mirror.sync({
      run: RUN,
      anchor: 'q',
      cells: structuredClone(cells),
      status: null,
      finished: null
    });
    frames.drain();
    expect(changes).toBe(0);
  });

  it('ignores a run whose anchor is not in this notebook', () => {
    const nb = start();
    const { mirror, frames } = mirrorOn(nb);
    mirror.insert(insert(code('x1', 'step'), null, 'another-notebooks-cell'));
    mirror.update({ type: 'update', run: RUN, id: 'x1', patch: { execution_count: 1 } });
    frames.drain();
    expect(ids(nb)).toEqual(['q', 'tail']);
    expect(mirror.has('x1')).toBe(false);
  });

  it('finds cells after the human inserted, deleted and moved cells above them', () => {
    const nb = start();
    const { mirror } = mirrorOn(nb);
    mirror.insert(insert(code('s1', 'step'), 'q'));
    nb.insertCells(0, [{ id: 'h1', cell_type: 'markdown', source: 'mine', metadata: {} }]);
    nb.insertCells(0, [{ id: 'h2', cell_type: 'markdown', source: 'mine too', metadata: {} }]);
    expect(mirror.indexOf('s1')).toBe(3);
    mirror.insert(insert(code('s2', 'step'), 's1'));
    expect(ids(nb)).toEqual(['h2', 'h1', 'q', 's1', 's2', 'tail']);
    nb.deleteCell(0);
    nb.moveCell(0, 3); // h1 below s2
    expect(ids(nb)).toEqual(['q', 's1', 's2', 'h1', 'tail']);
    mirror.insert(insert(code('s3', 'step'), 's2'));
    expect(ids(nb)).toEqual(['q', 's1', 's2', 's3', 'h1', 'tail']);
    expect(mirror.indexOf('h2')).toBe(-1);
    expect(mirror.indexOf('h1')).toBe(4);
    nb.deleteCell(nb.cells.findIndex(c => c.id === 's2'));
    expect(mirror.has('s2')).toBe(false);
    mirror.insert(insert(code('s2', 'step'), 's1'));
    expect(ids(nb)).toEqual(['q', 's1', 's2', 's3', 'h1', 'tail']);
  });

  it(`inserts a long chain in model edits of at most ${INSERT_CHUNK} cells, within the frame budget`, () => {
    const nb = start();
    let now = 0;
    const { mirror, frames } = mirrorOn(nb, { clock: () => now });
    const sizes: number[] = [];
    nb.changed.connect((_, change) => {
      for (const d of change.cellsChange ?? []) {
        if (d.insert) {
          sizes.push(d.insert.length);
          now += FRAME_BUDGET_MS / 2; // each edit costs half a frame's budget
        }
      }
    });
    let after = 'q';
    for (let i = 0; i < 600; i++) {
      mirror.insert(insert(code(`c${i}`, 'llm'), after));
      after = `c${i}`;
    }
    frames.run();
    expect(sizes).toEqual([INSERT_CHUNK, INSERT_CHUNK]); // two edits, then the budget is spent
    frames.drain();
    expect(Math.max(...sizes)).toBeLessThanOrEqual(INSERT_CHUNK);
    expect(nb.cells.map(c => c.id)).toEqual([
      'q',
      ...Array.from({ length: 600 }, (_, i) => `c${i}`),
      'tail'
    ]);
  });

  it('paces burst flushes while a backlog lasts, and starts the next burst at once', () => {
    const nb = start();
    let now = 1000;
    const { mirror, frames } = mirrorOn(nb, { clock: () => now, pace: false });
    let after = 'q';
    const burst = (n: number) => {
      for (let i = 0; i < n; i++) {
        const id = `c${nb.cells.length + mirror.pending}`;
        mirror.insert(insert(code(id, 'llm'), after));
        after = id;
      }
    };
    burst(3 * INSERT_CHUNK);
    const applied: number[] = [];
    const frame = (ms: number) => {
      now += ms;
      frames.run();
      applied.push(nb.cells.length - 2);
    };
    // The budget allows one edit per flush here: each edit "takes" the whole budget.
    nb.changed.connect(() => (now += FRAME_BUDGET_MS));
    frame(16);
    frame(16);
    frame(PACE_MS);
    frame(16);
    frame(PACE_MS);
    expect(applied).toEqual([
      INSERT_CHUNK,
      INSERT_CHUNK,
      2 * INSERT_CHUNK,
      2 * INSERT_CHUNK,
      3 * INSERT_CHUNK
    ]);
    burst(1);
    frame(16);
    expect(nb.cells.length - 2).toBe(3 * INSERT_CHUNK + 1);
  });

  it('yields the rest of a frame when a key press waits', () => {
    const nb = start();
    let pending = false;
    const { mirror, frames } = mirrorOn(nb, { inputPending: () => pending, clock: () => 0 });
    const n = 20;
    for (let i = 0; i < n; i++) {
      // Each cell after a cell of another run: no chain, one edit per cell.
      mirror.insert(insert(code(`c${i}`, 'llm'), i % 2 ? 'q' : 'tail'));
    }
    pending = true;
    frames.run();
    expect(nb.cells.length).toBe(3); // one cell, then the key goes first
    pending = false;
    frames.run();
    expect(nb.cells.length).toBe(2 + n);
  });

  it('makes one transaction per inserted chain and per group of edits', () => {
    // JupyterLab gives each cell an undo manager that sees every transaction of the notebook, so
    // a transaction costs O(cells): creating a cell alone is five of them.
    const nb = notebook(
      [
        { id: 'q', cell_type: 'code', source: '', metadata: {}, outputs: [], execution_count: null }
      ],
      true
    );
    const { mirror, frames } = mirrorOn(nb, { clock: () => 0 });
    let transactions = 0;
    nb.ydoc.on('afterTransaction', () => (transactions += 1));
    let after = 'q';
    for (let i = 0; i < INSERT_CHUNK; i++) {
      mirror.insert(insert(code(`c${i}`, 'llm'), after));
      after = `c${i}`;
    }
    frames.drain();
    expect(nb.cells.length).toBe(1 + INSERT_CHUNK);
    expect(transactions).toBe(1);
    for (let i = 0; i < 20; i++) {
      mirror.update({
        type: 'update',
        run: RUN,
        id: `c${i}`,
        patch: { outputs: answer(String(i)) }
      });
    }
    frames.drain();
    expect(transactions).toBe(2);
  });

  it('stays linear: 5,000 sub-calls inserted and answered', () => {
    const run = (n: number) => {
      const nb = start();
      const { mirror, frames } = mirrorOn(nb);
      const t0 = performance.now();
      let after = 'q';
      for (let i = 0; i < n; i++) {
        mirror.insert(insert(code(`c${i}`, 'llm', { call: { status: 'inflight' } }), after));
        after = `c${i}`;
        if (i % 100 === 99) {
          frames.drain();
        }
      }
      frames.drain();
      for (let i = 0; i < n; i++) {
        mirror.update({
          type: 'update',
          run: RUN,
          id: `c${i}`,
          patch: {
            outputs: answer(String(i)),
            metadata: { rlm: { kind: 'llm', run: RUN, call: { status: 'ok' } } }
          }
        });
        if (i % 100 === 99) {
          frames.drain();
        }
      }
      frames.drain();
      expect(nb.cells.length).toBe(n + 2);
      expect(mirror.indexOf(`c${n - 1}`)).toBe(n);
      return performance.now() - t0;
    };
    run(200); // warm up
    const small = run(500);
    const big = run(5000);
    console.info(
      `mirror: 500 sub-calls ${small.toFixed(0)} ms, 5,000 sub-calls ${big.toFixed(0)} ms ` +
        `(${(big / 5000).toFixed(3)} ms per sub-call, ratio ${(big / small).toFixed(1)} for 10x the calls)`
    );
    expect(big).toBeLessThan(30_000); // liveness only; the ratio is printed
  }, 120_000);
});
