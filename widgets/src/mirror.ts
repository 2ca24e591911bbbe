/**
 * Applies `insert` / `update` / `sync` to one notebook's shared model (the Yjs document that
 * JupyterLab's notebook model and views follow), with O(1) work per operation.
 *
 * Why this shape: a run can add 5,000 sub-call cells and patch each of them again, so nothing per
 * message may scan the notebook. Cells are found through an id -> cell index that is built once
 * and kept current from the notebook's own change events (so cells the human adds, deletes or
 * moves are seen too); a cell's position is needed only to insert after it, and comes from a
 * remembered position checked in O(1) (searched outward from there when something above moved).
 *
 * Sub-call messages and `sync` catch-ups are queued and applied on animation frames: within a time
 * budget, at most every PACE_MS while a backlog lasts (JupyterLab's own work per edit of the cell
 * list grows with the notebook, so few large edits beat many small ones), each chain of inserts
 * and each group of edits in one transaction, stopping early when a key press waits; the page
 * keeps answering keys while thousands of cells arrive. A run's other messages (step cells, a
 * step's end, the final answer) are sparse and are applied as they arrive, with what is queued
 * before them (in order, within a larger budget). Cells are found by id, never by index: one
 * kernel can back several panels, and a message whose anchor is not in this notebook is ignored.
 */
import type * as nbformat from '@jupyterlab/nbformat';
import type { ISharedCell, ISharedCodeCell, ISharedNotebook, NotebookChange } from '@jupyter/ydoc';
import { JSONExt } from '@lumino/coreutils';
import type { PartialJSONValue } from '@lumino/coreutils';
import type {
  ICellPatch,
  IInsertMsg,
  IRlmMeta,
  ISyncRun,
  IUpdateMsg,
  InsertKind,
  WireCell
} from './protocol';

/** Insert-or-update: `insert` and every cell of a `sync` become one of these. */
interface IUpsert {
  op: 'upsert';
  cell: WireCell;
  kind: InsertKind | '';
  after: string | null;
  anchor: string | null;
  /** A catch-up cell (from `sync`): may wait for an animation frame whatever its kind. */
  catchUp: boolean;
}

interface IPatch {
  op: 'patch';
  id: string;
  patch: ICellPatch;
}

type Op = IUpsert | IPatch;

export interface IMirrorOptions {
  /** The notebook's shared model (null until the document exists). */
  notebook: () => ISharedNotebook | null;
  /** Collapse sub-call cells as they arrive (when the kernel did not say otherwise). */
  collapseSubcalls?: () => boolean;
  /** Frame scheduling (tests pass their own); defaults to requestAnimationFrame. */
  schedule?: (fn: () => void) => number;
  cancel?: (handle: number) => void;
  now?: () => number;
  /** True when a key or click waits: the frame's work stops early (Chromium tells). */
  inputPending?: () => boolean;
}

/** Max time per flush spent editing the model; the rest is left for the page. */
export const FRAME_BUDGET_MS = 30;
/** Max time for the work a sparse (urgent) message triggers before the rest waits a frame. */
export const URGENT_BUDGET_MS = 150;
/**
 * Cells per `insertCells` call, and edits per transaction: the time budget is checked between
 * these (JupyterLab builds each new cell's widget, and reacts to a transaction's edits, inside
 * the call), so they bound how far a flush can overrun its budget.
 */
export const INSERT_CHUNK = 100;
export const EDITS_PER_TRANSACTION = 100;
/**
 * While a backlog lasts, burst flushes start at most this often. JupyterLab answers each change
 * of the notebook's cell list with work over every cell (JupyterLab 4.6 in its default
 * contentVisibility mode: a size estimate and a style write per cell, the LSP document rebuilt,
 * placeholder cells rendered for 50 ms), so few large edits cost far less than many small ones.
 * Measured with 5,000 sub-calls (tests/e2e/test_browser_rlm.py): pacing at 200 ms with chains of
 * 100 cells took a third of the page's CPU time of applying 25 cells every frame, and keys were
 * answered sooner.
 */
