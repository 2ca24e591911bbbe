/**
 * Applies `insert` / `update` / `sync` to one notebook panel's model.
 *
 * Sub-call messages and `sync` catch-ups are queued and applied once per animation frame within a
 * time budget, so a burst (500 sub-calls) becomes a few batched model edits instead of 500
 * layouts. A run's other messages (step cells, a step's end, the final answer) are sparse and are
 * applied as they arrive (with anything queued before them, in order). Cells are found by
 * id, never by index: one kernel can back several panels, and a message whose anchor is not in
 * this panel is ignored.
 */
import type * as nbformat from '@jupyterlab/nbformat';
import type { ICodeCellModel } from '@jupyterlab/cells';
import type { NotebookPanel } from '@jupyterlab/notebook';
import type { ICellPatch, ISyncRun, IUpdateMsg, IInsertMsg, WireCell } from './protocol';

/** Insert-or-update: `insert` and every cell of a `sync` become one of these. */
interface IUpsert {
  op: 'upsert';
  run: string;
  cell: WireCell;
  kind: string;
  after: string | null;
  anchor: string | null;
  /** false: may wait for an animation frame (catch-up); otherwise decided by kind. */
  urgent?: boolean;
}

interface IPatch {
  op: 'patch';
  id: string;
  patch: ICellPatch;
}

type Op = IUpsert | IPatch;

/** Max time per frame spent editing the model; the rest of the frame is left for paint. */
const FRAME_BUDGET_MS = 30;



export class CellMirror {
  /** Called after each frame with the ids of cells inserted or changed in it. */
  onApplied: (ids: Set<string>) => void = () => undefined;

  constructor(panel: NotebookPanel) {
    this._panel = panel;
  }

  insert(msg: IInsertMsg): void {
    const cell = { ...msg.cell, id: msg.cell.id ?? msg.id } as WireCell;
    this._push({ op: 'upsert', run: msg.run, cell, kind: msg.kind, after: msg.after, anchor: msg.anchor });
  }

  update(msg: IUpdateMsg): void {
    // A patch to a cell still waiting in the queue is folded into it: fewer model edits.
    const pending = this._pendingUpserts.get(msg.id);
    if (pending) {
      Object.assign(pending.cell, patchToCell(msg.patch));
      return;
    }
    const prior = this._pendingPatches.get(msg.id);
    if (prior) {
      Object.assign(prior.patch, msg.patch);
      return;
    }
    const op: IPatch = { op: 'patch', id: msg.id, patch: { ...msg.patch } };
    this._pendingPatches.set(msg.id, op);
    this._push(op);
  }

  /** Idempotent catch-up: every cell is upserted after its predecessor in the run. */
  sync(run: ISyncRun): void {
    let after = run.anchor;
    for (const cell of run.cells) {
      const kind = (cell.metadata?.rlm as { kind?: string } | undefined)?.kind ?? '';
      this._push({ op: 'upsert', run: run.run, cell: { ...cell }, kind, after, anchor: run.anchor, urgent: false });
      after = cell.id;
    }
  }

  dispose(): void {
    if (this._frame) {
      cancelAnimationFrame(this._frame);
    }
    this._queue = [];
  }

  private _push(op: Op): void {
    if (op.op === 'upsert') {
      this._pendingUpserts.set(op.cell.id, op);
      if (op.kind === 'llm') {
        this._subcalls.add(op.cell.id);
      }
    }
    this._queue.push(op);
    // Sub-calls come in bursts (a batch of 500): they are applied once per animation frame, in
    // batches. Everything else (a step's cells, its end, the final answer) is sparse and is
    // applied at once, with whatever is queued before it, so a cell is current before anything
    // that follows its message (e.g. the query cell's execution ending).
    const burst = op.op === 'upsert' ? op.kind === 'llm' || op.urgent === false : this._subcalls.has(op.id);
    if (!burst) {
      if (this._frame) {
        cancelAnimationFrame(this._frame);
        this._frame = 0;
      }
      try {
        this._flush(Infinity);
      } catch (err) {
        console.warn('rlm.cells: applying a message failed', err);
      }
      return;
    }
    if (!this._frame) {
      this._frame = requestAnimationFrame(() => this._flush());
    }
  }

