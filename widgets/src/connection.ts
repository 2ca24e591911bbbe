/**
 * One notebook panel's link to its kernel over `rlm.cells`: registers the comm target (again on
 * every kernel change or restart), says `hello`, and routes messages to the mirror and run store.
 */
import type { NotebookPanel } from '@jupyterlab/notebook';
import type { Kernel, KernelMessage } from '@jupyterlab/services';
import type { IDisposable } from '@lumino/disposable';
import { check, controlMsg, helloMsg, TARGET } from './protocol';
import type { ControlAction, FrontendMsg, IFinishMsg, IStatusMsg, KernelMsg } from './protocol';
import type { JSONObject } from '@lumino/coreutils';
import type { CellMirror } from './mirror';
import type { RunStore } from './runs';

type Comm = Kernel.IComm;

/** Protocol messages are plain JSON; the interfaces just lack an index signature. */
const wire = (msg: FrontendMsg): JSONObject => msg as unknown as JSONObject;

export class PanelConnection implements IDisposable {
  constructor(panel: NotebookPanel, mirror: CellMirror, runs: RunStore) {
    this._panel = panel;
    this._mirror = mirror;
    this._runs = runs;
    const ctx = panel.sessionContext;
    ctx.kernelChanged.connect((_, change) => this._attach(change.newValue), this);
    ctx.statusChanged.connect((_, status) => {
      if (status === 'restarting' || status === 'autorestarting') {
        this._restarting = true;
      } else if (this._restarting && status === 'idle') {
        this._restarting = false;
        this._attach(ctx.session?.kernel ?? null, true);
      }
    }, this);
    ctx.connectionStatusChanged.connect((_, status) => {
      // A dropped websocket may have lost messages: ask the kernel to re-send the trajectory.
      if (status === 'connected' && this._kernel && this._everDisconnected) {
        void this._openHello(this._kernel);
      }
      this._everDisconnected ||= status === 'disconnected' || status === 'connecting';
    }, this);
    void ctx.ready.then(() => this._attach(ctx.session?.kernel ?? null));
  }

  get isDisposed(): boolean {
    return this._disposed;
  }

  dispose(): void {
    if (this._disposed) {
      return;
    }
    this._disposed = true;
    this._kernel?.removeCommTarget(TARGET, this._onCommOpen);
    this._comms.clear();
  }

  /** Send a control to the active run; Stop also interrupts, so it works even mid-`await`. */
  control(action: ControlAction): void {
    const run = this._runs.active?.run ?? null;
    const comm = (run && this._commByRun.get(run)) || this._lastComm;
    if (comm && !comm.isDisposed) {
      comm.send(wire(controlMsg(action, run)));
    } else {
      console.warn(`rlm.cells: no open comm to send ${action} to`);
    }
    if (action === 'stop') {
      void this._panel.sessionContext.session?.kernel?.interrupt();
    }
  }

  private _attach(kernel: Kernel.IKernelConnection | null, force = false): void {
    if (this._disposed || !kernel || (kernel === this._kernel && !force)) {
      return;
    }
    if (this._kernel && this._kernel !== kernel) {
      this._kernel.removeCommTarget(TARGET, this._onCommOpen);
    }
    this._kernel = kernel;
    this._comms.clear();
    this._commByRun.clear();
    this._lastComm = null;
    kernel.registerCommTarget(TARGET, this._onCommOpen);
    void this._openHello(kernel);
  }

  /** Kernel-opened comm (a run started): adopt it and say hello. Never await here. */
  private _onCommOpen = (comm: Comm, msg: KernelMessage.ICommOpenMsg): void => {
    this._adopt(comm);
    comm.send(wire(helloMsg('jupyterlab', true)));
    const data = msg.content.data as { type?: unknown } | undefined;
    if (data && data.type !== undefined) {
      this._receive(comm, data);
    }
  };