export const PACE_MS = 200;

export class CellMirror {
  /** Called after each application with the ids of cells inserted or changed in it. */
  onApplied: (ids: Set<string>) => void = () => undefined;

  constructor(options: IMirrorOptions) {
    this._notebook = options.notebook;
    this._collapse = options.collapseSubcalls ?? (() => true);
    this._schedule = options.schedule ?? (fn => requestAnimationFrame(fn));
    this._cancel = options.cancel ?? (h => cancelAnimationFrame(h));
    this._now = options.now ?? (() => performance.now());
    this._inputPending = options.inputPending ?? inputPendingOf(globalThis.navigator);
  }

  /** Ops waiting for a frame (for tests and diagnostics). */
  get pending(): number {
    return this._queue.length - this._head;
  }

  insert(msg: IInsertMsg): void {
    const cell = msg.cell.id ? msg.cell : ({ ...msg.cell, id: msg.id } as WireCell);
    this._push({
      op: 'upsert',
      cell,
      kind: msg.kind,
      after: msg.after,
      anchor: msg.anchor,
      catchUp: false
    });
  }

  update(msg: IUpdateMsg): void {
    // A patch to a cell still waiting in the queue is folded into it: fewer model edits.
    const pending = this._pendingUpserts.get(msg.id);
    if (pending) {
      pending.cell = foldIntoCell(pending.cell, msg.patch);
      return;
    }
    const prior = this._pendingPatches.get(msg.id);
    if (prior) {
      prior.patch = foldPatch(prior.patch, msg.patch);
      return;
    }
    const op: IPatch = { op: 'patch', id: msg.id, patch: msg.patch };
    this._pendingPatches.set(msg.id, op);
    this._push(op);
  }

  /** Idempotent catch-up: every cell is upserted after its predecessor in the run. */
  sync(run: ISyncRun): void {
    let after = run.anchor;
    for (const cell of run.cells) {
      const kind = (cell.metadata?.rlm as IRlmMeta | undefined)?.kind ?? '';
      this._push({ op: 'upsert', cell, kind, after, anchor: run.anchor, catchUp: true });
      after = cell.id;
    }
  }

  /** Is a cell with this id in the notebook (or queued to be)? O(1). */
  has(id: string): boolean {
    return this._pendingUpserts.has(id) || this._cell(id) !== null;
  }

  /** The cell's position in the notebook, or -1. O(1) unless cells above it moved. */
  indexOf(id: string): number {
    const cell = this._cell(id);
    return cell ? this._position(cell) : -1;
  }

  /** Apply everything queued now (tests; and before a sparse message). */
  flush(): void {
    this._cancelFrame();
    this._flush(Infinity);
  }

  dispose(): void {
    this._cancelFrame();
    this._queue = [];
    this._head = 0;
    if (this._nb) {
      this._nb.changed.disconnect(this._onNotebookChanged, this);
      this._nb = null;
    }
  }

  private _push(op: Op): void {
    if (op.op === 'upsert') {
      this._pendingUpserts.set(op.cell.id, op);
      if (op.kind === 'llm') {
        this._subcalls.add(op.cell.id);
      }
    }
    this._queue.push(op);
    // Sub-calls come in bursts (a batch of 5,000): they are applied once per animation frame.
    // Everything else (a step's cells, its end, the final answer) is sparse and is applied at
    // once, with whatever is queued before it, so a cell is current before what follows its
    // message (e.g. the query cell's execution ending).
    const burst = op.op === 'upsert' ? op.kind === 'llm' || op.catchUp : this._subcalls.has(op.id);
    if (burst) {
      if (!this._frame) {
        this._frame = this._schedule(this._onFrame);
      }
      return;
    }
    this._cancelFrame();
    this._flush(URGENT_BUDGET_MS);
  }