  private _flush(budget = FRAME_BUDGET_MS): void {
    this._frame = 0;
    const model = this._panel.model;
    if (!model) {
      return;
    }
    const start = performance.now();
    const shared = model.sharedModel;
    const ids = shared.cells.map(c => c.getId());
    const touched = new Set<string>();
    while (this._queue.length && performance.now() - start < budget) {
      const op = this._queue.shift()!;
      if (op.op === 'patch') {
        this._pendingPatches.delete(op.id);
        const index = ids.indexOf(op.id);
        if (index >= 0) {
          this._applyPatch(index, op.patch);
          touched.add(op.id);
        }
        continue;
      }
      this._pendingUpserts.delete(op.cell.id);
      const existing = ids.indexOf(op.cell.id);
      if (existing >= 0) {
        this._applyPatch(existing, cellToPatch(op.cell));
        touched.add(op.cell.id);
        continue;
      }
      let at = op.after ? ids.indexOf(op.after) : -1;
      if (at < 0 && op.anchor) {
        at = ids.indexOf(op.anchor);
      }
      if (at < 0) {
        continue; // not this panel's run (or its anchor was deleted)
      }
      // Gather the chain of following inserts (each after the previous) into one model edit.
      const batch = [prepare(op)];
      while (this._queue.length) {
        const next = this._queue[0];
        if (
          next.op !== 'upsert' ||
          next.after !== batch[batch.length - 1].id ||
          ids.includes(next.cell.id)
        ) {
          break;
        }
        this._queue.shift();
        this._pendingUpserts.delete(next.cell.id);
        batch.push(prepare(next));
      }
      shared.insertCells(at + 1, batch);
      ids.splice(at + 1, 0, ...batch.map(c => c.id));
      batch.forEach(c => touched.add(c.id));
    }
    if (this._queue.length) {
      this._frame = requestAnimationFrame(() => this._flush());
    }
    if (touched.size) {
      this.onApplied(touched);
    }
  }

  private _applyPatch(index: number, patch: ICellPatch): void {
    const cellModel = this._panel.model!.cells.get(index);
    const shared = cellModel.sharedModel;
    shared.transact(() => {
      if (patch.source !== undefined) {
        shared.setSource(joinSource(patch.source));
      }
      if (patch.metadata !== undefined) {
        // The view's collapse state belongs to the human once the cell exists.
        const md: nbformat.ICellMetadata = { ...patch.metadata };
        for (const key of ['jupyter', 'collapsed'] as const) {
          const mine = shared.getMetadata(key);
          if (!(key in md) && mine !== undefined) {
            (md as Record<string, unknown>)[key] = mine;
          }
        }
        shared.setMetadata(md);
      }
    });
    if (cellModel.type === 'code') {
      const code = cellModel as ICodeCellModel;
      if (patch.outputs !== undefined) {
        code.outputs.fromJSON(patch.outputs);
      }
      if (patch.execution_count !== undefined) {
        code.executionCount = patch.execution_count;
      }
    }
  }

  private _panel: NotebookPanel;
  private _queue: Op[] = [];
  private _frame = 0;
  private _subcalls = new Set<string>();
  private _pendingUpserts = new Map<string, IUpsert>();
  private _pendingPatches = new Map<string, IPatch>();
}

function joinSource(source: nbformat.MultilineString): string {
  return Array.isArray(source) ? source.join('') : source;
}

function patchToCell(patch: ICellPatch): Partial<WireCell> {
  return { ...patch } as Partial<WireCell>;
}

function cellToPatch(cell: WireCell): ICellPatch {
  const patch: ICellPatch = {
    source: cell.source,
    metadata: cell.metadata as nbformat.ICellMetadata
  };
  if (cell.cell_type === 'code') {
    patch.outputs = (cell as nbformat.ICodeCell).outputs;
    patch.execution_count = (cell as nbformat.ICodeCell).execution_count;
  }
  return patch;
}

/** Sub-calls arrive collapsed (input and output) unless the kernel chose otherwise. */
function prepare(op: IUpsert): WireCell {
  const cell = { ...op.cell, metadata: { ...(op.cell.metadata ?? {}) } } as WireCell;
  const kind = (cell.metadata.rlm as { kind?: string } | undefined)?.kind ?? op.kind;
  if (kind === 'llm' && cell.metadata.jupyter === undefined) {
    cell.metadata.jupyter = { source_hidden: true, outputs_hidden: true };
    if (cell.cell_type === 'code' && cell.metadata.collapsed === undefined) {
      cell.metadata.collapsed = true; // JupyterLab's own key for hidden outputs
    }
  }
  return cell;
}
