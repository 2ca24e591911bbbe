"""The names a run injects into a REPL namespace, and the state they share with the engine.

``context``, ``llm``, ``llm_batch`` (aliases ``llm_query``, ``llm_query_batched``), ``rlm``,
``rlm_batch`` (alias ``rlm_query_batched`` with the reference runtime's meaning, like
``rlm_query``), ``FINAL``, ``FINAL_VAR``, ``SHOW_VARS``, the custom tools, and the ``answer`` dict
(:mod:`~rlm_kernel.answer_dict`, not protected: models and humans use the name too). They are protected: if model code deletes or rebinds one,
:meth:`Repl.restore` puts it back after the step and the model is told.

``llm_batch`` semantics: every prompt is sent at once (bounded by the client's concurrency limit),
answers come back in prompt order. If some calls fail after the client's retries, the others still
complete and are cached, and ``LLMBatchError`` is raised with ``.results`` (None where a call failed)
and ``.errors``; re-running the batch pays only for the failures.

Images: ``llm(prompt, images=[...])``, and in ``llm_batch`` a prompt with images is a
``(text, images)`` pair or a ``{"prompt": text, "images": [...]}`` dict (:mod:`.subprompt`). Each
image is sized down to ``image_max_edge`` and sent as an ``image_url`` part; the cache key and the
record hold its hash, size and a thumbnail, and the session's :class:`ImageStore` keeps what was
sent so a ``%%llm --call`` cell can send it again.
"""

from __future__ import annotations

import concurrent.futures
import functools
import itertools
import sys
import threading
import time
import types
from collections.abc import Callable, Iterable, Iterator, Sized
from typing import Any

from .answer_dict import AnswerDict, bind_answer, release_answer, submitted
from .budgets import Budget
from .config import RLMConfig, redact
from .custom_tools import Tool
from .errors import (
    BudgetExceeded,
    LLMBatchError,
    ModelCallError,
    ReplayMissError,
    RLMError,
    RunStopped,
)
from .image_store import ImageStore
from .lm import Completion, LMClient
from .media import images_in
from .observer import RunObserver
from .outputs import clean_text
from .prompt_store import PromptStore
from .prompts import RLM_QUERY_TASK, final_var_missing_message
from .reasoning import split_reasoning
from .states import CallState
from .subprompt import SubPrompt, as_subprompt
from .trajectory import Run, SubCall, new_id, preview, sha256_text

__all__ = ["Repl", "PROTECTED_NAMES"]

PROTECTED_NAMES = (
    "context", "llm", "llm_batch", "llm_query", "llm_query_batched", "rlm", "rlm_batch",
    "rlm_query", "rlm_query_batched", "FINAL", "FINAL_VAR", "SHOW_VARS",
)
_HIDDEN_NAMES = {"In", "Out", "get_ipython", "exit", "quit", "open", "answer"}

#: Runs sub-RLMs (query, context) at a depth with an optional model, all at once; returns each
#: one's answer or the exception it ended with, in order.
ChildRunner = Callable[[list[tuple[str, Any]], int, "str | None"], list["str | BaseException"]]