  private _onFrame = (): void => {
    this._frame = 0;
    const now = this._now();
    if (this._lastFlush !== null && now - this._lastFlush < PACE_MS) {
      this._frame = this._schedule(this._onFrame); // not yet: see PACE_MS
      return;
    }
    this._lastFlush = now;
    this._flush(FRAME_BUDGET_MS);
    if (!this.pending) {
      this._lastFlush = null; // the next burst starts at once
    }
  };

  private _cancelFrame(): void {
    if (this._frame) {
      this._cancel(this._frame);
      this._frame = 0;
    }
  }

  private _flush(budget: number): void {
    const nb = this._attach();
    if (!nb) {
      return;
    }
    const start = this._now();
    const touched = new Set<string>();
    const first = this._head;
    try {
      // At least one op per frame, so a human typing without pause cannot starve the run.
      const inBudget = () =>
        this._head < this._queue.length &&
        (this._head === first ||
          (this._now() - start < budget && !(budget !== Infinity && this._inputPending())));
      while (inBudget()) {
        const next = this._queue[this._head];
        if (next.op === 'patch' && this._cell(next.id) === null) {
          this._head++; // a cell not in this notebook (another notebook's run): nothing to do
          this._pendingPatches.delete(next.id);
          continue;
        }
        if (this._inPlace(next)) {
          // Edits of existing cells (a sub-call's answer, a step's end) go in one transaction:
          // one change event for the notebook instead of one per cell, and one pass of the
          // per-cell undo managers. Kernel edits are not the human's to undo.
          nb.transact(() => {
            const end = this._head + EDITS_PER_TRANSACTION;
            while (this._head < end && inBudget() && this._inPlace(this._queue[this._head])) {
              this._applyInPlace(this._queue[this._head++], touched);
            }
          }, false);
          continue;
        }
        const op = this._queue[this._head++] as IUpsert;
        this._settled(op);
        let at = op.after ? this.indexOf(op.after) : -1;
        if (at < 0 && op.anchor) {
          at = this.indexOf(op.anchor);
        }
        if (at < 0) {
          continue; // not this notebook's run (or its anchor was deleted)
        }
        // Gather the chain of following inserts (each after the previous) into one model edit.
        const chain = [this._prepare(op)];
        while (this._head < this._queue.length && chain.length < INSERT_CHUNK) {
          const next = this._queue[this._head];
          if (
            next.op !== 'upsert' ||
            next.after !== chain[chain.length - 1].id ||
            this._cell(next.cell.id) !== null
          ) {
            break;
          }
          this._head++;
          this._settled(next);
          chain.push(this._prepare(next));
        }
        // One transaction: creating a cell is several edits, and each transaction costs O(cells)
        // (JupyterLab gives every cell an undo manager that sees every transaction).
        nb.transact(() => nb.insertCells(at + 1, chain), false);
        chain.forEach(c => touched.add(c.id));
      }
    } catch (err) {
      console.warn('rlm.cells: applying a message failed', err);
    }
    if (this._head >= this._queue.length) {
      this._queue = [];
      this._head = 0;
    } else if (!this._frame) {
      this._frame = this._schedule(this._onFrame);
    }
    if (touched.size) {
      this.onApplied(touched);
    }
  }

  /** Does this op edit a cell in place (or nothing), rather than insert one? */
  private _inPlace(op: Op): boolean {
    return op.op === 'patch' || this._cell(op.cell.id) !== null;
  }

  private _applyInPlace(op: Op, touched: Set<string>): void {
    if (op.op === 'patch') {
      this._pendingPatches.delete(op.id);
      const cell = this._cell(op.id);
      if (cell) {
        applyPatch(cell, op.patch);
        touched.add(op.id);
      }
      return;
    }
    this._settled(op);
    applyPatch(this._cell(op.cell.id)!, cellToPatch(op.cell));
    touched.add(op.cell.id);
  }

  /** An upsert leaves the queue: later patches to its cell go to the model. */
  private _settled(op: IUpsert): void {
    if (this._pendingUpserts.get(op.cell.id) === op) {
      this._pendingUpserts.delete(op.cell.id);
    }
  }

