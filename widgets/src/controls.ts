/**
 * Run / Pause / Step / Continue / Stop for this notebook's RLM runs, in the run bar under the
 * notebook toolbar. Each button is enabled only when its action can do something now.
 */
import { Widget } from '@lumino/widgets';
import type { ControlAction } from './protocol';
import type { RunStore } from './runs';

export type Action = ControlAction | 'run';

const BUTTONS: { action: Action; label: string; title: string }[] = [
  {
    action: 'run',
    label: '▶ Run',
    title: 'Run the selected %%rlm cell (or the nearest query cell above the selection)'
  },
  { action: 'pause', label: 'Pause', title: 'Pause the RLM run at the next step boundary' },
  { action: 'step', label: 'Step', title: 'Run one more step, then pause' },
  { action: 'continue', label: 'Continue', title: 'Resume the paused run from its latest step' },
  { action: 'stop', label: 'Stop', title: 'Stop the run (interrupts the kernel)' }
];

export interface IControlsOptions {
  runs: RunStore;
  send: (action: Action) => void;
  /** Is there a kernel that can run a query? (Run is disabled otherwise.) */
  canRun: () => boolean;
}

export class Controls extends Widget {
  constructor(options: IControlsOptions) {
    super();
    this.addClass('rlm-controls');
    this._runs = options.runs;
    this._canRun = options.canRun;
    for (const b of BUTTONS) {
      const button = document.createElement('button');
      button.className = `jp-Button rlm-control rlm-control-${b.action}`;
      button.textContent = b.label;
      button.title = b.title;
      button.dataset.action = b.action;
      button.addEventListener('click', () => {
        options.send(b.action);
        this.refresh();
      });
      this.node.appendChild(button);
    }
    this._runs.changed.connect(() => this.refresh(), this);
    this.refresh();
  }

  /** Re-evaluate which buttons are enabled. */
  refresh(): void {
    const runs = this._runs;
    const live = runs.live;
    const paused = runs.paused;
    const pending = runs.active?.pending ?? null;
    const enabled: Record<Action, boolean> = {
      run: this._canRun() && !live,
      pause: live && pending !== 'pausing' && pending !== 'stopping',
      step: (live || paused) && pending !== 'stopping',
      continue: paused || (live && pending === 'pausing'),
      stop: (live || paused) && pending !== 'stopping'
    };
    this.node.querySelectorAll('button').forEach(b => {
      const action = (b as HTMLButtonElement).dataset.action as Action;
      (b as HTMLButtonElement).disabled = !enabled[action];
    });
  }

  private _runs: RunStore;
  private _canRun: () => boolean;
}
