"""The kernel's end of ``rlm.cells``: the comms front-ends opened, numbered sends, hello and control.

One job: move protocol messages between this kernel and its front-ends (the JupyterLab extension,
the headless runner, a test). It knows nothing about runs; the kernel gives it two handlers at
construction, for a front-end's ``hello`` (answered with a ``sync``) and ``control``.

Numbering: every message sent gets the next ``seq`` (one counter for the kernel process; all comms
receive the same sequence), under one lock, so the order of numbers is the order on the wire.

Control while a step blocks: a step's code (``llm_batch`` waiting for a thousand calls) holds the
kernel's main thread, and ipykernel handles shell messages, comm messages included, on that thread
only when it is free. A Pause or a Stop must not wait for the step to end, so the channel reads
``control`` messages as they pass ipykernel's shell-channel thread, through ipykernel's hook for
routing comm messages (``Comm._reply_subshell_for``, ipykernel >= 7), and acts at once; the same
message, handled again later on the main thread, is recognised and ignored. Where the hook is
missing, control is handled on the main thread as before (later, never lost).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from typing import Any

from .. import cells
from ..outputs import clean_json

__all__ = ["FrontendChannel"]

OnHello = Callable[[], list[dict[str, Any]]]
OnControl = Callable[[str, "str | None"], None]


class FrontendChannel:
    def __init__(self, kernel: Any, *, on_hello: OnHello, on_control: OnControl) -> None:
        self._kernel = kernel
        self._on_hello = on_hello
        self._on_control = on_control
        self._comms: list[Any] = []  # opened by front-ends
        self._own: Any = None  # opened by this kernel when no front-end had one
        self._lock = threading.Lock()
        self._seen_controls: set[str] = set()
        self.seq = 0
        self.mirrors = False  # a front-end that inserts the cells itself said hello
        self.clients: set[str] = set()  # the names front-ends gave in their hellos

    # -- comms ----------------------------------------------------------------------------------
    def on_comm_open(self, comm: Any, open_msg: dict[str, Any]) -> None:
        """A front-end opened ``rlm.cells`` (e.g. after a reload): adopt it, answer its hello."""
        self._adopt(comm)
        self._comms.append(comm)
        comm.on_close(lambda msg: self._drop(comm))
        if self._own is not None:
            with contextlib.suppress(Exception):
                self._own.close()
            self._own = None
        self._receive(open_msg.get("content", {}).get("data") or {}, comm)

    def _adopt(self, comm: Any) -> None:
        comm.on_msg(lambda msg: self._receive(msg.get("content", {}).get("data") or {}, comm))
        route = getattr(comm, "_reply_subshell_for", None)
        if route is not None:
            def early(data: Any, default: Any) -> Any:
                self._control_early(data)
                return route(data, default)

            comm._reply_subshell_for = early

    def _drop(self, comm: Any) -> None:
        if comm in self._comms:
            self._comms.remove(comm)
        elif comm is self._own:
            self._own = None

    def _targets(self) -> list[Any]:
        if self._comms:
            return list(self._comms)
        if self._own is None:
            from comm import create_comm

            self._own = create_comm(target_name=cells.TARGET,
                                    data=cells.hello_msg("rlm-kernel", False))
            self._adopt(self._own)
        return [self._own]

    # -- sending --------------------------------------------------------------------------------
    def send(self, msg: dict[str, Any]) -> None:
        """Number ``msg`` and send it to every front-end."""
        with self._lock:
            self.seq += 1
            msg["seq"] = self.seq
            for comm in self._targets():
                self._send_on(comm, msg)

    def _send_on(self, comm: Any, msg: dict[str, Any]) -> None:
        """A closed or broken comm (a console without our target closes the kernel's comm at
        once) is dropped, so the next message goes on a live one; the run never stops for it.
        A message that cannot be encoded (text a step made holding a lone surrogate) is cleaned
        and sent again: the comm is fine, and the front-end must not lose it."""
        try:
            comm.send(msg)
        except (UnicodeError, ValueError, TypeError):
            try:
                comm.send(clean_json(msg))
            except Exception:  # noqa: BLE001 - never drop a working comm for one message
                self._kernel.log.exception("rlm.cells: a message could not be sent")
        except Exception:  # noqa: BLE001
            self._drop(comm)

    def sync_message(self) -> dict[str, Any]:
        """The whole state as a ``sync`` (for ``%rlm sync``: a client that lost messages)."""
        with self._lock:
            msg = cells.sync_msg(self._on_hello())
            msg["seq"] = self.seq
            return msg

    def barrier(self, done: threading.Event) -> None:
        """Set ``done`` once ipykernel's IOPub thread has handed everything sent before to zmq."""
        thread = getattr(self._kernel, "iopub_thread", None)
        if thread is None:
            done.set()
        else:
            thread.schedule(done.set)

    # -- receiving ------------------------------------------------------------------------------
    def _receive(self, data: Any, comm: Any) -> None:
        try:
            data = cells.check(data)
        except ValueError as exc:
            self._kernel.log.warning("rlm.cells: %s", exc)
            return
        if data["type"] == "hello":
            self.mirrors = self.mirrors or bool(data.get("mirrors"))
            self.clients.add(str(data.get("client", "")))
            with self._lock:  # the sync covers every message numbered so far
                msg = cells.sync_msg(self._on_hello())
                msg["seq"] = self.seq
                self._send_on(comm, msg)  # on the comm the hello came by: others may be stale
        elif data["type"] == "control" and not self._already_seen(data):
            self._on_control(data.get("action", ""), data.get("run"))

    def _control_early(self, data: Any) -> None:
        """Called on ipykernel's shell-channel thread as a comm message passes (see the module
        docstring); acts on ``control`` at once. Must never raise."""
        try:
            if isinstance(data, dict) and data.get("type") == "control" and \
                    data.get("v") == cells.PROTOCOL_VERSION and not self._already_seen(data):
                self._on_control(data.get("action", ""), data.get("run"))
        except Exception:  # noqa: BLE001 - the message is still handled on the main thread
            self._kernel.log.exception("rlm.cells: early control handling failed")

    def _already_seen(self, data: dict[str, Any]) -> bool:
        """True the second time the same control message (same ``id``) is handled."""
        key = data.get("id")
        if not key:
            return False
        with self._lock:
            if key in self._seen_controls:
                self._seen_controls.discard(key)
                return True
            self._seen_controls.add(key)
            return False