class Repl:
    """Binds one run's REPL functions to a namespace (a dict, or the kernel's ``user_ns``).

    Longer than most classes here, on purpose: every name the model calls (``llm``,
    ``llm_batch``, ``rlm``, ``FINAL``...) shares one per-step state (the step's call numbering,
    its FINAL, the protected names) and one record (the run's sub-calls); split apart, each piece
    would need all of it back.
    """

    def __init__(
        self,
        namespace: dict[str, Any],
        *,
        context: Any,
        client: LMClient,
        config: RLMConfig,
        run: Run,
        budget: Budget,
        observer: RunObserver | None = None,
        child_runner: ChildRunner | None = None,
        prompt_store: PromptStore | None = None,
        image_store: ImageStore | None = None,
        tools: dict[str, Tool] | None = None,
    ) -> None:
        self.ns = namespace
        self.client = client
        self.config = config
        self.run = run
        self.depth = run.depth
        self.budget = budget
        self.observer = observer or RunObserver()
        self.child_runner = child_runner
        self.prompts = (prompt_store if prompt_store is not None
                        else PromptStore(lambda: config.keep_prompt_chars))
        self.images = (image_store if image_store is not None
                       else ImageStore(lambda: config.keep_image_bytes))
        self.final: str | None = None
        self.current_step: int | None = None
        # Calls are made only while the run (or a human's re-run of one of its steps) is going:
        # a thread the model's code started cannot keep billing after it.
        self.active = True
        self._seq: dict[tuple[str, int | None], int] = {}
        self._sent: dict[str, float] = {}  # call id -> when its request left
        self._lock = threading.Lock()
        self._baseline = set(namespace)
        self.bound: dict[str, Any] = {
            "context": context,
            "llm": self.llm,
            "llm_batch": self.llm_batch,
            "llm_query": self.llm,
            "llm_query_batched": self.llm_batch,
            "rlm": self.rlm,
            "rlm_batch": self.rlm_batch,
            "rlm_query": self.rlm_query,
            "rlm_query_batched": self.rlm_query_batched,
            "FINAL": self.FINAL,
            "FINAL_VAR": self.FINAL_VAR,
            "SHOW_VARS": self.SHOW_VARS,
            **{name: tool.value for name, tool in (tools or {}).items()},
        }
        namespace.update(self.bound)
        # The rlms convention's answer dict: a run's own, fresh (the session REPL has none).
        self.answer: AnswerDict | None = bind_answer(namespace) if run.run_id != "session" else None

    # -- protection ----------------------------------------------------------------------------
    def restore(self) -> list[str]:
        """Put back any protected name the last step deleted or rebound; return their names."""
        changed = [n for n, v in self.bound.items() if self.ns.get(n, _MISSING) is not v]
        for name in changed:
            self.ns[name] = self.bound[name]
        return changed

    def set_context(self, context: Any) -> None:
        self.bound["context"] = context
        self.ns["context"] = context

    # -- sub-calls -----------------------------------------------------------------------------
    def _check_enabled(self) -> None:
        """The no-sub-call ablation: say so in the traceback the model reads, make no call."""
        if not self.config.subcalls_enabled:
            raise RuntimeError(
                "sub-calls are switched off in this run (subcalls_enabled=False, the no-sub-call "
                "ablation): llm(), llm_batch() and rlm() make no model call. Work on `context` "
                "with code alone."
            )

    def _check_budgets(self, n: int) -> None:
        self._check_enabled()
        if not self.active:
            raise RunStopped(
                f"run {self.run.run_id} is not running (it ended or is paused); calls made for it "
                "now (e.g. from a thread its code started) are refused")
        if self.client.stopped:
            raise RunStopped("the run was stopped; no new model calls start")
        self.budget.check_all()
        self.budget.charge_subcalls(n)

    def _sending(self, call: SubCall) -> None:
        """Just before a call's request leaves (it has its concurrency slot): the run's budgets
        still allow it, and it is no longer queued but in flight."""
        self.budget.check_sending()
        call.move(CallState.INFLIGHT)
        self._sent[call.call_id] = time.perf_counter()

    def begin_step(self, n: int | None) -> None:
        """A step (re)starts: its sub-calls are numbered from 1 again.

        Ids are ``<run>-s<step>c<k>``: deterministic, so replaying or resuming a trajectory (or a
        human re-running a step) addresses the same cells, which front-ends update in place.
        """
        self.current_step = n
        self.final = None
        for key in [k for k in self._seq if k[1] == n]:
            del self._seq[key]

    def next_id(self, kind: str) -> str:
        if self.current_step is None or self.run.run_id == "session":
            return new_id(kind)
        with self._lock:
            key = (kind, self.current_step)
            self._seq[key] = self._seq.get(key, 0) + 1
            return f"{self.run.run_id}-s{self.current_step}{kind}{self._seq[key]}"

    def _subprompt(self, item: Any, images: Any = None, where: str = "the prompt") -> SubPrompt:
        return as_subprompt(item, images, store=self.images, max_edge=self.config.image_max_edge,
                            where=where)

    def _message(self, sp: SubPrompt) -> list[dict[str, Any]]:
        return [sp.message(self.config.image_detail)]

    def _new_call(self, sp: SubPrompt, model: str, batch_id: str | None = None,
                  index: int | None = None) -> SubCall:
        prompt = sp.text
        call = SubCall(
            call_id=self.next_id("c"), model=model, depth=self.depth + 1, run_id=self.run.run_id,
            step=self.current_step, batch_id=batch_id, batch_index=index,
            prompt=redact(prompt) if len(prompt) <= self.config.record_prompt_chars else None,
            prompt_preview=redact(preview(prompt, 400)), prompt_chars=len(prompt),
            prompt_sha256=sha256_text(prompt), status=CallState.QUEUED,
        )
        call.cache_key = self.client.key_for([sp.key_message(self.config.image_detail)], model)
        if sp.images:
            call.images = sp.records(self.images)
        self.prompts[call.call_id] = prompt
        with self._lock:
            self.run.subcalls[call.call_id] = call
        return call

    def _finish(self, call: SubCall, result: Completion | BaseException) -> None:
        if isinstance(result, Completion):
            call.response = redact(result.text)
            call.usage = result.usage
            call.latency_s = result.latency_s
            call.cached = result.cached
            call.move(CallState.OK)
            with self._lock:
                self.run.usage.add(result.usage)
        else:
            call.move(CallState.CANCELLED if isinstance(result, RunStopped) else CallState.ERROR)
            call.error = redact(str(result) or type(result).__name__)
            sent = self._sent.get(call.call_id)
            if sent is not None:  # time spent on the wire before it failed
                call.latency_s = time.perf_counter() - sent
        self._sent.pop(call.call_id, None)
        self.observer.subcall_finished(self.run, call)

    @property
    def sub_model(self) -> str:
        """The model of this run's sub-calls (``models``: the entry of depth+1)."""
        return self.config.model_at(self.depth + 1)

    def submitted(self) -> str | None:
        """The answer dict's content once ``answer["ready"]`` is set (rlms's way to finish)."""
        return submitted(self.ns, self.answer)

    def release(self) -> None:
        """The run's drive ended: ``answer`` gets back what it held before (unless rebound)."""
        release_answer(self.ns, self.answer)

    def llm(self, prompt: Any, *, images: Any = None, model: str | None = None) -> str:
        """Ask a sub-model, with ``images`` (PIL images, image bytes, paths...) if given; blocks
        this cell only (the kernel keeps serving its channels)."""
        sp = self._subprompt(prompt, images)
        self._check_budgets(1)
        model = model or self.sub_model
        call = self._new_call(sp, model)
        self.observer.subcall_started(self.run, call)
        try:
            result = self.client.loop.run(self.client.acomplete(
                self._message(sp), model=model, depth=self.depth + 1, key=call.cache_key,
                precheck=functools.partial(self._sending, call)))
        except ModelCallError as exc:
            self._finish(call, exc)
            # Named, so a traceback in a step says which call (its %%llm cell has the id).
            raise type(exc)(f"sub-call {call.call_id}: {exc}",
                            status_code=exc.status_code) from None
        except (ReplayMissError, RunStopped) as exc:
            self._finish(call, exc)
            raise
        except BaseException:
            self._finish(call, RunStopped("interrupted"))
            raise
        self._finish(call, result)
        return _visible(result.text)

    def llm_batch(self, prompts: Any, *, model: str | None = None) -> list[str]:
        """Ask a sub-model about every prompt at once; answers in prompt order.

        A list (or any sized collection) is sent whole. A generator (any iterator) is consumed
        lazily: the next prompt is built only when one of ``concurrency`` slots frees, so a batch
        over a huge context never holds more than that many prompts at a time (and, with images,
        that many prompts' images: give a generator when the images add up to a lot).
        A prompt is a string, a ``(text, images)`` pair or a ``{"prompt", "images"}`` dict.
        """
        if isinstance(prompts, (str, bytes)) or not isinstance(prompts, Iterable):
            raise TypeError("llm_batch expects a list of prompts; for one prompt use llm(prompt)")
        if not isinstance(prompts, Sized):
            return self._answers(self._stream(iter(prompts), model or self.sub_model))
        sps = [self._subprompt(p, where=f"llm_batch prompt {i}") for i, p in enumerate(prompts)]
        if not sps:
            return []
        self._check_budgets(len(sps))
        model = model or self.sub_model
        batch_id = self.next_id("b")
        calls = [self._new_call(sp, model, batch_id, i) for i, sp in enumerate(sps)]

        def done(i: int, result: Completion | BaseException) -> None:
            self._finish(calls[i], result)

        # Requests leave first; the cells are announced while they are in flight (a call may
        # even finish before its cell is announced: observers must take either order).
        fut = self.client.loop.submit(self.client.acomplete_many(
            [self._message(sp) for sp in sps], model=model, depth=self.depth + 1, on_done=done,
            keys=[c.cache_key for c in calls], precheck=lambda i: self._sending(calls[i]),
        ))
        try:
            for call in calls:
                self.observer.subcall_started(self.run, call)
            results = self.client.loop.wait(fut)
        except BaseException:
            fut.cancel()
            for call in calls:
                if not call.status.settled:
                    self._finish(call, RunStopped("interrupted"))
            raise
        return self._answers(results)

    def _stream(self, prompts: Iterator[Any], model: str) -> list[Completion | BaseException]:
        """``llm_batch`` over an iterator: pull a prompt per free slot, in this (the cell's) thread.

        The generator is user code, so it runs here, never on the loop thread. Calls leave one by
        one as slots free; each gets its cell as it starts. If pulling the next prompt fails (the
        generator raised, a budget ran out), the calls already sent are let finish (they are paid
        for, and cached for a re-run) and the error is raised; an interrupt or Stop cancels them.
        """
        slots = threading.Semaphore(max(1, int(self.config.concurrency)))
        futures: list[concurrent.futures.Future[Completion]] = []
        batch_id: str | None = None

        def settle(call: SubCall, fut: concurrent.futures.Future[Completion]) -> None:
            if not call.status.settled:
                self._finish(call, _outcome(fut))
            slots.release()

        try:
            try:
                for index in itertools.count():
                    self._take(slots)  # before building the prompt: at most `slots` exist
                    try:
                        sp = self._subprompt(next(prompts), where=f"llm_batch prompt {index}")
                        self._check_budgets(1)
                    except StopIteration:
                        slots.release()
                        break
                    except BaseException:
                        slots.release()
                        raise
                    batch_id = batch_id or self.next_id("b")
                    call = self._new_call(sp, model, batch_id, index)
                    fut = self.client.loop.submit(self.client.acomplete(
                        self._message(sp), model=model, depth=self.depth + 1, key=call.cache_key,
                        precheck=functools.partial(self._sending, call)))
                    del sp
                    futures.append(fut)
                    self.observer.subcall_started(self.run, call)
                    fut.add_done_callback(functools.partial(settle, call))
            except RunStopped:
                raise
            except Exception:  # not an interrupt or a timeout: those cancel what is in flight
                self._wait_all(futures)  # paid for: let them land in the cache, then report
                raise
            self._wait_all(futures)
        except BaseException:
            for fut in futures:
                fut.cancel()  # runs ``settle`` here for every call still in flight
            raise
        return [_outcome(fut) for fut in futures]

    def _take(self, slots: threading.Semaphore) -> None:
        """Take a slot; Ctrl-C, a step timeout or Stop still get through while waiting."""
        while not slots.acquire(timeout=0.1):
            if self.client.stopped:
                raise RunStopped("the run was stopped; no new model calls start")

    def _wait_all(self, futures: list[concurrent.futures.Future[Completion]]) -> None:
        pending = set(futures)
        while pending:
            _, pending = concurrent.futures.wait(pending, timeout=0.1)

    def _answers(self, results: list[Completion | BaseException]) -> list[str]:
        """Answers in prompt order; a stop or a spent budget (calls left unsent) ends the batch."""
        answers: list[str | None] = []
        errors: dict[int, str] = {}
        for i, res in enumerate(results):
            if isinstance(res, Completion):
                answers.append(_visible(res.text))
            else:
                if isinstance(res, (RunStopped, BudgetExceeded)):
                    raise res
                answers.append(None)
                errors[i] = str(res)
        if errors:
            raise LLMBatchError(answers, errors)
        return [a for a in answers if a is not None]

    # -- recursion -----------------------------------------------------------------------------
    def rlm(self, query: str, context: Any = None, *, model: str | None = None) -> str:
        """A sub-RLM over ``context`` at depth+1; at the depth limit, a plain ``llm`` call (sent
        the context's images too, since its text shows only their sizes and hashes)."""
        return self.rlm_batch([query], [context], model=model)[0]

    def rlm_batch(self, queries: Any, contexts: Any = None, *,
                  model: str | None = None) -> list[str]:
        """Sub-RLMs at depth+1, all at once (at most ``concurrency`` running, sharing the run's
        budgets and the client's limits); answers in the order of ``queries``. ``contexts[i]``
        is the context of ``queries[i]``; None gives each this run's ``context``. At the depth
        limit each becomes a plain ``llm`` call. If some fail, ``LLMBatchError`` carries the
        others' answers (``.results``) and the failures (``.errors``)."""
        self._check_enabled()
        if isinstance(queries, (str, bytes)) or not isinstance(queries, Iterable):
            raise TypeError("rlm_batch expects a list of queries; for one query use rlm(query)")
        qs = [_as_prompt(q) for q in queries]
        if contexts is None:
            ctxs: list[Any] = [self.bound["context"]] * len(qs)
        else:
            ctxs = list(contexts)
            if len(ctxs) != len(qs):
                raise ValueError(f"rlm_batch got {len(qs)} queries but {len(ctxs)} contexts")
        if not qs:
            return []
        if self.depth + 1 > self.config.max_depth or self.child_runner is None:
            prompts: list[Any] = []
            for q, c in zip(qs, ctxs, strict=True):
                text = q if c is None else f"{q}\n\n{c}"
                images = images_in(c) if c is not None else None
                prompts.append((text, images) if images else text)
            return self.llm_batch(prompts, model=model)
        self.budget.check_all()
        results = self.child_runner(list(zip(qs, ctxs, strict=True)), self.depth + 1, model)
        return self._child_answers(results)

    def rlm_query(self, prompt: Any, model: str | None = None) -> str:
        """The reference runtime's ``rlm_query``: a sub-RLM whose context is ``prompt`` (it reads
        its task there); at the depth limit, ``llm(prompt)``."""
        return self.rlm_query_batched([prompt], model)[0]

    def rlm_query_batched(self, prompts: Any, model: str | None = None) -> list[str]:
        """The reference runtime's ``rlm_query_batched``: :meth:`rlm_query` for each prompt, all
        at once (:meth:`rlm_batch`)."""
        if isinstance(prompts, (str, bytes)) or not isinstance(prompts, Iterable):
            raise TypeError("rlm_query_batched expects a list of prompts; for one use rlm_query")
        texts = [_as_prompt(p) for p in prompts]
        if self.depth + 1 > self.config.max_depth or self.child_runner is None:
            return self.llm_batch(texts, model=model) if texts else []
        return self.rlm_batch([RLM_QUERY_TASK] * len(texts), texts, model=model)

    def _child_answers(self, results: list[str | BaseException]) -> list[str]:
        answers: list[str | None] = []
        errors: dict[int, str] = {}
        for i, res in enumerate(results):
            if isinstance(res, BaseException):
                if isinstance(res, (RunStopped, BudgetExceeded, KeyboardInterrupt)):
                    raise res
                answers.append(None)
                errors[i] = str(res)
            else:
                answers.append(res)
        if errors:
            if len(results) == 1:
                raise RLMError(errors[0])
            raise LLMBatchError(answers, errors)
        return [a for a in answers if a is not None]

    # -- finishing -----------------------------------------------------------------------------
    def FINAL(self, answer: Any) -> None:  # noqa: N802 - the name the paper and models use
        """End the run with ``answer`` once this step finishes (authoritative over prose)."""
        self.final = answer_text(answer)

    def FINAL_VAR(self, name: Any) -> None:  # noqa: N802
        """End the run with the value of the REPL variable ``name``."""
        if isinstance(name, str) and name.strip().isidentifier():
            key = name.strip()
            if key not in self.ns:
                raise NameError(final_var_missing_message(key, self.user_vars()))
            value = self.ns[key]
        else:
            value = name  # given the value itself rather than its name: accept it
        self.final = answer_text(value)

    def resolve_final_var(self, name: str) -> str:
        """FINAL_VAR written in prose, resolved after the step's code ran (a NameError or a
        ValueError that says what is wrong is the model's to read)."""
        self.FINAL_VAR(name)
        assert self.final is not None
        return self.final

    def user_vars(self) -> list[str]:
        return sorted(
            n for n in self.ns
            if not n.startswith("_") and n not in self.bound and n not in _HIDDEN_NAMES
            and n not in self._baseline and not isinstance(self.ns[n], types.ModuleType)
        )

    def SHOW_VARS(self) -> None:  # noqa: N802
        """Print the variables the model has made, with their types and sizes."""
        names = self.user_vars()
        if not names:
            print("No variables yet.")
            return
        for n in names:
            v = self.ns[n]
            size = f", len {len(v):,}" if hasattr(v, "__len__") and not callable(v) else ""
            print(f"{n}: {type(v).__name__}{size}")


