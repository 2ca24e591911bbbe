/**
 * CSS classes on cell widgets from their `metadata.rlm`: kind, stale, sub-call batch groups.
 * Classes only: the saved file is never touched here.
 */
import type { Cell } from '@jupyterlab/cells';
import type { NotebookPanel } from '@jupyterlab/notebook';

const KINDS = ['query', 'thought', 'step', 'llm', 'final'];

interface IRlmMeta {
  kind?: string;
  status?: string;
  stale?: boolean;
  batch_id?: string | number;
}

function rlmMeta(cell: Cell): IRlmMeta {
  const m = cell.model.getMetadata('rlm');
  return m && typeof m === 'object' && !Array.isArray(m) ? (m as IRlmMeta) : {};
}

/** Count every batch's cells once: headers show the size of the whole group. */
function batchSizes(cells: readonly Cell[]): Map<string, number> {
  const sizes = new Map<string, number>();
  for (const cell of cells) {
    const b = rlmMeta(cell).batch_id;
    if (b !== undefined && b !== null) {
      sizes.set(String(b), (sizes.get(String(b)) ?? 0) + 1);
    }
  }
  return sizes;
}

/**
 * Decorate the cells whose ids are in `ids` (all cells when `ids` is null). `queryIds` are
 * anchors of known runs (query cells get the class even before the kernel tags them).
 */
export function decorate(
  panel: NotebookPanel,
  ids: ReadonlySet<string> | null,
  queryIds: ReadonlySet<string>,
  runningIds: ReadonlySet<string>
): void {
  const cells = panel.content.widgets;
  let sizes: Map<string, number> | null = null;
  let prevBatch: string | null = null;
  let group = 0;
  for (const cell of cells) {
    const id = cell.model.id;
    const meta = rlmMeta(cell);
    const batch = meta.batch_id !== undefined && meta.batch_id !== null ? String(meta.batch_id) : null;
    const first = batch !== null && batch !== prevBatch;
    if (first) {
      group += 1;
    }
    prevBatch = batch;
    // Batch headers are refreshed every time: their counts grow as the batch arrives.
    if (ids && !ids.has(id) && !first) {
      continue;
    }
    const kind = meta.kind ?? (queryIds.has(id) ? 'query' : null);
    const node = cell.node;
    node.classList.toggle('rlm-cell', kind !== null);
    for (const k of KINDS) {
      node.classList.toggle(`rlm-kind-${k}`, k === kind);
    }
    node.classList.toggle('rlm-stale', meta.status === 'stale' || meta.stale === true);
    node.classList.toggle('rlm-running', runningIds.has(id));
    node.classList.toggle('rlm-batch', batch !== null);
    node.classList.toggle('rlm-batch-first', first);
    // Alternate two tints so adjacent batches read as separate groups.
    node.classList.toggle('rlm-batch-odd', batch !== null && group % 2 === 1);
    if (batch !== null) {
      node.dataset.rlmBatch = batch;
    } else {
      delete node.dataset.rlmBatch;
    }
    if (first) {
      sizes = sizes ?? batchSizes(cells);
      const n = sizes.get(batch!) ?? 1;
      node.dataset.rlmBatchLabel = `batch ${batch} · ${n} sub-call${n === 1 ? '' : 's'}`;
    } else {
      delete node.dataset.rlmBatchLabel;
    }
  }
}
