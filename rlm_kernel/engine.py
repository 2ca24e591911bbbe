"""The RLM root loop, independent of Jupyter.

Each turn: check budgets and the human's controls, ask the root model (the history is append-only,
so a provider's prefix cache hits on every turn), parse the reply, run its code through the
:class:`~rlm_kernel.executor.Executor`, and feed the output back (head+tail truncated) until a FINAL
or a budget ends the run (then, unless ``best_effort`` is off, the model is asked once for its best
answer). ``rlm()`` / ``rlm_batch()`` inside a step start child engines at depth+1, in worker
threads, that share the client, the budgets and the observer.

A reply is read in three layers: its reasoning (``<think>`` blocks, ``reasoning_content``) is
split off first and never parsed or sent back; tool calls (``mode = tools``) read as the fenced
blocks they stand for (:mod:`~rlm_kernel.tool_mode`); the rest is parsed as usual. Which of the
ways to finish wins when one step has several: ``FINAL``/``FINAL_VAR`` called from code, then the
``answer`` dict (rlms), then ``FINAL``/``FINAL_VAR`` in prose.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from .budgets import Budget
from .config import RLMConfig, redact, redact_json
from .custom_tools import Tool, tools_prompt_section
from .errors import (
    BudgetExceeded,
    ContextWindowExceeded,
    ModelCallError,
    ReplayMissError,
    RLMError,
    RunStopped,
    WallTimeExceeded,
)
from .executor import Executor, InProcessExecutor
from .image_store import ImageStore
from .lm import Completion, LMClient, system_dropped, window_from_error
from .observer import RunObserver
from .outputs import outputs_to_text, sanitize_outputs, truncate
from .parsing import parse_reply
from .prompt_store import PromptStore
from .prompts import (
    best_effort_message,
    cut_reply_note,
    elided_output,
    first_user_message,
    instructions_as_user,
    nudge_message,
    step_feedback,
    system_prompt,
)
from .reasoning import split_reasoning
from .repl import Repl
from .states import RunState, StepState
from .tool_mode import decode, history_messages, reply_parts
from .trajectory import ContextInfo, Run, Step, Usage

#: Seconds the one best-effort call may take (it follows a spent budget: keep it short).
BEST_EFFORT_TIMEOUT_S = 60.0
#: The least time a best-effort answer gets after the wall-time budget ran out.
BEST_EFFORT_MIN_S = 2.0
#: Replay by recorded order (imported runs): path of a run in its tree -> its root replies.
Script = dict[str, list[str]]

__all__ = ["Engine", "Controller", "build_history", "edited_reply", "instructions_in_user",
           "reply_parts", "Script"]

log = logging.getLogger("rlm_kernel")

#: Characters per token assumed for a window estimate until a call's usage tells the real ratio
#: (on the low side: an estimate should overflow the window late rather than early).
_CHARS_PER_TOKEN = 3.0
#: Compaction starts when the estimated prompt passes this share of the window and elides older
#: steps until it is under ``_COMPACT_TO``: the rest is room for the reply.
_COMPACT_AT, _COMPACT_TO = 0.75, 0.5
#: How often a streamed reply's text so far is sent to the views (seconds).
_LIVE_S = 0.1


@dataclass
class Controller:
    """The human's hands on a live run: pause at the next step boundary, step mode, stop."""

    step_mode: bool = False
    pause_requested: bool = False
    stop_requested: bool = False
    events: list[str] = field(default_factory=list)

    def request(self, action: str) -> None:
        self.events.append(action)
        if action == "pause":
            self.pause_requested = True
        elif action == "stop":
            self.stop_requested = True
        elif action == "step":
            self.step_mode = True
            self.pause_requested = False
        elif action == "continue":
            self.step_mode = False
            self.pause_requested = False


def edited_reply(step: Step) -> str:
    """The assistant turn for a step the human edited: its prose plus the code as it now stands."""
    prose = step.thought.strip()
    return f"{prose}\n```repl\n{step.code or ''}\n```" if prose else f"```repl\n{step.code or ''}\n```"


def instructions_in_user(run: Run, config: RLMConfig) -> bool:
    """The REPL instructions go in the first user message (``system_role = user``, or ``auto``
    after this run's server was seen to drop system messages, recorded in the run)."""
    return config.system_role == "user" or run.settings.get("system_role") == "user"


