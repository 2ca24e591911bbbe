"""How a step's code runs: the executor interface, and the in-process executor of the library.

The engine never runs code itself; it hands each step to an :class:`Executor`. The library uses
:class:`InProcessExecutor` (a plain dict namespace); the kernel runs steps through IPython's
``run_cell`` like a human cell (``rlm_kernel.kernel.executor``). Both return nbformat outputs.
"""

from __future__ import annotations

import ast
import contextlib
import signal
import sys
import threading
import time
import traceback
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from .errors import StepTimeout
from .outputs import BoundedText, error_output, stream_output

__all__ = ["Executor", "ExecResult", "InProcessExecutor", "step_deadline"]


@dataclass
class ExecResult:
    outputs: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None  # "ExcName: message"
    interrupted: bool = False  # KeyboardInterrupt: the human stopped the run
    execution_count: int | None = None
    duration_s: float = 0.0


class Executor(Protocol):
    namespace: dict[str, Any]

    async def execute(self, code: str, *, timeout: float | None, run_id: str,
                      step: int) -> ExecResult:
        """Run step ``step`` of run ``run_id`` (which the kernel's executor shows in the step
        cell's marker line, and every executor names in tracebacks)."""
        ...


@contextlib.contextmanager
def step_deadline(timeout: float | None) -> Iterator[None]:
    """Raise :class:`StepTimeout` inside the running code once ``timeout`` seconds pass.

    In the main thread a real-time itimer interrupts even a tight ``while True: pass``; elsewhere
    (rlm() children run in worker threads) a trace function checks the clock between lines.
    """
    if not timeout or timeout <= 0:
        yield
        return
    message = f"step timed out after {timeout:g} s (step_timeout); break the work into smaller steps"
    if threading.current_thread() is threading.main_thread() and hasattr(signal, "setitimer"):
        def on_alarm(signum: int, frame: Any) -> None:
            raise StepTimeout(message)

        previous = signal.signal(signal.SIGALRM, on_alarm)
        outer_delay, outer_interval = signal.setitimer(signal.ITIMER_REAL, timeout)
        armed = time.monotonic()
        try:
            yield
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)
            if outer_delay > 0:
                # Someone else's alarm (a test runner's timeout, a host program's watchdog) was
                # pending: re-arm what is left of it instead of silently cancelling it.
                left = outer_delay - (time.monotonic() - armed)
                signal.setitimer(signal.ITIMER_REAL, max(left, 0.001), outer_interval)
        return
    deadline = time.monotonic() + timeout

    def tracer(frame: Any, event: str, arg: Any) -> Any:
        if time.monotonic() > deadline:
            raise StepTimeout(message)
        return tracer

    old = sys.gettrace()
    sys.settrace(tracer)
    try:
        yield
    finally:
        sys.settrace(old)


def format_exception(exc: BaseException, filename: str) -> list[str]:
    """The traceback from the step's own frames on (the engine's frames are noise to a model)."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename != filename:
        tb = tb.tb_next
    return traceback.format_exception(type(exc), exc, tb or exc.__traceback__)


class InProcessExecutor:
    """Runs steps with ``exec`` in a dict namespace, capturing output with bounded buffers."""

    def __init__(self, namespace: dict[str, Any] | None = None, capture_chars: int = 300_000) -> None:
        self.namespace = namespace if namespace is not None else {}
        self.namespace.setdefault("__name__", "__rlm__")
        self.capture_chars = capture_chars
        self.count = 0

    async def execute(self, code: str, *, timeout: float | None, run_id: str,
                      step: int) -> ExecResult:
        self.count += 1
        filename = f"<rlm step {step}>"
        out = BoundedText(self.capture_chars * 2 // 3, self.capture_chars // 3)
        err = BoundedText(self.capture_chars * 2 // 3, self.capture_chars // 3)
        result = ExecResult(execution_count=self.count)
        value: Any = None
        error_out: dict[str, Any] | None = None
        started = time.perf_counter()
        try:
            tree = ast.parse(code, filename=filename)
            last = tree.body.pop() if tree.body and isinstance(tree.body[-1], ast.Expr) else None
            assert last is None or isinstance(last, ast.Expr)
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), \
                    step_deadline(timeout):
                exec(compile(tree, filename, "exec"), self.namespace)
                if last is not None:
                    value = eval(compile(ast.Expression(last.value), filename, "eval"),
                                 self.namespace)
        except KeyboardInterrupt:
            result.interrupted = True
            result.error = "KeyboardInterrupt: interrupted"
        except SystemExit as exc:  # sys.exit() in model code must not end the host program
            result.error = f"SystemExit: {exc.code!r} (sys.exit() does not end an RLM run)"
        except BaseException as exc:  # noqa: BLE001 - every error is fed back to the model
            tb = format_exception(exc, filename)
            result.error = f"{type(exc).__name__}: {exc}"
            error_out = error_output(type(exc).__name__, str(exc), tb)
        result.duration_s = time.perf_counter() - started
        if out.getvalue():
            result.outputs.append(stream_output("stdout", out.getvalue()))
        if err.getvalue():
            result.outputs.append(stream_output("stderr", err.getvalue()))
        if value is not None:
            result.outputs.append({
                "output_type": "execute_result", "execution_count": self.count,
                "data": {"text/plain": repr(value)}, "metadata": {},
            })
        if error_out is not None:
            result.outputs.append(error_out)
        elif result.error and not result.interrupted:
            ename, _, evalue = result.error.partition(": ")
            result.outputs.append(error_output(ename, evalue, [result.error]))
        return result
