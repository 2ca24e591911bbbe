/**
 * rlm-kernel-extension: the JupyterLab client of the `rlm.cells` protocol. The kernel executes
 * an RLM run; this extension mirrors it as live cells below the query cell, with controls.
 */
import type { JupyterFrontEnd, JupyterFrontEndPlugin } from '@jupyterlab/application';
import { INotebookTracker } from '@jupyterlab/notebook';
import { attachToPanel } from './panel';

const plugin: JupyterFrontEndPlugin<void> = {
  id: 'rlm-kernel-extension:plugin',
  description: 'Live RLM trajectory cells and run controls for notebooks.',
  autoStart: true,
  requires: [INotebookTracker],
  activate: (_app: JupyterFrontEnd, tracker: INotebookTracker) => {
    tracker.widgetAdded.connect((_, panel) => attachToPanel(panel));
  }
};

export default plugin;