  /**
   * Open our own comm and say hello, so a kernel mid-run (or finished) answers with `sync`.
   * Only on RLM kernels: other kernels would log "No such comm target" for every notebook.
   */
  private async _openHello(kernel: Kernel.IKernelConnection): Promise<void> {
    try {
      const spec = await kernel.info;
      const isRlm = kernel.name.startsWith('rlm') || /rlm/i.test(spec.implementation ?? '');
      if (!isRlm || this._disposed || kernel !== this._kernel) {
        return;
      }
      const comm = kernel.createComm(TARGET);
      this._adopt(comm);
      comm.open(wire(helloMsg('jupyterlab', true)));
    } catch (err) {
      console.warn('rlm.cells: hello failed', err);
    }
  }

  private _adopt(comm: Comm): void {
    this._comms.add(comm);
    this._lastComm = comm;
    // Fire and forget: a returned promise would pause this kernel's message handling.
    comm.onMsg = (m: KernelMessage.ICommMsgMsg) => {
      this._receive(comm, m.content.data);
    };
    comm.onClose = () => {
      this._comms.delete(comm);
      if (this._lastComm === comm) {
        this._lastComm = null;
      }
    };
  }

  private _receive(comm: Comm, data: unknown): void {
    let msg: KernelMsg;
    try {
      const checked = check(data);
      if (checked.type === 'hello' || checked.type === 'control') {
        return; // front-end -> kernel messages; nothing to do if echoed
      }
      msg = checked;
    } catch (err) {
      console.warn(`rlm.cells: ${(err as Error).message}`);
      return;
    }
    this._lastComm = comm;
    switch (msg.type) {
      case 'insert':
        if (this._claim(msg.run, comm, msg.anchor, msg.after)) {
          this._mirror.insert(msg);
        }
        break;
      case 'update':
        // Updates are matched by cell id in the mirror, so a foreign run's update is a no-op.
        this._mirror.update(msg);
        break;
      case 'status':
      case 'finish':
        if (this._runs.get(msg.run)) {
          this._applyRunMsg(msg);
        } else {
          // Status can precede the first insert; hold it until the run proves to be ours.
          this._held.set(msg.run, [...(this._held.get(msg.run) ?? []).filter(m => m.type !== msg.type), msg]);
        }
        break;
      case 'sync':
        for (const run of msg.runs) {
          const first = run.cells[0]?.id ?? null;
          if (this._claim(run.run, comm, run.anchor, first)) {
            this._mirror.sync(run);
            this._runs.sync(run);
          }
        }
        break;
    }
  }

  /** Is this run anchored in this panel? If so, record it and replay held status messages. */
  private _claim(run: string, comm: Comm, anchor: string | null, after: string | null): boolean {
    if (!this._runs.get(run)) {
      const ids = new Set(this._panel.model?.sharedModel.cells.map(c => c.getId()) ?? []);
      if (!(anchor && ids.has(anchor)) && !(after && ids.has(after))) {
        return false;
      }
    }
    this._commByRun.set(run, comm);
    this._runs.touch(run, anchor);
    for (const held of this._held.get(run) ?? []) {
      this._applyRunMsg(held);
    }
    this._held.delete(run);
    return true;
  }

  private _applyRunMsg(msg: IStatusMsg | IFinishMsg): void {
    if (msg.type === 'status') {
      this._runs.setStatus(msg.run, msg.status);
    } else {
      this._runs.setFinish(msg);
    }
  }

  private _panel: NotebookPanel;
  private _mirror: CellMirror;
  private _runs: RunStore;
  private _kernel: Kernel.IKernelConnection | null = null;
  private _comms = new Set<Comm>();
  private _commByRun = new Map<string, Comm>();
  private _lastComm: Comm | null = null;
  private _held = new Map<string, (IStatusMsg | IFinishMsg)[]>();
  private _restarting = false;
  private _everDisconnected = false;
  private _disposed = false;
}
