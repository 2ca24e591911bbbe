/** Everything the extension attaches to one notebook panel, disposed with it. */
import type { NotebookPanel } from '@jupyterlab/notebook';
import { BoxLayout, Panel } from '@lumino/widgets';
import { PanelConnection } from './connection';
import { Controls } from './controls';
import { decorate } from './decorate';
import { CellMirror } from './mirror';
import { RunStore } from './runs';
import { StatusLine } from './status';

export function attachToPanel(panel: NotebookPanel): void {
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
  };
  runs.changed.connect((_, r) => {
    if (r.anchor) {
      const a = anchors();
      decorate(panel, new Set([r.anchor]), a.query, a.running);
    }
  });
  // A saved trajectory opened later is styled too.
  void panel.context.ready.then(() => {
    const a = anchors();
    decorate(panel, null, a.query, a.running);
  });

  const bar = new Panel();
  bar.addClass('rlm-toolbar');
  bar.addWidget(new Controls(runs, action => connection.control(action)));
  bar.addWidget(new StatusLine(runs));
  // A row of its own under the notebook toolbar: the toolbar would fold a long status line
  // into its overflow menu. Hidden until this panel sees a run, so plain notebooks are unchanged.
  bar.hide();
  runs.changed.connect(() => bar.show());
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
}
