/** Everything the extension attaches to one notebook panel, disposed with it. */
import type { ICodeCellModel } from '@jupyterlab/cells';
import type { NotebookPanel } from '@jupyterlab/notebook';
import { BoxLayout, Panel } from '@lumino/widgets';
import { PanelConnection } from './connection';
import { Controls } from './controls';
import { decorate } from './decorate';
import { CellMirror } from './mirror';
import { RunStore } from './runs';
import { StatusLine } from './status';

export interface IPanelHandle {
  connection: PanelConnection;
  runs: RunStore;
  /** The run bar, for the extension's other modules' buttons (forks.ts). */
  bar: Panel;
}

/** Each attached panel's handle, for the extension's commands. */
export const handles = new WeakMap<NotebookPanel, IPanelHandle>();

export function attachToPanel(panel: NotebookPanel): IPanelHandle {
  const runs = new RunStore();
  const mirror = new CellMirror(panel);
  const connection = new PanelConnection(panel, mirror, runs);

  const anchors = () => {
    const query = new Set<string>();
    const running = new Set<string>();
    for (const r of runs.all()) {
      if (r.anchor) {
        query.add(r.anchor);
        if (!r.finish) {
          running.add(r.anchor);
        }
      }
    }
    return { query, running };
  };
  mirror.onApplied = ids => {
    const a = anchors();
    a.query.forEach(id => ids.add(id));
    decorate(panel, ids, a.query, a.running);
    showBusy(ids);
  };
  let liveKey = '';
  runs.changed.connect((_, r) => {
    if (r.anchor) {
      const a = anchors();
      decorate(panel, new Set([r.anchor]), a.query, a.running);
    }
    const key = [...runs.all()].map(x => `${x.run}:${x.finish?.outcome ?? 'live'}`).join(',');
    if (key !== liveKey) {
      liveKey = key;
      showBusy(null);
    }
  });

  // The kernel runs a step's code (and its sub-calls) on its own: show those cells as [*]
  // while they run, as JupyterLab does for a cell it executes. Only cells marked here are
  // reset here, so a human's own re-run of a step cell is left alone.
  const busy = new Set<string>();
  const showBusy = (ids: ReadonlySet<string> | null) => {
    const live = new Set([...runs.all()].filter(r => !r.finish).map(r => r.run));
    for (const cell of panel.content.widgets) {
      const id = cell.model.id;
      if (cell.model.type !== 'code' || (ids && !ids.has(id) && !busy.has(id))) {
        continue;
      }
      const model = cell.model as ICodeCellModel;
      const meta = (model.getMetadata('rlm') ?? {}) as { kind?: string; run?: string; call?: { status?: string } };
      const running =
        !!meta.run &&
        live.has(meta.run) &&
        ((meta.kind === 'step' && model.executionCount === null) ||
          (meta.kind === 'llm' && meta.call?.status === 'inflight'));
      if (running && !busy.has(id)) {
        busy.add(id);
        model.executionState = 'running';
      } else if (!running && busy.has(id)) {
        busy.delete(id);
        if (model.executionState === 'running') {
          model.executionState = 'idle';
        }
      }
    }
  };
  // A saved trajectory opened later is styled too.
  void panel.context.ready.then(() => {
    const a = anchors();
    decorate(panel, null, a.query, a.running);
  });

  const bar = new Panel();
  bar.addClass('rlm-toolbar');
  const status = new StatusLine(runs);
  const controls = new Controls({
    runs,
    canRun: () => connection.isRlm,
    send: action => {
      if (action !== 'run') {
        connection.control(action);
      } else if (!connection.runQuery()) {
        status.note('Run: select a %%rlm cell (or a cell below one) first');
      }
    }
  });
  bar.addWidget(controls);
  bar.addWidget(status);
  // A row of its own under the notebook toolbar: the toolbar would fold a long status line
  // into its overflow menu. Shown on RLM kernels and once this panel sees a run, so plain
  // notebooks are unchanged.
  bar.hide();
  runs.changed.connect(() => bar.show());
  connection.rlmChanged.connect((_, isRlm) => {
    controls.refresh();
    if (isRlm) {
      bar.show();
    } else if (!runs.active) {
      bar.hide();
    }
  });
  const layout = panel.layout;
  if (layout instanceof BoxLayout) {
    layout.insertWidget(1, bar);
    BoxLayout.setStretch(bar, 0);
  } else {
    panel.toolbar.addItem('rlm-run', bar);
  }

  panel.disposed.connect(() => {
    mirror.dispose();
    connection.dispose();
    bar.dispose();
  });
  const handle = { connection, runs, bar };
  handles.set(panel, handle);
  return handle;
}