  /** The shared notebook, with the index built the first time (and after a model change). */
  private _attach(): ISharedNotebook | null {
    const nb = this._notebook();
    if (nb !== this._nb) {
      this._nb?.changed.disconnect(this._onNotebookChanged, this);
      this._nb = nb;
      this._byId.clear();
      this._pos.clear();
      if (nb) {
        nb.cells.forEach((c, i) => this._remember(c, i));
        nb.changed.connect(this._onNotebookChanged, this);
      }
    }
    return nb;
  }

  /** Keep the index complete: every inserted cell (ours or the human's) is recorded here. */
  private _onNotebookChanged(_: ISharedNotebook, change: NotebookChange): void {
    if (!change.cellsChange) {
      return;
    }
    let index = 0;
    for (const d of change.cellsChange) {
      if (d.insert) {
        d.insert.forEach((c, k) => this._remember(c, index + k));
        index += d.insert.length;
      } else if (d.retain) {
        index += d.retain;
      }
      // Deleted cells are disposed by the notebook; `_cell` drops them when it meets them.
    }
  }

  private _remember(cell: ISharedCell, index: number): void {
    const id = cell.id;
    this._byId.set(id, cell);
    this._pos.set(id, index);
  }

  private _cell(id: string): ISharedCell | null {
    if (!this._attach()) {
      return null;
    }
    const cell = this._byId.get(id);
    if (!cell) {
      return null;
    }
    if (cell.isDisposed) {
      this._byId.delete(id);
      this._pos.delete(id);
      return null;
    }
    return cell;
  }

  private _position(cell: ISharedCell): number {
    const cells = this._nb!.cells;
    const hint = Math.min(this._pos.get(cell.id) ?? 0, cells.length - 1);
    if (cells[hint] === cell) {
      return hint;
    }
    // Cells above it were added or removed since: search outward from where it was.
    for (let d = 1; hint - d >= 0 || hint + d < cells.length; d++) {
      if (cells[hint + d] === cell) {
        this._pos.set(cell.id, hint + d);
        return hint + d;
      }
      if (hint - d >= 0 && cells[hint - d] === cell) {
        this._pos.set(cell.id, hint - d);
        return hint - d;
      }
    }
    return -1;
  }

  /** The cell as inserted: sub-calls collapsed (input and output) unless the kernel chose. */
  private _prepare(op: IUpsert): WireCell {
    const meta = op.cell.metadata ?? {};
    const kind = (meta.rlm as IRlmMeta | undefined)?.kind ?? op.kind;
    if (kind !== 'llm') {
      return op.cell;
    }
    const collapse = this._collapse();
    if (collapse && meta.jupyter === undefined) {
      const md = {
        ...meta,
        jupyter: { source_hidden: true, outputs_hidden: true }
      } as nbformat.ICellMetadata;
      if (op.cell.cell_type === 'code' && md.collapsed === undefined) {
        md.collapsed = true; // JupyterLab's own key for hidden outputs
      }
      return { ...op.cell, metadata: md } as WireCell;
    }
    if (!collapse && (meta.jupyter !== undefined || meta.collapsed !== undefined)) {
      const md = { ...meta };
      delete md.jupyter;
      delete md.collapsed;
      return { ...op.cell, metadata: md } as WireCell;
    }
    return op.cell;
  }

  private _notebook: () => ISharedNotebook | null;
  private _collapse: () => boolean;
  private _schedule: (fn: () => void) => number;
  private _cancel: (handle: number) => void;
  private _now: () => number;
  private _inputPending: () => boolean;
  private _nb: ISharedNotebook | null = null;
  private _byId = new Map<string, ISharedCell>();
  private _pos = new Map<string, number>();
  private _queue: Op[] = [];
  private _head = 0;
  private _frame = 0;
  private _lastFlush: number | null = null;
  private _subcalls = new Set<string>();
  private _pendingUpserts = new Map<string, IUpsert>();
  private _pendingPatches = new Map<string, IPatch>();
}

