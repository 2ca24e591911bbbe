"""The records of a run: what the engine produces, the kernel keeps, the notebook writer renders.

Plain dataclasses with ``to_dict``/``from_dict`` so a trajectory travels unchanged through the cells
protocol, a notebook's ``metadata["rlm"]`` and replay. The context itself is never stored here: only
its description (:class:`ContextInfo`).
"""

from __future__ import annotations

import hashlib
import time
import uuid
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from .media import find_images
from .states import CallState, RunState, StepState, advance

__all__ = ["Usage", "ContextInfo", "SubCall", "Step", "ForkOf", "Run", "new_id", "sha256_text",
           "preview"]

PREVIEW_CHARS = 240


def new_id(prefix: str = "") -> str:
    """A short random id; 10 hex digits are plenty inside one session and read well in markers."""
    return prefix + uuid.uuid4().hex[:10]


def sha256_text(text: str, piece: int = 1 << 20) -> str:
    """sha256 of the UTF-8 text, encoded a megabyte at a time: a 400 MB context must not be
    copied whole (as bytes) just to be fingerprinted. Same digest as hashing it in one go."""
    digest = hashlib.sha256()
    for start in range(0, len(text), piece):
        digest.update(text[start:start + piece].encode("utf-8", "surrogatepass"))
    return digest.hexdigest()


def preview(text: str, limit: int = PREVIEW_CHARS) -> str:
    """Head and tail of ``text`` with the number of characters left out in between."""
    if len(text) <= limit:
        return text
    half = limit // 2
    return f"{text[:half]}\n[... {len(text) - 2 * half} characters omitted ...]\n{text[-half:]}"


def _from_dict(cls: type, data: dict[str, Any]) -> Any:
    names = {f.name for f in fields(cls)}
    return cls(**{k: v for k, v in data.items() if k in names})


