"""How a step's code runs: the executor interface, and the in-process executor of the library.

The engine never runs code itself; it hands each step to an :class:`Executor`. The library uses
:class:`InProcessExecutor` (a plain dict namespace); the kernel runs steps through IPython's
``run_cell`` like a human cell (``rlm_kernel.kernel.executor``). Both return nbformat outputs.
"""

from __future__ import annotations

import ast
import contextlib
import ctypes
import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from .errors import StepTimeout
from .outputs import BoundedText, error_output, stream_output

__all__ = ["Executor", "ExecResult", "InProcessExecutor", "step_deadline", "step_watchdog",
           "step_timeout_message"]

#: After a step's deadline, how long its own alarm gets before the watchdog steps in.
WATCHDOG_GRACE_S = 0.5


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


def step_timeout_message(timeout: float | None) -> str:
    return (f"step timed out after {timeout or 0:g} s (step_timeout, or what was left of "
            "max_wall_time); break the work into smaller steps")


@contextlib.contextmanager
def step_watchdog(timeout: float | None,
                  in_code: Callable[[Any], bool] | None = None) -> Iterator[None]:
    """Stop the step from outside its code if it outlives ``timeout`` (+ a grace period).

    Why: the step's own alarm (:func:`step_deadline`) is a signal handler and a timer that the
    step's code can replace or clear; budgets must hold whatever the code does. A watchdog thread
    raises :class:`StepTimeout` in the step's thread (``PyThreadState_SetAsyncExc``), again every
    quarter second until the step is over (code that swallows one gets the next). It acts only
    while that thread is running the step's code (``in_code(frame)``), never while it is in the
    interpreter machinery around it (an event loop, IPython's bookkeeping). A blocking C call
    (``time.sleep``) sees the exception when it returns.
    """
    if not timeout or timeout <= 0:
        yield
        return
    target = threading.get_ident()
    done = threading.Event()
    lock = threading.Lock()  # "is the step over?" and "raise in it" happen as one

    def watch() -> None:
        if done.wait(timeout + WATCHDOG_GRACE_S):
            return
        while True:
            with lock:
                if done.is_set():
                    return
                frame = sys._current_frames().get(target)
                if frame is not None and (in_code is None or in_code(frame)):
                    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(target),
                                                               ctypes.py_object(StepTimeout))
            done.wait(0.25)

    watcher = threading.Thread(target=watch, name="rlm-step-watchdog", daemon=True)
    watcher.start()
    try:
        yield
    finally:
        # No injection after this. (One set a moment before is raised at the thread's next
        # bytecode, still inside the step or at its end, where the executor catches it. It is
        # never cleared: in CPython 3.11 clearing with NULL leaves the interpreter's "async
        # exception pending" flag set, and every thread then crawls.)
        with lock:
            done.set()


@contextlib.contextmanager
def step_deadline(timeout: float | None,
                  in_code: Callable[[Any], bool] | None = None) -> Iterator[None]:
    """Raise :class:`StepTimeout` inside the running code once ``timeout`` seconds pass.

    In the main thread a real-time itimer interrupts even a tight ``while True: pass``; elsewhere
    (rlm() children run in worker threads) a trace function checks the clock between lines. Either
    way :func:`step_watchdog` stands behind it, for code that disarms them.
    """
    if not timeout or timeout <= 0:
        yield
        return
    message = step_timeout_message(timeout)
    with step_watchdog(timeout, in_code), _alarm(timeout, message):
        yield


@contextlib.contextmanager
def _alarm(timeout: float, message: str) -> Iterator[None]:
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


_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep


def format_exception(exc: BaseException, filename: str) -> list[str]:
    """The traceback of the step's own code: from its first frame on, without the engine's frames
    after its last one (a timeout's signal handler, ``llm()``'s plumbing) and without exceptions
    the engine was handling when the step began. Those are noise to a model; the error line and
    the step's lines are what it can act on."""
    te = traceback.TracebackException(type(exc), exc, exc.__traceback__, compact=True)
    _trim(te, filename)
    return [part.rstrip("\n") for part in te.format()]  # Jupyter joins them with newlines


def _trim(te: traceback.TracebackException, filename: str) -> bool:
    """Trim ``te`` (and its chain) to the step's frames; False when it has none."""
    frames = list(te.stack)
    first = next((i for i, f in enumerate(frames) if f.filename == filename), None)
    if first is None:
        return False
    end = len(frames)
    while end > first + 1 and frames[end - 1].filename.startswith(_PACKAGE_DIR):
        end -= 1
    te.stack = traceback.StackSummary.from_list(frames[first:end])
    for attr in ("__cause__", "__context__"):
        chained = getattr(te, attr)
        if chained is not None and not _trim(chained, filename):
            setattr(te, attr, None)
    return True


_routes = threading.local()


def _routed_print(*args: Any, sep: str | None = " ", end: str | None = "\n", file: Any = None,
                  flush: bool = False) -> None:
    """``print`` of code run off the main thread: to this thread's step buffers.

    Why: sub-RLMs of ``rlm_batch`` run their steps at the same time in worker threads, and
    ``sys.stdout`` is one for the process; redirecting it per step would mix their outputs (and
    send them into the parent's cell). Each worker thread has its own buffers instead.
    """
    out, err = getattr(_routes, "out", None), getattr(_routes, "err", None)
    if out is not None and (file is None or file is sys.stdout):
        file = out
    elif err is not None and file is sys.stderr:
        file = err
    print(*args, sep=sep, end=end, file=file, flush=flush)


class InProcessExecutor:
    """Runs steps with ``exec`` in a dict namespace, capturing output with bounded buffers.

    In the main thread ``sys.stdout``/``sys.stderr`` are redirected for the step; in a worker
    thread (a sub-RLM) the namespace's ``print`` writes to the thread's own buffers instead, so
    concurrent sub-RLMs never mix their outputs."""

    def __init__(self, namespace: dict[str, Any] | None = None, capture_chars: int = 300_000) -> None:
        self.namespace = namespace if namespace is not None else {}
        self.namespace.setdefault("__name__", "__rlm__")
        self.capture_chars = capture_chars
        self.count = 0

    @contextlib.contextmanager
    def _capture(self, out: BoundedText, err: BoundedText) -> Iterator[None]:
        if threading.current_thread() is threading.main_thread():
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                yield
            return
        builtins = self.namespace.get("__builtins__")
        if not isinstance(builtins, dict) or builtins.get("print") is not _routed_print:
            import builtins as module

            self.namespace["__builtins__"] = {**vars(module), "print": _routed_print}
        _routes.out, _routes.err = out, err
        try:
            yield
        finally:
            _routes.out = _routes.err = None

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
            with self._capture(out, err), step_deadline(timeout, in_code=_in_step(filename)):
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
            if isinstance(exc, StepTimeout) and not str(exc):  # raised by the watchdog
                exc = StepTimeout(step_timeout_message(timeout))
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


def _in_step(filename: str) -> Callable[[Any], bool]:
    """A frame predicate: is this frame, or one that called it, the step's own code?"""

    def check(frame: Any) -> bool:
        while frame is not None:
            if frame.f_code.co_filename == filename:
                return True
            frame = frame.f_back
        return False

    return check