class _Missing:
    pass


_MISSING = _Missing()


def _as_prompt(prompt: Any) -> str:
    if isinstance(prompt, str):
        return prompt
    if isinstance(prompt, bytes):
        return prompt.decode("utf-8", "replace")
    return str(prompt)


def _visible(text: str) -> str:
    """A sub-call's answer without its reasoning (``<think>`` blocks, reasoning_content)."""
    return split_reasoning(text)[1]


def _outcome(fut: concurrent.futures.Future[Completion]) -> Completion | BaseException:
    """A finished call's result, or the exception it ended with (cancelled: stopped)."""
    if fut.cancelled():
        return RunStopped("interrupted")
    exc = fut.exception()
    return exc if exc is not None else fut.result()


def answer_text(value: Any) -> str:
    """The text of an answer given to FINAL / FINAL_VAR.

    A numpy array is written out whole (its ``str`` elides the middle of a large one, silently);
    a value whose ``str`` raises is reported to the model as a ValueError that says so; lone
    surrogates are replaced so the answer can be sent and saved.
    """
    if isinstance(value, str):
        return clean_text(value)
    try:
        if type(value).__module__.split(".")[0] == "numpy" and hasattr(value, "shape"):
            import numpy

            return clean_text(numpy.array2string(value, threshold=sys.maxsize))
        return clean_text(str(value))
    except Exception as exc:
        raise ValueError(
            f"the answer ({type(value).__name__}) could not be turned into text: "
            f"{type(exc).__name__}: {exc}; pass FINAL a string") from None