def _history_turn(step: Step, config: RLMConfig) -> list[dict[str, Any]]:
    """Step ``n``'s assistant turn and what came back, as sent to the model: never its
    reasoning; its tool calls as tool calls (with ids made from ``n``), else its text."""
    feedback = _feedback(step, config)
    if step.edited:
        return [{"role": "assistant", "content": edited_reply(step)},
                {"role": "user", "content": feedback}]
    content, calls = decode(split_reasoning(step.reply)[1])
    if calls:
        return history_messages(step.n, content, calls, feedback)
    return [{"role": "assistant", "content": content}, {"role": "user", "content": feedback}]


def build_history(run: Run, config: RLMConfig, *, tools: dict[str, Tool] | None = None,
                  runs: dict[str, Run] | None = None) -> list[dict[str, Any]]:
    """The root conversation implied by a run's recorded (non-stale, executed) steps.

    Unedited steps reproduce the original messages byte for byte, so the prefix cache still hits
    after a resume; an edited step contributes its new code and its new output. Steps up to
    ``run.elided_through`` (compacted to fit the window) contribute their code and a one-line
    stand-in for their output. ``runs``: where the earlier runs a persistent query builds on
    are found.
    """
    earlier = [(r.run_id, r.query, r.answer) for r in
               (runs.get(i) for i in run.builds_on) if r is not None] if runs else []
    system = system_prompt(run.context, config.sub_window, config.subcalls_enabled,
                           config.image_max_edge, config.sandboxed,
                           tools=tools_prompt_section(tools or {}), mode=config.mode)
    first = first_user_message(run.query, run.context, config.max_steps, earlier or None)
    messages: list[dict[str, Any]] = (
        [{"role": "user", "content": instructions_as_user(system, first)}]
        if instructions_in_user(run, config) else
        [{"role": "system", "content": system}, {"role": "user", "content": first}])
    for step in run.steps:
        if not step.executed or step.best_effort:
            continue
        if step.n <= run.elided_through:
            code = f"```repl\n{step.code}\n```" if step.code is not None else "(no code)"
            messages.append({"role": "assistant", "content": code})
            messages.append({"role": "user", "content": elided_output(step.n,
                                                                      len(step.output_text))})
            continue
        messages += _history_turn(step, config)
    return messages


def _feedback(step: Step, config: RLMConfig) -> str:
    if step.nudge is not None:
        return step.nudge
    return step_feedback(step.n, step.output_text, steps_left=max(0, config.max_steps - step.n))