@dataclass
class Usage:
    """Tokens and money of one call or an aggregate. ``requests`` counts answered calls."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    requests: int = 0
    cost_usd: float = 0.0
    unreported: int = 0  # answered calls whose server reported no usage (streamed, llama.cpp)

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def add(self, other: Usage) -> None:
        self.prompt_tokens += other.prompt_tokens
        self.completion_tokens += other.completion_tokens
        self.cached_tokens += other.cached_tokens
        self.requests += other.requests
        self.cost_usd += other.cost_usd
        self.unreported += other.unreported

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens,
            "cached_tokens": self.cached_tokens, "requests": self.requests,
            "cost_usd": self.cost_usd}
        if self.unreported:
            out["unreported"] = self.unreported
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> Usage:
        return _from_dict(cls, data or {})


@dataclass
class ContextInfo:
    """What the model and the notebook learn about the context: never its content beyond a preview."""

    type: str = "str"
    length: int = 0
    unit: str = "characters"
    sha256: str = ""
    source: str = ""  # a file path or "variable:<name>", so replay can reload it
    preview: str = ""
    parts: int | None = None  # for list/dict contexts: number of items
    images: str = ""  # how many images, where and how big (media.find_images); never pixels

    @classmethod
    def describe(cls, context: Any, source: str = "") -> ContextInfo:
        info = cls._describe(context, source)
        if not isinstance(context, str):
            info.images = find_images(context).text()
        return info

    @classmethod
    def _describe(cls, context: Any, source: str) -> ContextInfo:
        if context is None:
            return cls(type="NoneType", length=0, source=source)
        if isinstance(context, str):
            return cls(
                type="str", length=len(context), sha256=sha256_text(context), source=source,
                preview=preview(context, 160),
            )
        if isinstance(context, bytes):
            return cls(
                type="bytes", length=len(context), unit="bytes",
                sha256=hashlib.sha256(context).hexdigest(), source=source,
                preview=preview(context[:4096].decode("utf-8", "replace"), 160),
            )
        if isinstance(context, (list, tuple)):
            total = sum(len(x) if isinstance(x, (str, bytes)) else len(repr(x)) for x in context)
            digest = hashlib.sha256()
            for item in context:
                digest.update(str(item).encode("utf-8", "surrogatepass") + b"\x00")
            return cls(
                type=type(context).__name__, length=total, parts=len(context),
                sha256=digest.hexdigest(), source=source,
                preview=preview(str(context[0]) if context else "", 160),
            )
        if isinstance(context, dict):
            total = sum(len(str(k)) + len(str(v)) for k, v in context.items())
            digest = hashlib.sha256()
            for k, v in context.items():
                digest.update(f"{k}\x00{v}\x00".encode("utf-8", "surrogatepass"))
            return cls(
                type="dict", length=total, parts=len(context), sha256=digest.hexdigest(),
                source=source, preview=preview(", ".join(map(str, list(context)[:20])), 160),
            )
        text = repr(context)
        return cls(type=type(context).__name__, length=len(text), source=source,
                   preview=preview(text, 160))

    def summary(self) -> str:
        """The one line the root model is told about the context."""
        parts = f", {self.parts} items" if self.parts is not None else ""
        return f"type {self.type}{parts}, total length {self.length:,} {self.unit}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> ContextInfo:
        return _from_dict(cls, data or {})


@dataclass
class SubCall:
    """One ``llm()`` call (or one prompt of an ``llm_batch``). The full prompt lives in the session
    only; the record keeps it whole when short, else a preview plus length and hash."""

    call_id: str
    model: str
    depth: int = 1
    run_id: str = ""
    step: int | None = None
    batch_id: str | None = None
    batch_index: int | None = None
    prompt: str | None = None  # whole prompt when short
    prompt_preview: str = ""
    prompt_chars: int = 0
    prompt_sha256: str = ""
    response: str | None = None
    status: CallState = CallState.QUEUED
    error: str | None = None
    usage: Usage = field(default_factory=Usage)
    latency_s: float = 0.0
    cache_key: str = ""
    cached: bool = False
    edited: bool = False
    stale: bool = False  # its step was made stale by an edit of an earlier step
    #: The images sent with the prompt, in order: ImageInfo fields (sha256, mime, width, height,
    #: bytes) and a thumbnail ("thumb": base64, "thumb_mime"); never the images themselves.
    images: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.status = _call_state(self.status)

    def move(self, new: CallState) -> None:
        self.status = advance(self.status, new)

    def to_dict(self) -> dict[str, Any]:
        # Built directly (not dataclasses.asdict, which deep-copies): this runs twice per sub-call.
        d = {f: getattr(self, f) for f in _SUBCALL_FIELDS}
        d["status"] = str(self.status)
        d["usage"] = self.usage.to_dict()
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SubCall:
        obj = _from_dict(cls, data)
        obj.status = _call_state(data.get("status"))
        obj.usage = Usage.from_dict(data.get("usage"))
        return obj


_SUBCALL_FIELDS = tuple(f.name for f in fields(SubCall) if f.name != "usage")


@dataclass
class Step:
    """One root-model turn: its reply, the code it ran and what came back."""

    n: int
    reply: str = ""  # the model's raw reply (kept whole: replay serves it back)
    thought: str = ""  # the reply's prose, fences removed
    code: str | None = None
    outputs: list[dict[str, Any]] = field(default_factory=list)  # nbformat output dicts
    output_text: str = ""  # what the model was shown (already truncated)
    error: str | None = None  # "ExcName: message" when the code raised
    final: str | None = None  # set when this step ended the run
    usage: Usage = field(default_factory=Usage)
    latency_s: float = 0.0
    exec_s: float = 0.0
    cache_key: str = ""
    execution_count: int | None = None
    status: StepState = StepState.PROPOSED
    edited: bool = False
    nudge: str | None = None  # the message sent back when the reply had nothing to run
    finish_reason: str | None = None  # the server's; "length": cut at root_max_tokens
    streamed: bool = False  # its prose was shown live (so its thought cell exists)
    compaction: str | None = None  # what was elided from the model's view before this turn
    model: str = ""  # the model that wrote the reply
    reasoning: str = ""  # the reply's reasoning (<think>, reasoning_content): shown, never run
    best_effort: bool = False  # the one answer asked for after a budget ended the run

    def __post_init__(self) -> None:
        self.status = StepState(self.status)

    def move(self, new: StepState) -> None:
        self.status = advance(self.status, new)

    @property
    def live(self) -> bool:
        """Part of the trajectory as it now stands (not made stale by an earlier edit)."""
        return self.status != StepState.STALE

    @property
    def executed(self) -> bool:
        """Its code ran (or it had none): its output belongs in the model's history."""
        return self.status == StepState.DONE

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["status"] = str(self.status)
        d["usage"] = self.usage.to_dict()
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Step:
        obj = _from_dict(cls, data)
        obj.status = StepState(data.get("status") or StepState.PROPOSED)
        obj.usage = Usage.from_dict(data.get("usage"))
        return obj


