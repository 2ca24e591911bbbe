"""Running a root step through the shell exactly like a human cell, and keeping its outputs.

``run_cell`` gives the step everything a human cell gets (magics, display hooks, history,
``Out``, exceptions, post-run events). Its outputs are caught on the way to IOPub with ipykernel's
thread-local message hooks and a bounded stdout/stderr, so that they become the *step cell's*
outputs (sent through ``rlm.cells``) instead of landing in the query cell; a re-run of a step cell by
a human passes them through to that cell as usual while still recording them.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Iterator
from typing import Any

from ..errors import StepTimeout
from ..executor import ExecResult, step_deadline
from ..notebook import marker
from ..outputs import BoundedText, error_output, stream_output

__all__ = ["ShellExecutor", "OutputRecorder"]


class _Tee(BoundedText):
    """Bounded capture that can also forward to the stream it replaced (human re-runs)."""

    def __init__(self, target: Any | None, limit: int) -> None:
        super().__init__(limit * 2 // 3, limit // 3)
        self.target = target

    def write(self, s: str) -> int:
        if self.target is not None:
            self.target.write(s)
        return super().write(s)

    def flush(self) -> None:
        if self.target is not None:
            self.target.flush()


class OutputRecorder:
    """Collects nbformat outputs of one execution, in the order they were produced."""

    def __init__(self, passthrough: bool, limit: int = 300_000) -> None:
        self.passthrough = passthrough
        self.limit = limit
        self.items: list[tuple[str, Any]] = []  # ("stdout"|"stderr", _Tee) or ("out", dict)
        self.error: tuple[str, str, list[str]] | None = None

    def _stream(self, name: str, target: Any) -> _Tee:
        tee = _Tee(target if self.passthrough else None, self.limit)
        self.items.append((name, tee))
        return tee

    def outputs(self) -> list[dict[str, Any]]:
        outs: list[dict[str, Any]] = []
        for kind, item in self.items:
            if kind in ("stdout", "stderr"):
                text = item.getvalue()
                if text:
                    if outs and outs[-1].get("name") == kind and outs[-1]["output_type"] == "stream":
                        outs[-1]["text"] += text
                    else:
                        outs.append(stream_output(kind, text))
            else:
                outs.append(item)
        if self.error is not None:
            outs.append(error_output(*self.error))
        return outs

    @contextlib.contextmanager
    def capture(self, shell: Any) -> Iterator[None]:
        def on_display(msg: dict[str, Any]) -> dict[str, Any] | None:
            mtype = msg.get("header", {}).get("msg_type") or msg.get("msg_type")
            content = msg.get("content", {})
            if mtype == "execute_result":
                self.items.append(("out", {
                    "output_type": "execute_result", "data": content.get("data", {}),
                    "metadata": content.get("metadata", {}),
                    "execution_count": content.get("execution_count"),
                }))
            elif mtype in ("display_data", "update_display_data"):
                self.items.append(("out", {
                    "output_type": "display_data", "data": content.get("data", {}),
                    "metadata": content.get("metadata", {}),
                }))
            elif mtype == "clear_output":
                self.items.clear()
            return msg if self.passthrough else None

        def on_traceback(etype: type, evalue: BaseException, stb: list[str]) -> None:
            self.error = (etype.__name__, str(evalue), list(stb))
            if self.passthrough:
                original(etype, evalue, stb)

        def quick_showtraceback(exc_tuple: Any = None, *args: Any, **kwargs: Any) -> Any:
            # An interrupt or a step timeout needs one line, not IPython's full formatting
            # (0.6-1.3 s through the client's threads: most of a Stop's latency).
            etype, value, _tb = exc_tuple or sys.exc_info()
            if etype is not None and issubclass(etype, (KeyboardInterrupt, StepTimeout)):
                shell._showtraceback(etype, value, [f"{etype.__name__}: {value}"])
                return None
            return original_show(exc_tuple, *args, **kwargs)

        out_stream, err_stream = sys.stdout, sys.stderr
        original = shell._showtraceback
        original_show = shell.showtraceback
        shell.showtraceback = quick_showtraceback
        shell.displayhook.register_hook(on_display)
        shell.display_pub.register_hook(on_display)
        shell._showtraceback = on_traceback
        # A fresh pair per capture: outputs interleave in the order they were written.
        sys.stdout = _SplitStream(self, "stdout", out_stream)
        sys.stderr = _SplitStream(self, "stderr", err_stream)
        try:
            yield
        finally:
            sys.stdout.flush()
            sys.stdout, sys.stderr = out_stream, err_stream
            shell._showtraceback = original
            shell.showtraceback = original_show
            shell.displayhook.unregister_hook(on_display)
            shell.display_pub.unregister_hook(on_display)


class _SplitStream:
    """A stdout/stderr stand-in that starts a new output chunk whenever something else was
    produced in between, so prints and displays keep their order."""

    def __init__(self, recorder: OutputRecorder, name: str, target: Any) -> None:
        self.recorder, self.name, self.target = recorder, name, target
        self._tee: _Tee | None = None
        self.encoding = "utf-8"

    def write(self, s: str) -> int:
        items = self.recorder.items
        if self._tee is None or not items or items[-1][1] is not self._tee:
            self._tee = self.recorder._stream(self.name, self.target)
        return self._tee.write(s)

    def writelines(self, lines: list[str]) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        if self.recorder.passthrough and self.target is not None:
            self.target.flush()

    def isatty(self) -> bool:
        return False

    def writable(self) -> bool:
        return True

    def fileno(self) -> int:
        return self.target.fileno()


class ShellExecutor:
    """The kernel's executor: a step is a ``run_cell`` in the user namespace."""

    def __init__(self, shell: Any, capture_chars: int = 300_000) -> None:
        self.shell = shell
        self.namespace = shell.user_ns
        self.capture_chars = capture_chars
        self.blocking = False  # inside a step's synchronous code (the kernel's SIGINT routing)

    async def execute(self, code: str, *, timeout: float | None, run_id: str, step: int,
                      passthrough: bool = False) -> ExecResult:
        """Run step ``step`` of ``run_id``. A model's step gets its marker line prepended (so its
        cell is recognisable anywhere); a human's re-run (``passthrough``) already has it, and its
        outputs also go to the human's cell as usual."""
        shell = self.shell
        source = code if passthrough else f"{marker(run_id, step)}\n{code}"
        recorder = OutputRecorder(passthrough, self.capture_chars)
        count = shell.execution_count
        started = time.perf_counter()
        interrupted = False
        res = None
        if not passthrough:
            # Model code calling exit()/quit() must not shut the kernel down (a human may):
            # IPython's exit() sets keepkernel itself, so the request is refused at ask_exit.
            shell.ask_exit = _refuse_exit
        self.blocking = True
        try:
            with recorder.capture(shell), step_deadline(timeout):
                transformed = shell.transform_cell(source)
                if shell.should_run_async(source, transformed_cell=transformed,
                                          preprocessing_exc_tuple=None):
                    try:
                        res = await shell.run_cell_async(source, store_history=True,
                                                         transformed_cell=transformed)
                    finally:
                        shell.events.trigger("post_execute")
                        shell.events.trigger("post_run_cell", res)
                else:
                    res = shell.run_cell(source, store_history=True)
        except KeyboardInterrupt:
            interrupted = True
        finally:
            self.blocking = False
            if not passthrough:
                with contextlib.suppress(AttributeError):
                    del shell.ask_exit  # back to the class's method
                # Payloads a step leaves (ask_exit, set_next_input) belong to no cell of the
                # human's: unread they would ride on the next human cell's reply.
                with contextlib.suppress(Exception):
                    shell.payload_manager.clear_payload()
        result = ExecResult(outputs=recorder.outputs(), execution_count=count,
                            duration_s=time.perf_counter() - started)
        err = None if res is None else (res.error_before_exec or res.error_in_exec)
        if err is not None:
            result.error = f"{type(err).__name__}: {err}"
            if isinstance(err, KeyboardInterrupt):
                interrupted = True
        if interrupted:
            result.interrupted = True
            result.error = result.error or "KeyboardInterrupt: interrupted"
        return result


def _refuse_exit() -> None:
    print("exit()/quit() ignored: a step cannot end the kernel; finish the run with FINAL(...)",
          file=sys.stderr)