class Engine:
    """One run's root loop: propose (ask the root model), execute (the step's code in the REPL),
    feed back, until FINAL or a budget.

    Longer than most classes here on purpose: the loop's stages (budgets, the human's controls,
    fitting the history to the window, a streamed or cut reply, re-executing recorded steps of a
    fork or replay, the best-effort ask) share the run's mutable state and their order is the
    algorithm; split across classes, that order would be spread over call-backs. What does not
    need the state lives outside: parsing, prompts, budgets, outputs, the executor, the client.
    """

    def __init__(
        self,
        *,
        client: LMClient,
        config: RLMConfig,
        run: Run,
        executor: Executor,
        context: Any,
        budget: Budget | None = None,
        observer: RunObserver | None = None,
        controller: Controller | None = None,
        runs: dict[str, Run] | None = None,
        prompt_store: PromptStore | None = None,
        recorded: Sequence[Step] = (),
        recorded_only: bool = False,
        image_store: ImageStore | None = None,
        tools: dict[str, Tool] | None = None,
        script: Script | None = None,
        script_path: str = "",
        child_repls: dict[str, Repl] | None = None,
    ) -> None:
        """``recorded``: steps (as recorded) to re-execute before asking the model anything, a
        fork's inherited steps: each is proposed from its record, not by a model call, run as
        usual, and must give the recorded output, else the run ends in an error (the branch
        would not be what it says it is). ``recorded_only``: return once they are done, the run
        still running, so the caller can go on with other models (the next segment of a fork,
        or its live part)."""
        self.client = client
        self.config = config
        self.run = run
        self.executor = executor
        self.budget = budget or Budget(config, client.ledger)
        self.observer = observer or RunObserver()
        self.controller = controller or Controller()
        self.runs = runs if runs is not None else {}
        self.runs[run.run_id] = run
        self.prompt_store = prompt_store
        self.image_store = image_store
        self.tools = tools or {}
        self.script = script
        self.script_path = script_path
        #: The REPL of every sub-RLM of this run tree, by run id (shared down the tree).
        self.child_repls: dict[str, Repl] = child_repls if child_repls is not None else {}
        self.repl = Repl(
            executor.namespace, context=context, client=client, config=config, run=run,
            budget=self.budget, observer=self.observer, child_runner=self._run_children,
            prompt_store=prompt_store, image_store=image_store, tools=self.tools,
        )
        self.messages = self._history()
        self._recorded = deque(recorded)
        self._expected: dict[int, Step] = {}  # re-executed step number -> its record
        self.recorded_only = recorded_only
        self._cpt = _CHARS_PER_TOKEN

    def _history(self) -> list[dict[str, Any]]:
        return build_history(self.run, self.config, tools=self.tools, runs=self.runs)

    # -- the loop ------------------------------------------------------------------------------
    async def arun(self) -> Run:
        """Run (or resume) until FINAL, a budget, a pause or a stop; always returns the run."""
        run = self.run
        run.move(RunState.RUNNING)
        run.stop_reason, run.ended = None, None
        run.clock_start()
        self.repl.active = True
        self.messages = self._history()
        self.observer.run_started(run)
        handed_over = False
        try:
            while True:
                if self.controller.stop_requested:
                    raise RunStopped("stopped by the user")
                self.budget.check_all()
                last = run.steps[-1] if run.steps else None
                pending = last if last is not None and last.status == StepState.PROPOSED else None
                if pending is None and self.recorded_only and not self._recorded:
                    handed_over = True
                    return run
                if pending is None:
                    if self.controller.pause_requested:
                        self.controller.pause_requested = False
                        return self._pause("paused by the user; %rlm continue resumes")
                    # Step numbers are never reused (stale steps keep theirs), and each one was a
                    # paid root turn: the step budget counts them all.
                    self.budget.check_steps(run.last_step_number)
                    pending = await self._propose()
                    # Step mode stops at what the model proposes, not at a re-executed record.
                    if self.controller.step_mode and pending.code is not None \
                            and pending.n not in self._expected:
                        return self._pause(
                            f"step mode: step {pending.n} is proposed, not run; edit and run its "
                            "cell, or %rlm continue / %rlm step"
                        )
                if await self._execute(pending):
                    self._end(RunState.FINAL, None)
                    return run
        except BudgetExceeded as exc:
            if await self._best_effort(exc.reason, wall=isinstance(exc, WallTimeExceeded)):
                self._end(RunState.FINAL, f"best-effort answer: {exc.reason}")
            else:
                self._end(RunState.STOPPED, exc.reason)
        except (RunStopped, KeyboardInterrupt) as exc:
            self._end(RunState.STOPPED, str(exc) or "interrupted")
        except asyncio.CancelledError:
            self._end(RunState.STOPPED, "interrupted")
            raise
        except (ModelCallError, ReplayMissError) as exc:
            self._end(RunState.ERROR, str(exc))
        except RLMError as exc:
            self._end(RunState.ERROR, str(exc))
        finally:
            self.repl.active = False
            self.repl.release()
            if handed_over:
                pass  # still running: the caller goes on with the next drive of this run
            elif run.status == RunState.RUNNING:  # left by an exception none of the above caught
                self._end(RunState.ERROR, "internal error (the kernel log has the traceback)")
            if not handed_over and run.status != RunState.PAUSED:
                self.observer.run_finished(run)
        return run

    def _pause(self, reason: str) -> Run:
        self.run.move(RunState.PAUSED)
        self.run.stop_reason = reason
        self.run.clock_stop()
        self.observer.run_finished(self.run)
        return self.run

    def _end(self, state: RunState, reason: str | None) -> None:
        run = self.run
        run.move(state)
        run.stop_reason = reason
        run.clock_stop()
        run.ended = time.time()
        for step in run.steps:
            if step.status == StepState.RUNNING:
                step.move(StepState.DONE)

    @property
    def model(self) -> str:
        return self.run.model or self.config.model_at(self.run.depth)

    async def _propose(self) -> Step:
        """Ask the root model for step n: fit the window, stream the reply to the views, read it.

        At most one retry, after a context overflow (the window learned from the error, older
        steps compacted). A failed call's error names the call: ``root step n``.
        """
        run = self.run
        if self._recorded:
            record = self._recorded.popleft()  # from the record: no model call, nothing paid
            step = Step(n=record.n, reply=record.reply, thought=record.thought, code=record.code,
                        cache_key=record.cache_key, edited=record.edited, model=record.model,
                        reasoning=record.reasoning, finish_reason=record.finish_reason)
            self._expected[record.n] = record
            run.steps.append(step)
            self.observer.step_proposed(run, step)
            return step
        n = run.last_step_number + 1
        if self.client.loop.in_loop_thread:
            raise RuntimeError("the engine cannot run on the model client's own loop")
        if (self.config.system_role == "auto" and self.client.system_dropped
                and not instructions_in_user(run, self.config)):
            self._instructions_to_user()
        window = self.config.context_window or self.client.window
        if not window and not (self.config.scripted or self.client.cache_only
                               or self._scripted_reply(n) is not None):
            window = await self.client.loop.wrap(self.client.amodel_window(self.model))
        compaction = self._fit(window, n) if window else None
        live = _LiveText(self.observer, run, n)
        try:
            comp, compaction = await self._attempts(window, live, n, compaction)
        except BaseException as exc:
            live.abandon(exc)  # its thought cell must not say "writing…" forever
            raise
        await self._learn(comp)
        cut = comp.finish_reason == "length"
        reasoning, fenced, _ = reply_parts(comp.text)
        parsed = parse_reply(fenced, cut=cut)
        step = Step(n=n, reply=comp.text, thought=parsed.prose.strip(), code=parsed.code,
                    usage=comp.usage, latency_s=comp.latency_s, cache_key=comp.cache_key,
                    model=comp.model, reasoning=reasoning, finish_reason=comp.finish_reason,
                    streamed=live.shown, compaction=compaction)
        run.steps.append(step)
        run.usage.add(comp.usage)
        self.observer.step_proposed(run, step)
        return step

    async def _attempts(self, window: int | None, live: _LiveText, n: int,
                        compaction: str | None) -> tuple[Completion, str | None]:
        """The root call, asked again once after a context overflow (the window learned from the
        error, older steps compacted); a failure's message names the call."""
        for attempt in (1, 2):
            try:
                comp = await self._ask(list(self.messages), n, self.budget.remaining_time(),
                                       window=window, live=live)
                return comp, compaction
            except TimeoutError:
                self.budget.check_wall()
                raise
            except ContextWindowExceeded as exc:
                learned = window_from_error(str(exc)) or int(self._estimate() * 0.9)
                note = self._fit(learned, n) if attempt == 1 else None
                if note is None:
                    raise ContextWindowExceeded(
                        f"root step {n}: {exc}. The history no longer fits even with older steps "
                        "compacted: lower output_chars, set context_window to the model's real "
                        "window, or use a model with a larger one", status_code=exc.status_code,
                    ) from None
                window = self.client.window = learned
                compaction = note
            except ModelCallError as exc:
                raise type(exc)(f"root step {n}: {exc}", status_code=exc.status_code) from None
        raise AssertionError("unreachable: the second attempt returns or raises")

    def _scripted_reply(self, n: int) -> str | None:
        """Step ``n``'s reply from the replay script (imported runs), if there is one."""
        replies = self.script.get(self.script_path) if self.script is not None else None
        return replies[n - 1] if replies is not None and n - 1 < len(replies) else None

    async def _ask(self, messages: list[dict[str, Any]], n: int, timeout: float | None, *,
                   window: int | None = None, live: _LiveText | None = None) -> Completion:
        """The root model's reply for step ``n`` (from the replay script when there is one), with
        ``timeout`` as its deadline: past it the call is cancelled, which closes its stream and
        frees the server. ``window``: the reply's token bound is never more than it has left
        (vLLM refuses that); ``live``: where a streamed reply's text goes as it arrives."""
        scripted = self._scripted_reply(n)
        if scripted is not None:
            return Completion(scripted, self.model, Usage(), 0.0, "", True)
        if self.client.loop.in_loop_thread:
            raise RuntimeError("the engine cannot run on the model client's own loop")
        bound = self.config.root_max_tokens
        if window and bound:
            bound = max(16, min(bound, window - self._estimate() - 16))
        call = self.client.acomplete(messages, model=self.model, depth=self.run.depth, root=True,
                                     max_tokens=bound,
                                     on_text=live.feed if live is not None else None)
        waiter = self.client.loop.wrap(call)
        return await (asyncio.wait_for(waiter, timeout) if timeout is not None else waiter)

    # -- the window and the instructions -------------------------------------------------------
    def _estimate(self) -> int:
        """Tokens of the current history, from its characters and the last measured ratio."""
        chars = sum(len(str(m.get("content", ""))) for m in self.messages)
        return int(chars / self._cpt) + 4 * len(self.messages)

    def _fit(self, window: int, n: int) -> str | None:
        """Compact older steps until the history leaves room for a reply; the note saying what
        the model no longer sees (shown as a cell), or None when there was nothing to elide."""
        if self._estimate() <= _COMPACT_AT * window:
            return None
        run = self.run
        done = [s.n for s in run.steps if s.executed and s.n > run.elided_through]
        before = self._estimate()
        # Keep the latest executed step whole: the model needs at least its last output.
        for k in done[:-1]:
            run.elided_through = k
            self.messages = self._history()
            if self._estimate() <= _COMPACT_TO * window:
                break
        if self._estimate() >= before:
            return None
        note = (f"Before step {n}: the outputs of steps 1–{run.elided_through} were elided from "
                f"the model's view (its history, about {before:,} tokens, outgrew {_COMPACT_AT:.0%}"
                f" of its {window:,}-token window; now about {self._estimate():,}). Their code "
                "and the REPL variables they made remain.")
        log.info("rlm: run %s: %s", run.run_id, note)
        self.observer.history_compacted(run, n, note)
        return note

    async def _learn(self, comp: Completion) -> None:
        """From a root call's usage: the characters-per-token ratio (window estimates), and on
        the run's first call whether the server dropped the system message."""
        prompt = comp.usage.prompt_tokens
        first = len(self.messages) == 2 and self.messages[0]["role"] == "system"
        if prompt > 0 and not comp.cached:
            chars = sum(len(str(m.get("content", ""))) for m in self.messages)
            if not (first and system_dropped(prompt, len(self.messages[0]["content"]))):
                self._cpt = max(1.0, chars / prompt)
        if not first or self.config.system_role != "auto" or comp.cached:
            return
        if prompt > 0:
            dropped: bool | None = system_dropped(prompt, len(self.messages[0]["content"]))
        else:  # no usage (a llama.cpp stream): one tiny call tells
            dropped = await self.client.loop.wrap(self.client.adrops_system(
                self.model, self.run.depth))
        if dropped:
            self.client.system_dropped = True
            self._instructions_to_user()

    def _instructions_to_user(self) -> None:
        """From the next call on, the instructions go in the first user message (recorded in the
        run's settings, so a resume or replay builds the same history)."""
        self.run.settings["system_role"] = "user"
        self.messages = self._history()
        log.warning("rlm: run %s: the server dropped the system message (its prompt tokens "
                    "show it); the REPL instructions now go in the first user message. Set "
                    "system_role = user to start that way.", self.run.run_id)

    async def _best_effort(self, reason: str, *, wall: bool = False) -> bool:
        """A budget ended the run without an answer: ask once for the best answer from what the
        model has (bounded by :data:`BEST_EFFORT_TIMEOUT_S`); True if it gave one. ``wall``: the
        budget was the wall time, and the ask gets only a tenth of it more (at least
        :data:`BEST_EFFORT_MIN_S`): a run told to end after 20 s ends near 20 s."""
        run = self.run
        if (not self.config.best_effort or run.answer is not None
                or self.controller.stop_requested or self.client.stopped):
            return False
        n = run.last_step_number + 1
        messages = [*self.messages, {"role": "user", "content": best_effort_message(reason)}]
        try:
            bound = min(BEST_EFFORT_TIMEOUT_S, self.config.call_timeout)
            if wall:
                bound = min(bound, max(BEST_EFFORT_MIN_S, 0.1 * self.config.max_wall_time))
            comp = await self._ask(messages, n, bound)
        except (ModelCallError, ReplayMissError, RunStopped, TimeoutError):
            return False
        reasoning, fenced, calls = reply_parts(comp.text)
        parsed = parse_reply(fenced)
        answer = parsed.final
        if answer is None and parsed.final_var is not None:
            answer = self.repl.ns.get(parsed.final_var)
        if answer is None and parsed.code:  # a final tool call (or FINAL in code): read it
            for call in reversed(calls):
                args = call.get("arguments")
                if isinstance(args, str) and '"answer"' in args:
                    answer = decode_answer(args)
                    break
        if answer is None:
            answer = parsed.prose.strip() or None
        if answer is None:
            return False
        answer = redact(str(answer))
        step = Step(n=n, reply=comp.text, thought=parsed.prose.strip(), code=None,
                    usage=comp.usage, latency_s=comp.latency_s, cache_key=comp.cache_key,
                    model=comp.model, reasoning=reasoning, best_effort=True, final=answer,
                    output_text="", status=StepState.DONE)
        run.steps.append(step)
        run.usage.add(comp.usage)
        run.answer, run.best_effort = answer, True
        self.observer.step_proposed(run, step)
        self.observer.step_finished(run, step)
        return True

    async def _execute(self, step: Step) -> bool:
        """Run a proposed step; True when it ended the run."""
        run = self.run
        cut = step.finish_reason == "length" and not step.edited
        parsed = parse_reply(reply_parts(step.reply)[1], cut=cut) if not step.edited else \
            parse_reply(edited_reply(step))
        step.move(StepState.RUNNING)
        self.repl.begin_step(step.n)
        self.observer.step_started(run, step)
        notes: list[str] = []
        if step.code is not None:
            # A step may not outlive the run's wall-time budget either.
            limits = [t for t in (self.config.step_timeout or None, self.budget.remaining_time())
                      if t is not None]
            timeout = max(0.001, min(limits)) if limits else None
            result = await self.executor.execute(step.code, timeout=timeout, run_id=run.run_id,
                                                 step=step.n)
            # What model code printed may hold a secret (os.environ['OPENAI_API_KEY']): never
            # record it.
            step.outputs, step.error = redact_json(sanitize_outputs(result.outputs)), redact_json(result.error)
            step.execution_count, step.exec_s = result.execution_count, result.duration_s
            if result.interrupted:
                step.move(StepState.DONE)
                self.observer.step_finished(run, step)
                raise RunStopped(f"interrupted during step {step.n}")
        restored = self.repl.restore()
        if restored:
            notes.append(
                f"[note: your code deleted or rebound {', '.join(restored)}; restored. "
                "Use other names for your variables.]"
            )
        if cut:
            notes.append(cut_reply_note(self.config.root_max_tokens, len(parsed.blocks),
                                        parsed.dropped is not None))
        text = outputs_to_text(step.outputs)
        record = self._expected.pop(step.n, None)
        if record is not None and (text, step.error) != (outputs_to_text(record.outputs),
                                                         record.error):
            step.output_text = truncate(text, self.config.output_chars)
            step.move(StepState.DONE)
            self.observer.step_finished(run, step)
            raise ReplayMissError(
                f"step {step.n} ran differently from its record (its output is not the recorded "
                "one: the data, the files or something random or timed changed), so this branch "
                f"cannot inherit it; fork at an earlier step (at most {step.n - 1}), or make the "
                "step's result reproducible")
        final: str | None = None
        submitted = self.repl.submitted()
        if self.repl.final is not None:
            final = self.repl.final
        elif submitted is not None:  # rlms's answer dict
            final = submitted
        elif step.error is not None and parsed.has_final:
            # The model wrote FINAL before seeing its code fail: it must see the error first.
            notes.append("[note: your FINAL was not accepted because the code above raised; "
                         "fix the error, then finish.]")
        elif parsed.final is not None:
            final = parsed.final
        elif parsed.final_var is not None:
            try:
                final = self.repl.resolve_final_var(parsed.final_var)
            except (NameError, ValueError) as exc:
                notes.append(str(exc))
        if notes:
            text = text + ("\n" if text and not text.endswith("\n") else "") + "\n".join(notes)
        step.output_text = truncate(text, self.config.output_chars)
        if step.code is None and final is None and not notes:
            step.nudge = nudge_message(max(0, self.config.max_steps - step.n))
        step.move(StepState.DONE)
        if final is not None:
            final = redact(final)
            step.final = final
            run.answer = final
        self.observer.step_finished(run, step)
        if self.budget.exceeded is not None and final is None:
            raise self.budget.exceeded
        if final is not None:
            return True
        self.messages += _history_turn(step, self.config)
        return False

    # -- recursion -----------------------------------------------------------------------------
    def _child_engine(self, query: str, context: Any, depth: int, model: str | None) -> Engine:
        parent = self.run
        child = Run(
            run_id=self.repl.next_id("r"), query=query, depth=depth, parent=parent.run_id,
            parent_step=self.repl.current_step,
            model=model or self.config.model_at(depth), sub_model=self.config.model_at(depth + 1),
            context=ContextInfo.describe(context, source=f"rlm() in run {parent.run_id}"),
            settings=parent.settings,
        )
        parent.children.append(child.run_id)
        path = child.run_id[len(parent.run_id) + 1:]  # "s<step>r<k>": same in every replay
        engine = Engine(
            client=self.client, config=self.config, run=child, executor=InProcessExecutor(),
            context=context, budget=self.budget, observer=self.observer,
            controller=Controller(), runs=self.runs, prompt_store=self.prompt_store,
            image_store=self.repl.images,
            tools=self.tools, script=self.script,
            script_path=f"{self.script_path}-{path}" if self.script_path else path,
            child_repls=self.child_repls,
        )
        self.child_repls[child.run_id] = engine.repl
        return engine

    def _run_children(self, specs: list[tuple[str, Any]], depth: int,
                      model: str | None) -> list[str | BaseException]:
        """rlm() / rlm_batch(): each child in a fresh namespace on a worker thread (at most
        ``concurrency`` at once), all sharing the client and the budgets; blocks until all end.
        A Stop or an interrupt of the parent stops every child."""
        engines = [self._child_engine(q, c, depth, model) for q, c in specs]
        pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=max(1, min(len(engines), self.config.concurrency)),
            thread_name_prefix=f"rlm-child-{self.run.run_id}")
        futures = [pool.submit(asyncio.run, e.arun()) for e in engines]

        def stop_all() -> None:
            for e in engines:
                e.controller.request("stop")

        try:
            # Wait in slices (a Stop of this run must reach the children), and only then ask
            # for the results: a child that itself failed with a TimeoutError must not read as
            # "not finished yet" (concurrent.futures' timeout is that same class).
            pending = set(futures)
            while pending:
                if self.controller.stop_requested:
                    stop_all()
                _, pending = concurrent.futures.wait(pending, timeout=0.1)
        except BaseException:
            stop_all()
            raise
        finally:
            pool.shutdown(wait=False, cancel_futures=True)
        out: list[str | BaseException] = []
        for engine, fut in zip(engines, futures, strict=True):
            exc = fut.exception()
            run = engine.run
            if exc is not None:
                out.append(exc)
            elif run.answer is None:
                out.append(RLMError(f"sub-RLM {run.run_id} ended without an answer: "
                                    f"{run.stop_reason}"))
            else:
                out.append(run.answer)
        return out


