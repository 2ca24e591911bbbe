/**
 * CSS classes and data attributes on cell widgets from their `metadata.rlm`: kind, stale, a
 * final cell's outcome, sub-call batch groups and the one-line summary a collapsed sub-call
 * shows. The view only: the saved file is never touched here.
 *
 * Work is per cell: a frame that applied k cells decorates those k cells and their batch
 * headers, never the whole notebook (a full pass runs once when a notebook opens and when a
 * setting changes).
 */
import type { Cell, ICodeCellModel } from '@jupyterlab/cells';
import type * as nbformat from '@jupyterlab/nbformat';
import type { IRlmMeta } from './protocol';
import type { IRlmSettings } from './settings';
import { cssString, subcallSummary } from './summary';

const KINDS = ['query', 'thought', 'step', 'llm', 'final', 'compaction'];

export function rlmMeta(cell: Cell): IRlmMeta {
  const m = cell.model.getMetadata('rlm');
  return m && typeof m === 'object' && !Array.isArray(m) ? (m as IRlmMeta) : {};
}

function batchOf(meta: IRlmMeta): string | null {
  return meta.batch_id !== undefined && meta.batch_id !== null ? String(meta.batch_id) : null;
}

/** Where the decorator finds cell widgets: the notebook's list and an O(1) id lookup. */
export interface ICellSource {
  widgets: () => readonly Cell[];
  indexOf: (id: string) => number;
}

/** Which cells are query cells of known runs, and which of those runs are live. */
export interface IAnchors {
  query: ReadonlySet<string>;
  running: ReadonlySet<string>;
}

export class CellDecorator {
  constructor(cells: ICellSource, settings: () => IRlmSettings) {
    this._cells = cells;
    this._settings = settings;
  }

  /** Decorate every cell (a notebook opened, a setting changed). */
  all(anchors: IAnchors): void {
    this._batchCells.clear();
    this._batchFirst.clear();
    this._batchGroup.clear();
    this._groups = 0;
    const widgets = this._cells.widgets();
    widgets.forEach((w, i) => this._decorate(w, i, widgets, anchors));
    this._refreshHeaders(new Set(this._batchFirst.keys()), widgets);
  }

  /** Decorate the cells with these ids (and the headers of the batches they joined). */
  some(ids: Iterable<string>, anchors: IAnchors): void {
    const widgets = this._cells.widgets();
    const batches = new Set<string>();
    for (const id of ids) {
      const i = this._cells.indexOf(id);
      const w = widgets[i];
      if (w && w.model.id === id) {
        const b = this._decorate(w, i, widgets, anchors);
        if (b !== null) {
          batches.add(b);
        }
      }
    }
    this._refreshHeaders(batches, widgets);
  }

  private _decorate(
    cell: Cell,
    index: number,
    widgets: readonly Cell[],
    anchors: IAnchors
  ): string | null {
    const settings = this._settings();
    const id = cell.model.id;
    const meta = rlmMeta(cell);
    const node = cell.node;
    const kind = meta.kind ?? (anchors.query.has(id) ? 'query' : null);
    node.classList.toggle('rlm-cell', kind !== null);
    for (const k of KINDS) {
      node.classList.toggle(`rlm-kind-${k}`, k === kind);
    }
    node.classList.toggle('rlm-stale', meta.status === 'stale' || meta.stale === true);
    node.classList.toggle('rlm-running', anchors.running.has(id));
    setData(node, 'rlmOutcome', kind === 'final' && meta.status ? meta.status : null);
    setData(node, 'rlmCall', kind === 'llm' ? (meta.call?.status ?? null) : null);
    this._summarize(cell, meta, settings.showSummaries);

    const batch = settings.groupBatches ? batchOf(meta) : null;
    const prev = index > 0 ? widgets[index - 1] : null;
    const first = batch !== null && (prev === null || batchOf(rlmMeta(prev)) !== batch);
    node.classList.toggle('rlm-batch', batch !== null);
    if (batch === null) {
      node.classList.remove('rlm-batch-first', 'rlm-batch-odd');
      setData(node, 'rlmBatch', null);
      setData(node, 'rlmBatchLabel', null);
      return null;
    }
    let members = this._batchCells.get(batch);
    if (!members) {
      this._batchCells.set(batch, (members = new Set()));
      this._batchGroup.set(batch, this._groups++);
    }
    members.add(id);
    if (first) {
      this._batchFirst.set(batch, id);
    }
    node.classList.toggle('rlm-batch-first', first);
    if (!first) {
      setData(node, 'rlmBatchLabel', null);
    }
    // Alternate two tints so adjacent batches read as separate groups.
    node.classList.toggle('rlm-batch-odd', this._batchGroup.get(batch)! % 2 === 1);
    setData(node, 'rlmBatch', batch);
    return batch;
  }

  /** The header (first cell) of each batch shows its size, which grows as the batch arrives. */
  private _refreshHeaders(batches: Set<string>, widgets: readonly Cell[]): void {
    for (const batch of batches) {
      const id = this._batchFirst.get(batch);
      const w = id !== undefined ? widgets[this._cells.indexOf(id)] : undefined;
      if (!w || w.model.id !== id) {
        continue;
      }
      const n = this._batchCells.get(batch)?.size ?? 1;
      setData(w.node, 'rlmBatchLabel', `batch ${batch} · ${n} sub-call${n === 1 ? '' : 's'}`);
    }
  }

  /** A sub-call's one line, shown by CSS in place of its collapsed input's first line. */
  private _summarize(cell: Cell, meta: IRlmMeta, show: boolean): void {
    const node = cell.node;
    let text: string | null = null;
    if (show && meta.kind === 'llm') {
      const outputs =
        cell.model.type === 'code'
          ? ((cell.model as ICodeCellModel).sharedModel.getOutputs() as nbformat.IOutput[])
          : [];
      text = subcallSummary(meta, outputs);
    }
    if ((node.dataset.rlmSummary ?? null) === text) {
      return;
    }
    node.classList.toggle('rlm-summarized', text !== null);
    setData(node, 'rlmSummary', text);
    if (text !== null) {
      node.style.setProperty('--rlm-summary', cssString(text));
    } else {
      node.style.removeProperty('--rlm-summary');
    }
  }

  private _cells: ICellSource;
  private _settings: () => IRlmSettings;
  private _batchCells = new Map<string, Set<string>>();
  private _batchFirst = new Map<string, string>();
  private _batchGroup = new Map<string, number>();
  private _groups = 0;
}

function setData(node: HTMLElement, key: string, value: string | null): void {
  if (value === null) {
    if (key in node.dataset) {
      delete node.dataset[key];
    }
  } else if (node.dataset[key] !== value) {
    node.dataset[key] = value;
  }
}