/** `navigator.scheduling.isInputPending` where the browser has it; else never pending. */
function inputPendingOf(nav: unknown): () => boolean {
  const scheduling = (nav as { scheduling?: { isInputPending?: () => boolean } } | undefined)
    ?.scheduling;
  return scheduling?.isInputPending ? () => scheduling.isInputPending!() : () => false;
}

/**
 * View-state keys: set when a cell is inserted, the human's from then on (JupyterLab deletes
 * them when a cell is expanded, so "absent" must not mean "the kernel may set them again").
 */
const VIEW_KEYS = new Set(['jupyter', 'collapsed']);

/**
 * Does this patch make the cell an earlier version (its run superseded by a re-asked query)?
 * That one moment the kernel's view state applies: the cell folds away, readable on a click.
 * A sync re-sending a cell that is already superseded finds `superseded_by` there and leaves
 * the human's view alone.
 */
function supersedes(cell: ISharedCell, patch: ICellPatch): boolean {
  const next = patch.metadata?.rlm as IRlmMeta | undefined;
  const now = cell.getMetadata('rlm') as IRlmMeta | undefined;
  return !!next?.superseded_by && !now?.superseded_by;
}

/**
 * Apply a patch to a shared cell in one transaction, skipping fields that already hold the
 * value (a catch-up `sync` re-sends whole cells: unchanged ones must not mark the file dirty).
 * `metadata` keys are merged, view-state keys left alone unless the patch supersedes the cell.
 */
function applyPatch(cell: ISharedCell, patch: ICellPatch): void {
  const viewToo = supersedes(cell, patch);
  cell.transact(() => {
    if (patch.source !== undefined) {
      const source = joinSource(patch.source);
      if (cell.getSource() !== source) {
        cell.setSource(source);
      }
    }
    if (patch.metadata !== undefined) {
      for (const [key, value] of Object.entries(patch.metadata)) {
        if (value === undefined || (VIEW_KEYS.has(key) && !viewToo)) {
          continue;
        }
        const mine = cell.getMetadata(key);
        if (mine === undefined || !JSONExt.deepEqual(mine, value as PartialJSONValue)) {
          cell.setMetadata(key, value as PartialJSONValue);
        }
      }
    }
    if (cell.cell_type === 'code') {
      const code = cell as ISharedCodeCell;
      if (patch.outputs !== undefined) {
        const now = code.getOutputs();
        if (
          !JSONExt.deepEqual(
            now as unknown as PartialJSONValue,
            patch.outputs as unknown as PartialJSONValue
          )
        ) {
          code.setOutputs(patch.outputs);
        }
      }
      if (patch.execution_count !== undefined && code.execution_count !== patch.execution_count) {
        code.execution_count = patch.execution_count;
      }
    }
  });
}

function joinSource(source: nbformat.MultilineString): string {
  return Array.isArray(source) ? source.join('') : source;
}

/** Two patches to one cell as one (later fields win; metadata keys merged). */
function foldPatch(a: ICellPatch, b: ICellPatch): ICellPatch {
  const out: ICellPatch = { ...a, ...b };
  if (a.metadata && b.metadata) {
    out.metadata = { ...a.metadata, ...b.metadata };
  }
  return out;
}

/** A queued cell with a later patch applied to it (a new object: the message stays intact). */
function foldIntoCell(cell: WireCell, patch: ICellPatch): WireCell {
  const out = { ...cell } as Record<string, unknown>;
  for (const [key, value] of Object.entries(patch)) {
    if (value === undefined) {
      continue;
    }
    out[key] = key === 'metadata' ? { ...cell.metadata, ...(value as object) } : value;
  }
  return out as unknown as WireCell;
}

function cellToPatch(cell: WireCell): ICellPatch {
  const patch: ICellPatch = {
    source: cell.source,
    metadata: cell.metadata as { [key: string]: unknown }
  };
  if (cell.cell_type === 'code') {
    patch.outputs = (cell as nbformat.ICodeCell).outputs;
    patch.execution_count = (cell as nbformat.ICodeCell).execution_count;
  }
  return patch;
}
