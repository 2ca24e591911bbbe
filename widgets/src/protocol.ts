/**
 * The `rlm.cells` comm protocol (v2), mirrored from `rlm_kernel/cells.py` (the one definition).
 * Keep names and shapes identical; change that module first, then this one.
 */
import type * as nbformat from '@jupyterlab/nbformat';

export const TARGET = 'rlm.cells';
export const PROTOCOL_VERSION = 2;
export const CONTROL_ACTIONS = ['pause', 'step', 'continue', 'stop'] as const;
export type ControlAction = (typeof CONTROL_ACTIONS)[number];

/** A run's state (`status.state`). */
export type RunState = 'running' | 'paused' | 'final' | 'stopped' | 'error';
/** How a run ended (or paused): every RunState but 'running'. */
export type Outcome = Exclude<RunState, 'running'>;
/** A root step's state (`metadata.rlm.status` of step and thought cells). */
export type StepState = 'proposed' | 'running' | 'done' | 'stale';
/** A thought cell's state while its reply streams in, or how a cut reply ended. */
export type WritingState = 'streaming' | 'stopped' | 'failed';
/** A sub-call's state (`metadata.rlm.call.status`): queued waits for a concurrency slot. */
export type CallState = 'queued' | 'inflight' | 'ok' | 'error' | 'cancelled';
/** `metadata.rlm.kind`. */
export type CellKind = 'query' | 'thought' | 'step' | 'llm' | 'final' | 'compaction';
/** An insert's `kind`: a cell kind, or `child` for a recursive run's read-only record. */
export type InsertKind = CellKind | 'child';

export const ENDED_OUTCOMES: ReadonlySet<Outcome> = new Set(['final', 'stopped', 'error']);

/** An nbformat v4 cell as the kernel sends it: always with an `id`. */
export type WireCell = nbformat.ICell & { id: string };

/** Fields an `update` may replace (`metadata` keys are merged); absent fields are left alone. */
export interface ICellPatch {
  outputs?: nbformat.IOutput[];
  execution_count?: nbformat.ExecutionCount;
  metadata?: { [key: string]: unknown };
  source?: nbformat.MultilineString;
}

/** Sub-call counters: queued (waiting for a slot) and inflight (request sent) are apart. */
export interface ISubcallCounts {
  done: number;
  queued: number;
  inflight: number;
  failed: number;
  cancelled: number;
}

/** Live counters, as built by `cells.status_payload`. */
export interface IStatus {
  state: RunState;
  /** The step number of the latest non-stale step. */
  step: number;
  max_steps: number;
  subcalls: ISubcallCounts;
  tokens: number;
  cost_usd: number;
  /** Active time: paused or waiting for the human is excluded. */
  elapsed_s: number;
  /** Why the run is paused or stopped, in one sentence (e.g. the step-mode hint). */
  reason: string | null;
}

/** What `metadata.rlm.call` holds (the fields the front-end reads). */
export interface ICallRecord {
  call_id?: string;
  model?: string;
  status?: CallState;
  prompt_preview?: string;
  error?: string | null;
  latency_s?: number;
  usage?: { prompt_tokens?: number; completion_tokens?: number };
}

/** What `metadata.rlm` holds (the fields the front-end reads). */
export interface IRlmMeta {
  kind?: CellKind;
  run?: string;
  step?: number;
  /** step/thought: a StepState; final: the run's outcome. */
  status?: StepState | WritingState | Outcome;
  /** llm and final cells of steps an edit made stale (step cells say it in `status`). */
  stale?: boolean;
  /** a query cell's run that an edited query replaced. */
  superseded_by?: string;
  batch_id?: string | number | null;
  call?: ICallRecord;
  summary?: string;
}

/** Every kernel -> front-end message but `batch` and `sync` carries these. */
export interface IInsertMsg {
  type: 'insert';
  run: string;
  id: string;
  anchor: string | null;
  after: string | null;
  kind: InsertKind;
  cell: WireCell;
}

export interface IUpdateMsg {
  type: 'update';
  run: string;
  id: string;
  patch: ICellPatch;
}

export interface IStatusMsg {
  type: 'status';
  run: string;
  anchor?: string | null;
  status: IStatus;
}

export interface IFinishMsg {
  type: 'finish';
  run: string;
  anchor?: string | null;
  /** Not `state`: nbclient reads a top-level `state` as widget state. */
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
  /** The run's `finish` message, or null while it runs. */
  finished: Omit<IFinishMsg, 'type'> | null;
}

/** The envelope of a top-level kernel -> front-end message. */
interface ISequenced {
  v: number;
  /** One counter per kernel process; +1 per message sent to front-ends. */
  seq: number;
}

export interface ISyncMsg extends ISequenced {
  /** (`seq`: the last message whose effect this sync includes.) */
  type: 'sync';
  runs: ISyncRun[];
}

/** Messages that travel inside a `batch` (no `v`, no `seq`) or alone (with both). */
export type RunMsg = IInsertMsg | IUpdateMsg | IStatusMsg | IFinishMsg;

export interface IBatchMsg extends ISequenced {
  type: 'batch';
  /** Applied in order. */
  msgs: RunMsg[];
}

export type KernelMsg = (RunMsg & ISequenced) | IBatchMsg | ISyncMsg;

export interface IHelloMsg {
  v: number;
  type: 'hello';
  client: string;
  mirrors: boolean;
  /** The last seq this client saw (the kernel logs it). */
  seq?: number | null;
}

export interface IControlMsg {
  v: number;
  type: 'control';
  action: ControlAction;
  run: string | null;
  /** Unique per message: the kernel acts on it as it arrives and ignores its later dispatch. */
  id: string;
}

export type FrontendMsg = IHelloMsg | IControlMsg;
export type Msg = KernelMsg | FrontendMsg;

const TYPES = new Set([
  'insert',
  'update',
  'status',
  'finish',
  'sync',
  'batch',
  'hello',
  'control'
]);
const RUN_TYPES = new Set(['insert', 'update', 'status', 'finish']);

export function helloMsg(client: string, mirrors: boolean, seq: number | null = null): IHelloMsg {
  return { v: PROTOCOL_VERSION, type: 'hello', client, mirrors, seq };
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
  const d = data as { v?: unknown; type?: unknown; seq?: unknown; msgs?: unknown };
  if (d.v !== PROTOCOL_VERSION) {
    throw new Error(
      `rlm.cells protocol version ${String(d.v)} is not supported ` +
        `(this extension speaks ${PROTOCOL_VERSION}); update rlm-kernel and its extension together`
    );
  }
  if (typeof d.type !== 'string' || !TYPES.has(d.type)) {
    throw new Error(`unknown rlm.cells message type ${String(d.type)}`);
  }
  if (d.type !== 'hello' && d.type !== 'control' && typeof d.seq !== 'number') {
    throw new Error(`rlm.cells ${d.type} message without a seq number`);
  }
  if (d.type === 'batch') {
    if (!Array.isArray(d.msgs)) {
      throw new Error('rlm.cells batch without a msgs list');
    }
    for (const inner of d.msgs) {
      const t = (inner as { type?: unknown } | null)?.type;
      if (typeof t !== 'string' || !RUN_TYPES.has(t)) {
        throw new Error(`rlm.cells batch holds a message of type ${String(t)}`);
      }
    }
  }
  return data as Msg;
}

/** The messages a kernel message carries, in the order they apply: a batch's, or itself. */
export function unbatch(msg: KernelMsg): (RunMsg | ISyncMsg)[] {
  return msg.type === 'batch' ? msg.msgs : [msg];
}
