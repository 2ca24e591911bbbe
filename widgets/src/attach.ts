/**
 * Attaches the extension to one notebook panel: the cell mirror, the kernel connection, the run
 * bar (controls and status) and the cell decorations, all disposed with the panel.
 */
import type { ICodeCellModel } from '@jupyterlab/cells';
import type { NotebookPanel } from '@jupyterlab/notebook';
import { BoxLayout, Panel } from '@lumino/widgets';
import { PanelConnection } from './connection';
import { Controls } from './controls';
import { CellDecorator } from './decorate';
import type { IAnchors } from './decorate';
import { CellMirror } from './mirror';
import type { IRlmMeta } from './protocol';
import { RunStore } from './runs';
import type { SettingsHolder } from './settings';
import { StatusLine } from './status';

export interface IPanelHandle {
  connection: PanelConnection;
  runs: RunStore;
  /** The run bar, for the extension's other modules' buttons (forks.ts). */
  bar: Panel;
}

/** Each attached panel's handle, for the extension's commands. */
export const handles = new WeakMap<NotebookPanel, IPanelHandle>();

export function attachToPanel(panel: NotebookPanel, settings: SettingsHolder): IPanelHandle {
  const runs = new RunStore();
  const mirror = new CellMirror({
    notebook: () => panel.model?.sharedModel ?? null,
    collapseSubcalls: () => settings.current.collapseSubcalls
  });
  const connection = new PanelConnection(panel, mirror, runs);
  const decorator = new CellDecorator(
    { widgets: () => panel.content.widgets, indexOf: id => mirror.indexOf(id) },
    () => settings.current
  );

  const anchors = (): IAnchors => {
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
    decorator.some(ids, a);
    showBusy(ids);
  };
  let liveKey = '';
  runs.changed.connect((_, r) => {
    if (r.anchor) {
      decorator.some([r.anchor], anchors());
    }
    const key = [...runs.all()].map(x => `${x.run}:${x.finish?.outcome ?? 'live'}`).join(',');
    if (key !== liveKey) {
      liveKey = key;
      showBusy(new Set(busy));
    }
  });

  // The kernel runs a step's code (and its sub-calls) on its own: show those cells as [*]
  // while they run, as JupyterLab does for a cell it executes. Only cells marked here are
  // reset here, so a human's own re-run of a step cell is left alone.
  const busy = new Set<string>();
  const showBusy = (ids: ReadonlySet<string>) => {
    // One transaction for all (the execution state lives in the shared model).
    panel.model?.sharedModel.transact(() => markBusy(ids), false);
  };
  const markBusy = (ids: ReadonlySet<string>) => {
    const live = new Set([...runs.all()].filter(r => !r.finish).map(r => r.run));
    const widgets = panel.content.widgets;
    for (const id of ids) {
      const cell = widgets[mirror.indexOf(id)];
      if (!cell || cell.model.id !== id || cell.model.type !== 'code') {
        continue;
      }
      const model = cell.model as ICodeCellModel;
      const meta = (model.getMetadata('rlm') ?? {}) as IRlmMeta;
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
  // A saved trajectory opened later is styled too; a changed setting restyles every cell.
  void panel.context.ready.then(() => decorator.all(anchors()));
  const onSettings = () => {
    if (!panel.isDisposed) {
      decorator.all(anchors());
    }
  };
  settings.changed.connect(onSettings);

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
    settings.changed.disconnect(onSettings);
    mirror.dispose();
    connection.dispose();
    bar.dispose();
  });
  const handle = { connection, runs, bar };
  handles.set(panel, handle);
  return handle;
}
