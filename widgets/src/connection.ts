/**
 * One notebook panel's link to its kernel over `rlm.cells`: registers the comm target (again on
 * every kernel change or restart), says `hello` (again when messages were lost), hands messages
 * to the router, and carries the human's controls to the kernel.
 */
import type * as nbformat from '@jupyterlab/nbformat';
import type { CodeCell } from '@jupyterlab/cells';
import { NotebookActions } from '@jupyterlab/notebook';
import type { NotebookPanel } from '@jupyterlab/notebook';
import type { Kernel, KernelMessage } from '@jupyterlab/services';
import type { IDisposable } from '@lumino/disposable';
import { ISignal, Signal } from '@lumino/signaling';
import { controlMsg, helloMsg, TARGET } from './protocol';
import type { ControlAction, FrontendMsg } from './protocol';
import type { JSONObject } from '@lumino/coreutils';
import type { CellMirror } from './mirror';
import { Router } from './router';
import type { RunStore } from './runs';

type Comm = Kernel.IComm;

/** Protocol messages are plain JSON; the interfaces just lack an index signature. */
const wire = (msg: FrontendMsg): JSONObject => msg as unknown as JSONObject;

export class PanelConnection implements IDisposable {
  constructor(panel: NotebookPanel, mirror: CellMirror, runs: RunStore) {
    this._panel = panel;
    this._runs = runs;
    this._router = new Router(mirror, runs);
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
        this._router.gate.expectSync();
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

  /** True once this panel's kernel is known to be an RLM kernel. */
  get isRlm(): boolean {
    return this._isRlm;
  }

  /** Emits when the panel's kernel becomes (or stops being) an RLM kernel. */
  get rlmChanged(): ISignal<this, boolean> {
    return this._rlmChanged;
  }

  /**
   * The human's hands on the active run.
   *
   * A live run takes `pause` / `step` / `continue` / `stop` as comm messages (the kernel reads
   * them while the run awaits); Stop also interrupts the kernel, so it acts within a second even
   * mid-step. A paused run is no longer executing (the kernel's run loop returned and the query
   * cell's execution ended), so Continue and Step resume it by executing `%rlm continue` /
   * `%rlm step` in the kernel, on behalf of the query cell (see `_resume`); Stop on a paused run
   * executes `%rlm stop`.
   */
  control(action: ControlAction): void {
    const state = this._runs.active;
    const run = state?.run ?? null;
    if (run && this._runs.paused) {
      if (action === 'continue' || action === 'step') {
        void this._resume(run, action);
      } else if (action === 'stop') {
        void this._stopPaused(run);
      }
      return; // pause: already paused
    }
    const comm = (run && this._commByRun.get(run)) || this._lastComm;
    if (comm && !comm.isDisposed) {
      comm.send(wire(controlMsg(action, run)));
    } else {
      console.warn(`rlm.cells: no open comm to send ${action} to`);
    }
    if (run && (action === 'pause' || action === 'stop')) {
      this._runs.setPending(run, action === 'pause' ? 'pausing' : 'stopping');
    } else if (run && action === 'continue' && state?.pending === 'pausing') {
      this._runs.setPending(run, null);
    }
    if (action === 'stop') {
      void this._panel.sessionContext.session?.kernel?.interrupt();
    }
  }

  /**
   * Run: execute the selected `%%rlm` cell, or the nearest query cell above the selection,
   * through JupyterLab's own execution (so the cell shows [*], its outputs, its count).
   * Returns false when there is no query cell to run.
   */
  runQuery(): boolean {
    const nb = this._panel.content;
    const cells = nb.widgets;
    for (let i = Math.min(nb.activeCellIndex, cells.length - 1); i >= 0; i--) {
      const cell = cells[i];
      if (cell.model.type === 'code' && isQuerySource(cell.model.sharedModel.getSource())) {
        void NotebookActions.runCells(nb, [cell], this._panel.sessionContext);
        return true;
      }
    }
    return false;
  }

  /**
   * Resume a paused run: the kernel executes `%rlm continue|step --run ID` (it must: the run
   * loop awaits model calls inside an execution). No cell is added for it: the query cell stands
   * for the run, so it shows [*] while the run goes on and the kernel's replies to this execution
   * (the end-of-run summary, or an error) are appended to its outputs. The new step cells arrive
   * over `rlm.cells` as usual, after the run's last cell.
   */
  private async _resume(run: string, action: 'continue' | 'step'): Promise<void> {
    const kernel = this._panel.sessionContext.session?.kernel;
    if (!kernel) {
      return;
    }
    this._runs.setPending(run, 'resuming');
    const query = this._queryCell(run);
    if (query) {
      query.model.executionState = 'running';
    }
    const future = kernel.requestExecute({
      code: `%rlm ${action} --run ${run}`,
      silent: false,
      store_history: true,
      allow_stdin: false,
      stop_on_error: false
    });
    future.onIOPub = msg => {
      const out = toOutput(msg);
      const target = this._queryCell(run);
      if (out && target && !target.isDisposed) {
        target.model.outputs.add(out);
      }
    };
    try {
      const reply = await future.done;
      if (reply.content.status !== 'ok') {
        // e.g. "run ... is still running": the run stays as the kernel last said.
        this._runs.setPending(run, null);
      }
    } catch (err) {
      console.warn('rlm.cells: resume failed', err);
      this._runs.setPending(run, null);
    } finally {
      const target = this._queryCell(run);
      if (target && !target.isDisposed) {
        target.model.executionState = 'idle';
      }
    }
  }

  /** Stop a paused run: `%rlm stop` marks it stopped in the kernel; the UI follows. */
  private async _stopPaused(run: string): Promise<void> {
    const kernel = this._panel.sessionContext.session?.kernel;
    if (!kernel) {
      return;
    }
    const future = kernel.requestExecute({
      code: '%rlm stop',
      silent: false,
      store_history: false
    });
    const reply = await future.done;
    const state = this._runs.get(run);
    if (reply.content.status === 'ok' && state?.finish?.outcome === 'paused') {
      this._runs.setFinish({
        ...state.finish,
        outcome: 'stopped',
        reason: 'stopped by the user (%rlm stop)'
      });
    }
  }

  private _queryCell(run: string): CodeCell | null {
    const anchor = this._runs.get(run)?.anchor;
    const cell = anchor ? this._panel.content.widgets.find(c => c.model.id === anchor) : undefined;
    return cell && cell.model.type === 'code' ? (cell as CodeCell) : null;
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
    this._router.reset();
    kernel.registerCommTarget(TARGET, this._onCommOpen);
    void this._openHello(kernel);
  }

  /** Kernel-opened comm (a run started): adopt it and say hello. Never await here. */
  private _onCommOpen = (comm: Comm, msg: KernelMessage.ICommOpenMsg): void => {
    this._adopt(comm);
    comm.send(wire(this._hello()));
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
      // The kernelspec name says so at once; otherwise ask the kernel what it implements.
      const isRlm =
        kernel.name.startsWith('rlm') || /rlm/i.test((await kernel.info).implementation ?? '');
      if (this._disposed || kernel !== this._kernel) {
        return;
      }
      if (isRlm !== this._isRlm) {
        this._isRlm = isRlm;
        this._rlmChanged.emit(isRlm);
      }
      if (!isRlm) {
        return;
      }
      const comm = kernel.createComm(TARGET);
      this._adopt(comm);
      comm.open(wire(this._hello()));
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

  private _hello(): FrontendMsg {
    return helloMsg('jupyterlab', true, this._router.gate.last);
  }

  private _receive(comm: Comm, data: unknown): void {
    const receipt = this._router.receive(data);
    if (receipt.runs.length) {
      this._lastComm = comm;
    }
    for (const run of receipt.runs) {
      this._commByRun.set(run, comm);
    }
    if (receipt.resync) {
      // Messages were lost: the kernel answers `hello` with the whole state (`sync`).
      if (!comm.isDisposed) {
        comm.send(wire(this._hello()));
      } else if (this._kernel) {
        void this._openHello(this._kernel);
      }
    }
  }

  private _panel: NotebookPanel;
  private _router: Router;
  private _runs: RunStore;
  private _kernel: Kernel.IKernelConnection | null = null;
  private _comms = new Set<Comm>();
  private _commByRun = new Map<string, Comm>();
  private _lastComm: Comm | null = null;
  private _restarting = false;
  private _everDisconnected = false;
  private _disposed = false;
  private _isRlm = false;
  private _rlmChanged = new Signal<this, boolean>(this);
}

/** A `%%rlm` cell: the magic on its first non-blank line. */
export function isQuerySource(source: string): boolean {
  return /^\s*%%rlm\b/.test(source);
}

/** An IOPub output message as an nbformat output, or null for other messages. */
function toOutput(msg: KernelMessage.IIOPubMessage): nbformat.IOutput | null {
  const c = msg.content as Record<string, unknown>;
  switch (msg.header.msg_type) {
    case 'stream':
      return { output_type: 'stream', name: c.name, text: c.text } as nbformat.IStream;
    case 'display_data':
      return {
        output_type: 'display_data',
        data: c.data,
        metadata: c.metadata ?? {}
      } as nbformat.IDisplayData;
    case 'execute_result':
      return {
        output_type: 'execute_result',
        data: c.data,
        metadata: c.metadata ?? {},
        execution_count: c.execution_count
      } as nbformat.IExecuteResult;
    case 'error':
      return {
        output_type: 'error',
        ename: c.ename,
        evalue: c.evalue,
        traceback: c.traceback
      } as nbformat.IError;
    default:
      return null;
  }
}
