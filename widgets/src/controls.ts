/** Pause / Step / Continue / Stop buttons for the active run, placed in the notebook toolbar. */
import { Widget } from '@lumino/widgets';
import type { ControlAction } from './protocol';
import type { RunStore } from './runs';

const BUTTONS: { action: ControlAction; label: string; title: string }[] = [
  { action: 'pause', label: 'Pause', title: 'Pause the RLM run at the next step boundary' },
  { action: 'step', label: 'Step', title: 'Run one more step, then pause' },
  { action: 'continue', label: 'Continue', title: 'Resume the run from the latest step' },
  { action: 'stop', label: 'Stop', title: 'Stop the run (interrupts the kernel)' }
];

export class Controls extends Widget {
  constructor(runs: RunStore, send: (action: ControlAction) => void) {
    super();
    this.addClass('rlm-controls');
    this._runs = runs;
    for (const b of BUTTONS) {
      const button = document.createElement('button');
      button.className = `jp-Button rlm-control rlm-control-${b.action}`;
      button.textContent = b.label;
      button.title = b.title;
      button.dataset.action = b.action;
      button.addEventListener('click', () => send(b.action));
      this.node.appendChild(button);
    }
    runs.changed.connect(this._render, this);
    this._render();
  }

  private _render(): void {
    const enabled = this._runs.controllable;
    this.node.querySelectorAll('button').forEach(b => {
      (b as HTMLButtonElement).disabled = !enabled;
    });
  }

  private _runs: RunStore;
}
