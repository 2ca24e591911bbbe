/**
 * "Fork here" and "Compare": branch an RLM run at a step cell, and set a branch beside its
 * parent. Both write an ordinary cell (`%rlm fork ...`, `%rlm compare ...`) after the run's
 * group and run it, so the kernel does the work and the notebook keeps what was done.
 *
 * A module of its own with two touch points: `index.ts` calls `activateForks`, and the run bar
 * gets `ForkButtons` (through the panel handle's `bar`).
 */
import type { JupyterFrontEnd } from '@jupyterlab/application';
import { InputDialog, Notification } from '@jupyterlab/apputils';
import type { ICommandPalette } from '@jupyterlab/apputils';
import type { Cell } from '@jupyterlab/cells';
import { NotebookActions } from '@jupyterlab/notebook';
import type { INotebookTracker, NotebookPanel } from '@jupyterlab/notebook';
import { Widget } from '@lumino/widgets';

export const FORK_COMMAND = 'rlm:fork-here';
export const COMPARE_COMMAND = 'rlm:compare';

interface IForkMeta {
  kind?: string;
  run?: string;
  step?: number | null;
  parent?: string | null;
  header?: { fork_of?: { run: string; at: number } | null; parent?: string | null } | null;
}

function metaOf(cell: Cell): IForkMeta {
  const m = cell.model.getMetadata('rlm');
  return m && typeof m === 'object' && !Array.isArray(m) ? (m as IForkMeta) : {};
}

/** The run and step a cell belongs to, when it is one of a root run's step cells. */
export function stepOf(cell: Cell | null | undefined): { run: string; step: number } | null {
  if (!cell) {
    return null;
  }
  const m = metaOf(cell);
  const kinds = ['step', 'thought', 'llm'];
  if (!m.run || !kinds.includes(m.kind ?? '') || typeof m.step !== 'number') {
    return null;
  }
  return { run: m.run, step: m.step };
}

/** Each run's parent links, read from the query cells' headers. */
function lineage(
  cells: readonly Cell[]
): Map<string, { forkOf: string | null; parent: string | null }> {
  const out = new Map<string, { forkOf: string | null; parent: string | null }>();
  for (const cell of cells) {
    const m = metaOf(cell);
    if (m.kind === 'query' && m.run && m.header) {
      out.set(m.run, { forkOf: m.header.fork_of?.run ?? null, parent: m.header.parent ?? null });
    }
  }
  return out;
}

/** The index of the last cell of `run`'s group: its cells, its rlm() sub-runs' and its branches'. */
export function groupEnd(cells: readonly Cell[], run: string): number {
  const links = lineage(cells);
  const group = new Set([run]);
  let grew = true;
  while (grew) {
    grew = false;
    for (const [id, l] of links) {
      if (
        !group.has(id) &&
        ((l.forkOf && group.has(l.forkOf)) || (l.parent && group.has(l.parent)))
      ) {
        group.add(id);
        grew = true;
      }
    }
  }
  let last = -1;
  cells.forEach((cell, i) => {
    if (group.has(metaOf(cell).run ?? '')) {
      last = i;
    }
  });
  return last;
}

/** The run `run` forked from, if it is a branch. */
function parentOf(cells: readonly Cell[], run: string): string | null {
  return lineage(cells).get(run)?.forkOf ?? null;
}

/** The newest branch of `run` in the notebook. */
function latestBranchOf(cells: readonly Cell[], run: string): string | null {
  let found: string | null = null;
  for (const [id, l] of lineage(cells)) {
    if (l.forkOf === run) {
      found = id;
    }
  }
  return found;
}

/** Insert `source` as a code cell after index `after` and run it. */
async function insertAndRun(panel: NotebookPanel, after: number, source: string): Promise<void> {
  const nb = panel.content;
  const model = panel.model;
  if (!model) {
    return;
  }
  const at = Math.max(0, Math.min(after + 1, model.sharedModel.cells.length));
  model.sharedModel.insertCell(at, { cell_type: 'code', source, metadata: {} });
  nb.activeCellIndex = at;
  const cell = nb.widgets[at];
  await NotebookActions.runCells(nb, [cell], panel.sessionContext);
}

/** Quote one word for the kernel's `shlex.split`. */
function quote(word: string): string {
  return /^[\w@%+=:,./-]+$/.test(word) ? word : `'${word.replace(/'/g, `'"'"'`)}'`;
}

