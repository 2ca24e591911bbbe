/**
 * rlm-kernel-extension: the JupyterLab client of the `rlm.cells` protocol. The kernel executes
 * an RLM run; this extension mirrors it as live cells below the query cell, with controls.
 */
import type { JupyterFrontEnd, JupyterFrontEndPlugin } from '@jupyterlab/application';
import { ICommandPalette } from '@jupyterlab/apputils';
import { INotebookTracker } from '@jupyterlab/notebook';
import { ISettingRegistry } from '@jupyterlab/settingregistry';
import { attachToPanel, handles } from './attach';
import type { ControlAction } from './protocol';
import { activateForks, ForkButtons } from './forks';
import { SettingsHolder } from './settings';

const PLUGIN_ID = 'rlm-kernel-extension:plugin';

const COMMANDS: { id: string; label: string; action: ControlAction | 'run' }[] = [
  { id: 'rlm:run', label: 'RLM: Run Query Cell', action: 'run' },
  { id: 'rlm:pause', label: 'RLM: Pause Run', action: 'pause' },
  { id: 'rlm:step', label: 'RLM: Step Run', action: 'step' },
  { id: 'rlm:continue', label: 'RLM: Continue Run', action: 'continue' },
  { id: 'rlm:stop', label: 'RLM: Stop Run', action: 'stop' }
];

const plugin: JupyterFrontEndPlugin<void> = {
  id: PLUGIN_ID,
  description: 'Live RLM trajectory cells and run controls for notebooks.',
  autoStart: true,
  requires: [INotebookTracker],
  optional: [ICommandPalette, ISettingRegistry],
  activate: (
    app: JupyterFrontEnd,
    tracker: INotebookTracker,
    palette: ICommandPalette | null,
    registry: ISettingRegistry | null
  ) => {
    const settings = new SettingsHolder();
    if (registry) {
      registry
        .load(PLUGIN_ID)
        .then(s => settings.follow(s))
        .catch(err =>
          console.warn('rlm-kernel-extension: settings not loaded; using defaults', err)
        );
    }
    tracker.widgetAdded.connect((_, panel) => {
      attachToPanel(panel, settings).bar.insertWidget(1, new ForkButtons(app));
    });
    const current = () => (tracker.currentWidget ? handles.get(tracker.currentWidget) : undefined);
    activateForks(app, tracker, palette, panel => !!handles.get(panel)?.connection.isRlm);
    for (const c of COMMANDS) {
      app.commands.addCommand(c.id, {
        label: c.label,
        isEnabled: () => !!current()?.connection.isRlm,
        execute: () => {
          const h = current();
          if (!h) {
            return;
          }
          if (c.action === 'run') {
            h.connection.runQuery();
          } else {
            h.connection.control(c.action);
          }
        }
      });
      palette?.addItem({ command: c.id, category: 'RLM' });
    }
  }
};

export default plugin;