@dataclass
class ForkOf:
    """Where a branch comes from: its first steps are another run's, re-executed from that run's
    record (no model call paid), and it went on live from there with its own settings.

    ``at`` is the parent's step number the branch forked after (0: nothing inherited, a fresh
    start of the same task). ``models`` says which root and sub models made the inherited steps,
    oldest first, as ``{"to": n, "model": m, "sub_model": s}`` (steps up to ``n``): replaying a
    branch re-executes those steps with the models whose calls were recorded, then its own. A fork
    of a fork inherits its parent's list, cut at ``at``, so a branch replays from its own record.
    """

    run: str
    at: int
    models: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"run": self.run, "at": self.at, "models": [dict(m) for m in self.models]}

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> ForkOf | None:
        if not data or "run" not in data:
            return None
        return cls(run=str(data["run"]), at=int(data.get("at", 0)),
                   models=[dict(m) for m in data.get("models", [])])


@dataclass
class Run:
    """A whole trajectory of one query at one depth.

    A branch (``fork_of`` set) is a root run like any other: its record holds every step, the
    inherited ones included, so it replays and compares on its own; ``branch`` is its label.
    """

    run_id: str
    query: str
    model: str = ""
    sub_model: str = ""
    depth: int = 0
    parent: str | None = None  # parent run id for rlm() recursion
    parent_step: int | None = None  # the parent's step whose code called rlm()
    context: ContextInfo = field(default_factory=ContextInfo)
    steps: list[Step] = field(default_factory=list)
    subcalls: dict[str, SubCall] = field(default_factory=dict)
    answer: str | None = None
    status: RunState = RunState.RUNNING
    stop_reason: str | None = None
    usage: Usage = field(default_factory=Usage)
    started: float = field(default_factory=time.time)
    ended: float | None = None
    active_s: float = 0.0  # time spent running, summed over its stretches (pauses excluded)
    resumed_at: float | None = None  # when the current running stretch began
    settings: dict[str, Any] = field(default_factory=dict)  # non-secret budgets and options
    children: list[str] = field(default_factory=list)
    best_effort: bool = False  # the answer was asked for after a budget ran out
    builds_on: list[str] = field(default_factory=list)  # earlier runs of a persistent session
    fork_of: ForkOf | None = None  # set on a branch: which run and step it forked from
    branch: str = ""  # a branch's label, shown in its cells and in comparisons
    superseded_by: str | None = None  # a later run of the same query cell replaced this one
    elided_through: int = 0  # steps up to this one are shown to the model compacted

    @property
    def inherited(self) -> int:
        """The parent's step number this branch forked after; 0 for a run that is no branch."""
        return self.fork_of.at if self.fork_of is not None else 0

    def __post_init__(self) -> None:
        self.status = RunState(self.status)

    def move(self, new: RunState) -> None:
        self.status = advance(self.status, new)

    def clock_start(self) -> None:
        """A running stretch begins (a start, a continue, a step)."""
        if self.resumed_at is None:
            self.resumed_at = time.time()

    def clock_stop(self) -> None:
        """A running stretch ends (a pause, the end): its time is added to ``active_s``."""
        if self.resumed_at is not None:
            self.active_s += max(0.0, time.time() - self.resumed_at)
            self.resumed_at = None

    @property
    def elapsed_s(self) -> float:
        """Active time: what the run spent running, not the time a human spent editing."""
        running = time.time() - self.resumed_at if self.resumed_at is not None else 0.0
        return self.active_s + running

    def tree(self, runs: dict[str, Run]) -> list[Run]:
        """This run and its rlm() descendants (the runs that share its budgets)."""
        out, todo = [], [self]
        while todo:
            run = todo.pop()
            out.append(run)
            todo += [runs[c] for c in run.children if c in runs]
        return out

    def step(self, n: int) -> Step | None:
        return next((s for s in self.steps if s.n == n), None)

    @property
    def live_steps(self) -> list[Step]:
        return [s for s in self.steps if s.live]

    @property
    def last_step_number(self) -> int:
        """Step numbers are never reused (stale steps keep theirs), so cell ids stay unique."""
        return max((s.n for s in self.steps), default=0)

    def mark_stale_after(self, n: int) -> list[Step]:
        """An edit of step ``n`` became the new truth: every later live step, and the sub-calls
        they made, no longer follow from the trajectory. Returns the steps made stale."""
        stale = [s for s in self.steps if s.n > n and s.live]
        for step in stale:
            step.move(StepState.STALE)
        numbers = {s.n for s in stale}
        for call in self.subcalls.values():
            if call.step in numbers:
                call.stale = True
        return stale

    def header_dict(self) -> dict[str, Any]:
        """Everything but the steps and sub-calls (the query cell's header)."""
        return {
            "run_id": self.run_id, "query": self.query, "model": self.model,
            "sub_model": self.sub_model, "depth": self.depth, "parent": self.parent,
            "parent_step": self.parent_step, "context": self.context.to_dict(),
            "answer": self.answer, "status": str(self.status), "stop_reason": self.stop_reason,
            "usage": self.usage.to_dict(), "started": self.started, "ended": self.ended,
            "active_s": self.elapsed_s,
            "settings": dict(self.settings), "children": list(self.children),
            "fork_of": self.fork_of.to_dict() if self.fork_of is not None else None,
            "branch": self.branch, "superseded_by": self.superseded_by,
            "best_effort": self.best_effort, "builds_on": list(self.builds_on),
            **({"elided_through": self.elided_through} if self.elided_through else {}),
        }

    def to_dict(self) -> dict[str, Any]:
        return {**self.header_dict(), "steps": [s.to_dict() for s in self.steps],
                "subcalls": {k: v.to_dict() for k, v in self.subcalls.items()}}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Run:
        run = _from_dict(cls, data)
        run.status = RunState(data.get("status") or RunState.RUNNING)
        run.resumed_at = None  # a loaded record is not running in this process
        if "active_s" not in data and run.ended:  # recorded before active time was kept
            run.active_s = max(0.0, run.ended - run.started)
        run.context = ContextInfo.from_dict(data.get("context"))
        run.steps = [Step.from_dict(s) for s in data.get("steps", [])]
        run.subcalls = {k: SubCall.from_dict(v) for k, v in data.get("subcalls", {}).items()}
        run.usage = Usage.from_dict(data.get("usage"))
        run.fork_of = ForkOf.from_dict(data.get("fork_of"))  # absent in files before branches
        return run


def _call_state(value: Any) -> CallState:
    """Records written before states were typed said "pending" for a queued call."""
    if value in (None, "pending"):
        return CallState.QUEUED
    return CallState(value)
