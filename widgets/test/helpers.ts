/** Shared by the unit tests: a notebook, a mirror on it with a hand-driven frame clock. */
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { YNotebook } from '@jupyter/ydoc';
import type * as nbformat from '@jupyterlab/nbformat';
import { CellMirror, PACE_MS } from '../src/mirror';

export const TRANSCRIPT = resolve(__dirname, '../../tests/data/cells_transcript.json');

export interface ITranscript {
  initial_cells: nbformat.ICell[];
  messages: unknown[];
  expected: {
    cells: {
      id: string;
      cell_type: string;
      source: string;
      kind: string | null;
      outputs?: nbformat.IOutput[];
    }[];
    gaps?: number;
    duplicates?: number;
    runs?: Record<string, Record<string, unknown>>;
  };
}

export function readTranscript(): ITranscript {
  return JSON.parse(readFileSync(TRANSCRIPT, 'utf-8')) as ITranscript;
}

/** A shared notebook; `perCellUndo` as JupyterLab makes them (an undo manager per cell). */
export function notebook(cells: Partial<nbformat.ICell>[] = [], perCellUndo = false): YNotebook {
  return YNotebook.create({
    data: { cells: cells as nbformat.ICell[] },
    disableDocumentWideUndoRedo: perCellUndo
  });
}

/**
 * A mirror whose frames run only when the test says so (`frames.run()`). Each run moves the
 * mirror's clock on by PACE_MS (so paced flushes are due) unless `pace: false`.
 */
export function mirrorOn(
  nb: YNotebook,
  options: {
    clock?: () => number;
    collapse?: boolean;
    inputPending?: () => boolean;
    pace?: boolean;
  } = {}
) {
  const queued = new Map<number, () => void>();
  let next = 1;
  let offset = 0;
  const base = options.clock ?? (() => performance.now());
  const mirror = new CellMirror({
    notebook: () => nb,
    collapseSubcalls: () => options.collapse ?? true,
    schedule: fn => {
      queued.set(next, fn);
      return next++;
    },
    cancel: h => {
      queued.delete(h);
    },
    now: () => base() + offset,
    inputPending: options.inputPending ?? (() => false)
  });
  const frames = {
    get waiting(): number {
      return queued.size;
    },
    /** Run the frames scheduled so far; returns how many ran. */
    run(): number {
      if (options.pace !== false) {
        offset += PACE_MS;
      }
      const fns = [...queued.values()];
      queued.clear();
      fns.forEach(fn => fn());
      return fns.length;
    },
    /** Run frames until nothing is queued; returns how many ran. */
    drain(limit = 10_000): number {
      let n = 0;
      while (queued.size && n < limit) {
        n += frames.run();
      }
      return n;
    }
  };
  return { mirror, frames };
}

function text(value: unknown): unknown {
  return Array.isArray(value) ? value.join('') : value;
}

/** An output with multiline strings joined (the model may hold text either way). */
export function normalOutput(out: nbformat.IOutput): Record<string, unknown> {
  const o: Record<string, unknown> = { ...out };
  if ('text' in o) {
    o.text = text(o.text);
  }
  if (o.data && typeof o.data === 'object') {
    o.data = Object.fromEntries(Object.entries(o.data as object).map(([k, v]) => [k, text(v)]));
  }
  return o;
}

/** A notebook cell as the transcript's expected cells hold it. */
export function view(cell: nbformat.ICell): Record<string, unknown> {
  const rlm = (cell.metadata?.rlm ?? {}) as { kind?: string };
  const v: Record<string, unknown> = {
    id: cell.id,
    cell_type: cell.cell_type,
    source: text(cell.source),
    kind: rlm.kind ?? null
  };
  if (cell.cell_type === 'code') {
    v.outputs = ((cell as nbformat.ICodeCell).outputs ?? []).map(normalOutput);
  }
  return v;
}