def decode_answer(arguments: str) -> str | None:
    """The ``answer`` of a ``final`` tool call's JSON arguments (None if unreadable)."""
    import json

    try:
        value = json.loads(arguments)
    except ValueError:
        return None
    return str(value["answer"]) if isinstance(value, dict) and "answer" in value else None


class _LiveText:
    """A streamed root reply on its way to the views: pieces arrive on the client's loop thread;
    the text so far goes to ``observer.step_streaming`` every ``_LIVE_S`` once the reply has
    been streaming that long (a reply that comes at once is shown only whole, as before), and
    only when some view shows it (``wants_stream``)."""

    def __init__(self, observer: RunObserver, run: Run, n: int) -> None:
        self.observer, self.run, self.n = observer, run, n
        self.parts: list[str] = []
        self.shown = False
        self._last: float | None = None
        self._on = observer.wants_stream

    def feed(self, piece: str) -> None:
        if not self._on:
            return
        self.parts.append(piece)
        now = time.monotonic()
        if self._last is None:
            self._last = now
        elif now - self._last >= _LIVE_S:
            self._last = now
            self.shown = True
            self.observer.step_streaming(self.run, self.n, "".join(self.parts))

    def abandon(self, exc: BaseException) -> None:
        """The reply will never be whole (stopped, timed out, failed): say so where it showed."""
        if self.shown:
            why = "stopped" if isinstance(exc, (RunStopped, asyncio.CancelledError,
                                                KeyboardInterrupt, TimeoutError,
                                                BudgetExceeded)) else "failed"
            self.observer.step_streaming(self.run, self.n, "".join(self.parts), ended=why)
