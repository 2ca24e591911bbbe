"""Running a root step through the shell exactly like a human cell, and keeping its outputs.

``run_cell`` gives the step everything a human cell gets (magics, display hooks, history,
``Out``, exceptions, post-run events). Its outputs are caught on the way to IOPub with ipykernel's
thread-local message hooks and a bounded stdout/stderr, so that they become the *step cell's*
outputs (sent through ``rlm.cells``) instead of landing in the query cell; a re-run of a step cell by
a human passes them through to that cell as usual while still recording them.

What model code writes to file descriptors 1 and 2 directly (``os.write``, C extensions, the
programs ``os.system`` and ``subprocess`` start) bypasses ``sys.stdout``; ipykernel would forward
all of it, unbounded, to the query cell and echo it to the kernel's own stdout (a headless
runner's terminal). During a model's step those descriptors are pointed at pipes of ours and read
into the same bounded buffers (:class:`_FdCapture`).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

from ..errors import StepTimeout
from ..executor import ExecResult, step_deadline, step_timeout_message, step_watchdog
from ..notebook import marker
from ..outputs import BoundedText, clean_outputs, error_output, stream_output, truncate

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
        """The outputs in order; each stream output head+tail bounded, text made encodable."""
        outs: list[dict[str, Any]] = []
        for kind, item in list(self.items):
            if kind in ("stdout", "stderr"):
                text = item.getvalue()
                if text:
                    if outs and outs[-1].get("name") == kind and outs[-1]["output_type"] == "stream":
                        outs[-1]["text"] += text
                    else:
                        outs.append(stream_output(kind, text))
            else:
                outs.append(item)
        for out in outs:
            if out["output_type"] == "stream":
                out["text"] = truncate(out["text"], self.limit)
        if self.error is not None:
            outs.append(error_output(*self.error))
        return clean_outputs(outs)

    def stream_for(self, name: str) -> _Tee:
        """The chunk that output of stream ``name`` goes to now (a new one if something else was
        produced since): outputs keep their order."""
        items = self.items
        last = items[-1] if items else None
        if last is not None and last[0] == name and isinstance(last[1], _Tee):
            return last[1]
        return self._stream(name, None)

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
            # Model code may have replaced the streams (``sys.stdout = None``): restore ours
            # first, whatever it left.
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
        # The descriptor, not ipykernel's saved copy of the original: during a step it is read
        # into the step's outputs (see _FdCapture), afterwards ipykernel forwards it.
        return 1 if self.name == "stdout" else 2


class _FdCapture:
    """Descriptors 1 and 2 of this process into ``recorder``, for one step.

    Each is pointed at a pipe whose reader thread writes what arrives into the recorder (bounded
    like ``print``). On exit the descriptors are restored; what children still write later is read
    and dropped (a program the step left running must not block on a full pipe).
    """

    def __init__(self, recorder: OutputRecorder) -> None:
        self.recorder = recorder
        self._saved: list[tuple[int, int]] = []
        self._threads: list[threading.Thread] = []
        self._open = True

    def __enter__(self) -> _FdCapture:
        for fd, name in ((1, "stdout"), (2, "stderr")):
            try:
                saved = os.dup(fd)
            except OSError:
                continue  # no such descriptor (a kernel started without them)
            read_end, write_end = os.pipe()
            os.dup2(write_end, fd)
            os.close(write_end)
            self._saved.append((fd, saved))
            t = threading.Thread(target=self._pump, args=(read_end, name), daemon=True,
                                 name=f"rlm-fd{fd}")
            t.start()
            self._threads.append(t)
        return self

    def _pump(self, read_end: int, name: str) -> None:
        try:
            while True:
                data = os.read(read_end, 65536)
                if not data:
                    return
                if self._open:
                    self.recorder.stream_for(name).write(data.decode("utf-8", "replace"))
        except OSError:
            return
        finally:
            os.close(read_end)

    def __exit__(self, *exc: object) -> None:
        for fd, saved in self._saved:
            os.dup2(saved, fd)  # the pipe's last writer in this process is gone
            os.close(saved)
        for t in self._threads:
            t.join(0.2)  # what the step wrote is read; a child still writing is not waited for
        self._open = False

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
        fds = contextlib.nullcontext() if passthrough else _FdCapture(recorder)
        timed_out = False
        try:
            with recorder.capture(shell), fds:
                transformed = shell.transform_cell(source)
                if shell.should_run_async(source, transformed_cell=transformed,
                                          preprocessing_exc_tuple=None):
                    # Top-level await: the step runs on the kernel's own event loop, where an
                    # alarm signal would land in the loop itself. Its deadline cancels it instead;
                    # a blocking stretch inside it is cut by the step watchdog.
                    task = asyncio.ensure_future(shell.run_cell_async(
                        source, store_history=True, transformed_cell=transformed))
                    try:
                        with step_watchdog(timeout, in_code=_in_cell_code):
                            res = await asyncio.wait_for(asyncio.shield(task), timeout)
                    except TimeoutError:
                        timed_out = True
                        task.cancel()
                        with contextlib.suppress(BaseException):
                            res = await task
                    finally:
                        shell.events.trigger("post_execute")
                        shell.events.trigger("post_run_cell", res)
                else:
                    self.blocking = True
                    with step_deadline(timeout, in_code=_in_cell_code):
                        res = shell.run_cell(source, store_history=True)
        except KeyboardInterrupt:
            interrupted = True
        except StepTimeout:  # the watchdog's, landing just as the step ended
            timed_out = True
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
        if timed_out:
            message = step_timeout_message(timeout)
            result.error = f"StepTimeout: {message}"
            result.outputs = [o for o in result.outputs if o["output_type"] != "error"]
            result.outputs.append(error_output("StepTimeout", message,
                                               [f"StepTimeout: {message}"]))
        elif err is not None:
            if isinstance(err, StepTimeout) and not str(err):  # raised by the step watchdog
                err = StepTimeout(step_timeout_message(timeout))
                result.outputs = [o for o in result.outputs if o["output_type"] != "error"]
                result.outputs.append(error_output("StepTimeout", str(err),
                                                   [f"StepTimeout: {err}"]))
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


def _in_cell_code(frame: Any) -> bool:
    """Is this frame (or one it was called from) code of a cell (IPython compiles cells to
    files of its own cache), rather than the event loop or the kernel around it?"""
    while frame is not None:
        if "ipykernel_" in frame.f_code.co_filename or \
                frame.f_code.co_filename.startswith("<ipython-input"):
            return True
        frame = frame.f_back
    return False
