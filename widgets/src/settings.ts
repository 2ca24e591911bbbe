/**
 * The extension's user settings (schema/plugin.json is their one declaration; these are the
 * defaults the schema also states, used when the setting registry is not available).
 */
import type { ISettingRegistry } from '@jupyterlab/settingregistry';
import { Signal } from '@lumino/signaling';
import type { ISignal } from '@lumino/signaling';

export interface IRlmSettings {
  /** Tint each `llm_batch` group of sub-call cells and head it with its size. */
  groupBatches: boolean;
  /** Sub-call cells arrive collapsed (input and output), unless the kernel said otherwise. */
  collapseSubcalls: boolean;
  /** A collapsed sub-call cell shows its one-line summary in place of its first line. */
  showSummaries: boolean;
}

export const DEFAULT_SETTINGS: Readonly<IRlmSettings> = {
  groupBatches: true,
  collapseSubcalls: true,
  showSummaries: true
};

/** The current settings, updated from the registry when there is one. */
export class SettingsHolder {
  get current(): Readonly<IRlmSettings> {
    return this._current;
  }

  get changed(): ISignal<this, Readonly<IRlmSettings>> {
    return this._changed;
  }

  /** Follow a loaded settings object (the user's values over the schema's defaults). */
  follow(settings: ISettingRegistry.ISettings): void {
    const read = () => {
      const c = settings.composite as Partial<IRlmSettings>;
      const next: IRlmSettings = { ...DEFAULT_SETTINGS };
      for (const key of Object.keys(DEFAULT_SETTINGS) as (keyof IRlmSettings)[]) {
        if (typeof c[key] === 'boolean') {
          next[key] = c[key] as boolean;
        }
      }
      this._current = next;
      this._changed.emit(next);
    };
    settings.changed.connect(read);
    read();
  }

  private _current: Readonly<IRlmSettings> = DEFAULT_SETTINGS;
  private _changed = new Signal<this, Readonly<IRlmSettings>>(this);
}