export async function forkHere(panel: NotebookPanel, cell?: Cell | null): Promise<boolean> {
  const where = stepOf(cell ?? panel.content.activeCell);
  if (!where) {
    Notification.info(
      'Fork here: select a step cell of the run to fork (the branch keeps that ' +
        'run\u2019s steps up to it, re-run from the record, and goes on live from there).',
      { autoClose: 6000 }
    );
    return false;
  }
  const answer = await InputDialog.getText({
    title: `Fork run ${where.run} after step ${where.step}`,
    label:
      'What the branch changes (e.g. --model NAME, --sub-model NAME, --max-steps N, ' +
      '--query TEXT, --label NAME):',
    text: '--model '
  });
  if (!answer.button.accept) {
    return false;
  }
  const options = (answer.value ?? '').trim();
  const code = `%rlm fork --run ${quote(where.run)} --at ${where.step}${options ? ' ' + options : ''}`;
  await insertAndRun(panel, groupEnd(panel.content.widgets, where.run), code);
  return true;
}

export async function compareHere(panel: NotebookPanel, cell?: Cell | null): Promise<boolean> {
  const cells = panel.content.widgets;
  const active = cell ?? panel.content.activeCell;
  const run = active ? metaOf(active).run : undefined;
  let code = '%rlm compare';
  let after = cells.length - 1;
  if (run) {
    const parent = parentOf(cells, run);
    const branch = parent ? run : latestBranchOf(cells, run);
    const base = parent ?? run;
    if (!branch) {
      Notification.info(
        `Compare: run ${run} has no branch yet; use Fork here on one of its ` + 'steps first.',
        { autoClose: 6000 }
      );
      return false;
    }
    code = `%rlm compare ${quote(base)} ${quote(branch)}`;
    after = groupEnd(cells, base);
  }
  await insertAndRun(panel, after, code);
  return true;
}

/** "Fork…" and "Compare" in the run bar: the same commands, on the selected cell. */
export class ForkButtons extends Widget {
  constructor(app: JupyterFrontEnd) {
    super();
    this.addClass('rlm-controls'); // laid out as the run bar's other buttons
    this.addClass('rlm-fork-buttons');
    const buttons: { command: string; label: string; title: string }[] = [
      {
        command: FORK_COMMAND,
        label: 'Fork\u2026',
        title: 'Branch the run at the selected step cell'
      },
      {
        command: COMPARE_COMMAND,
        label: 'Compare',
        title: 'The selected run\u2019s branch beside its parent'
      }
    ];
    for (const b of buttons) {
      const button = document.createElement('button');
      button.className = `jp-Button rlm-control rlm-${b.command.replace('rlm:', '')}`;
      button.textContent = b.label;
      button.title = b.title;
      button.addEventListener('click', () => void app.commands.execute(b.command));
      this.node.appendChild(button);
    }
  }
}

/** Register the commands, the cell context menu items and the palette entries. */
export function activateForks(
  app: JupyterFrontEnd,
  tracker: INotebookTracker,
  palette: ICommandPalette | null,
  isRlm: (panel: NotebookPanel) => boolean
): void {
  const current = () => tracker.currentWidget;
  app.commands.addCommand(FORK_COMMAND, {
    label: 'RLM: Fork Here\u2026',
    caption:
      'Branch this run after the selected step: its steps up to it are re-run from the ' +
      'record (nothing paid), the rest live with what you change',
    isEnabled: () => !!current() && isRlm(current()!),
    execute: () => {
      const panel = current();
      return panel ? forkHere(panel) : false;
    }
  });
  app.commands.addCommand(COMPARE_COMMAND, {
    label: 'RLM: Compare Branch with Parent',
    caption: 'The selected run (or the latest branch) beside its parent, step by step',
    isEnabled: () => !!current() && isRlm(current()!),
    execute: () => {
      const panel = current();
      return panel ? compareHere(panel) : false;
    }
  });
  app.contextMenu.addItem({
    command: FORK_COMMAND,
    selector: '.jp-Notebook .jp-Cell.rlm-cell',
    rank: 20
  });
  app.contextMenu.addItem({
    command: COMPARE_COMMAND,
    selector: '.jp-Notebook .jp-Cell.rlm-cell',
    rank: 21
  });
  for (const command of [FORK_COMMAND, COMPARE_COMMAND]) {
    palette?.addItem({ command, category: 'RLM' });
  }
}
