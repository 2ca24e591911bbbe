/**
 * The `rlm.cells` comm protocol, mirrored from `rlm_kernel/cells.py` (the one definition).
 * Keep names and shapes identical; change that module first, then this one.
 */
import type * as nbformat from '@jupyterlab/nbformat';

export const TARGET = 'rlm.cells';
export const PROTOCOL_VERSION = 2;
export const CONTROL_ACTIONS = ['pause', 'step', 'continue', 'stop'] as const;
export type ControlAction = (typeof CONTROL_ACTIONS)[number];

/** `metadata.rlm.kind` values (docs/architecture.md, "One idea"). */
export type CellKind = 'query' | 'thought' | 'step' | 'llm' | 'final';

/** `rlm_kernel/states.py`, as literal unions. */
export type RunState = 'running' | 'paused' | 'final' | 'stopped' | 'error';
export type StepState = 'proposed' | 'running' | 'done' | 'stale';
export type CallState = 'queued' | 'inflight' | 'ok' | 'error' | 'cancelled';
export type Outcome = Exclude<RunState, 'running'>;

/** An nbformat v4 cell as the kernel sends it: always with an `id`. */
export type WireCell = nbformat.ICell & { id: string };

/** Fields an `update` may replace; absent fields are left alone. */
export interface ICellPatch {
  outputs?: nbformat.IOutput[];
  execution_count?: nbformat.ExecutionCount;
  metadata?: nbformat.ICellMetadata;
  source?: nbformat.MultilineString;
}

/** Live counters, as built by `cells.status_payload`. */
export interface IStatus {
  state: RunState;
  step: number;
  max_steps: number;
  subcalls: { done: number; queued: number; inflight: number; failed: number; cancelled: number };
  tokens: number;
  cost_usd: number;
  elapsed_s: number;
  reason: string | null;
}

interface IEnvelope {
  v: number;
  /** Kernel -> front-end messages are numbered (see cells.py, "Sequence numbers"). */
  seq?: number;
}

export interface IInsertMsg extends IEnvelope {
  type: 'insert';
  run: string;
  id: string;
  anchor: string | null;
  after: string | null;
  kind: string;
  cell: WireCell;
}

export interface IUpdateMsg extends IEnvelope {
  type: 'update';
  run: string;
  id: string;
  patch: ICellPatch;
}

export interface IStatusMsg extends IEnvelope {
  type: 'status';
  run: string;
  anchor?: string | null;
  status: IStatus;
}

export interface IFinishMsg extends IEnvelope {
  type: 'finish';
  run: string;
  anchor?: string | null;
  /** Not `state`: nbclient reads that as widget state. */
  outcome: Outcome;
  answer: string | null;
  reason: string | null;
  /** The answer was asked for once after a budget ran out. */
  best_effort?: boolean;
}

/** One run in a `sync` reply; `cells` are in trajectory order, the query cell excluded. */
export interface ISyncRun {
  run: string;
  anchor: string | null;
  cells: WireCell[];
  status: IStatus | null;
  finished: unknown;
}

/** Several kernel messages in one comm message, applied in order (no `v`/`seq` of their own). */
export interface IBatchMsg extends IEnvelope {
  type: 'batch';
  msgs: (Omit<IInsertMsg, 'v'> | Omit<IUpdateMsg, 'v'> | Omit<IStatusMsg, 'v'> | Omit<IFinishMsg, 'v'>)[];
}

export interface ISyncMsg extends IEnvelope {
  type: 'sync';
  runs: ISyncRun[];
}

export interface IHelloMsg extends IEnvelope {
  type: 'hello';
  client: string;
  mirrors: boolean;
}

export interface IControlMsg extends IEnvelope {
  type: 'control';
  action: ControlAction;
  run: string | null;
  /** Unique per message: the kernel acts on it as it arrives and ignores its later dispatch. */
  id: string;
}

export type KernelMsg = IInsertMsg | IUpdateMsg | IStatusMsg | IFinishMsg | IBatchMsg | ISyncMsg;
export type FrontendMsg = IHelloMsg | IControlMsg;
export type Msg = KernelMsg | FrontendMsg;

const TYPES = new Set(['insert', 'update', 'status', 'finish', 'batch', 'sync', 'hello', 'control']);

export function helloMsg(client: string, mirrors: boolean): IHelloMsg {
  return { v: PROTOCOL_VERSION, type: 'hello', client, mirrors };
}

export function controlMsg(action: ControlAction, run: string | null = null): IControlMsg {
  if (!CONTROL_ACTIONS.includes(action)) {
    throw new Error(`unknown control action ${action}; expected one of ${CONTROL_ACTIONS}`);
  }
  const id = `${Date.now().toString(36)}-${Math.random().toString(36).slice(2)}`;
  return { v: PROTOCOL_VERSION, type: 'control', action, run, id };
}

/** Validate an incoming message's envelope; throw with a reason otherwise (as `cells.check`). */
export function check(data: unknown): Msg {
  if (typeof data !== 'object' || data === null || Array.isArray(data)) {
    throw new Error('rlm.cells message must be a JSON object');
  }
  const d = data as { v?: unknown; type?: unknown };
  if (d.v !== PROTOCOL_VERSION) {
    throw new Error(
      `rlm.cells protocol version ${String(d.v)} is not supported ` +
        `(this extension speaks ${PROTOCOL_VERSION}); update rlm-kernel and its extension together`
    );
  }
  if (typeof d.type !== 'string' || !TYPES.has(d.type)) {
    throw new Error(`unknown rlm.cells message type ${String(d.type)}`);
  }
  return data as Msg;
}
