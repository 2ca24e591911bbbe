"""Bounded and streamed model calls, and what the engine does with what real servers answer:
a refused ``max_tokens`` or ``stream_options``, events split every way, a reply cut at the bound,
a chat template that drops the system message, a history that outgrows the window. Real HTTP to a
loopback server (a small one here where the scripted model cannot play a server's quirk)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from support import TEST_KEY, repl_block

from rlm_kernel.config import RLMConfig
from rlm_kernel.lm import LMClient
from rlm_kernel.lm.stream import StreamReader
from rlm_kernel.parsing import parse_reply


class PickyHandler(BaseHTTPRequestHandler):
    """Like OpenAI's reasoning models: refuses ``max_tokens`` (wants ``max_completion_tokens``),
    and, when told to, refuses ``stream_options``. Keeps every request body."""

    disable_nagle_algorithm = True  # TCP_NODELAY
    protocol_version = "HTTP/1.1"
    bodies: list[dict[str, Any]] = []
    refuse_stream_options = False

    def do_POST(self) -> None:  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers.get("content-length", 0))))
        type(self).bodies.append(body)
        if "max_tokens" in body:
            return self._send(400, {"error": {
                "message": "Unsupported parameter: 'max_tokens' is not supported with this "
                           "model. Use 'max_completion_tokens' instead.",
                "type": "invalid_request_error", "param": "max_tokens",
                "code": "unsupported_parameter"}})
        if "stream_options" in body and type(self).refuse_stream_options:
            return self._send(400, {"error": {"message": "Unrecognized request argument "
                                              "supplied: stream_options", "code": None}})
        text = "four"
        if not body.get("stream"):
            return self._send(200, {"choices": [{"index": 0, "finish_reason": "stop", "message": {
                "role": "assistant", "content": text}}],
                "usage": {"prompt_tokens": 9, "completion_tokens": 1}})
        # Events separated by single newlines, with a comment line: as some servers send them.
        events = [{"choices": [{"index": 0, "delta": {"role": "assistant"}}]},
                  {"choices": [{"index": 0, "delta": {"content": "fo"}}]},
                  {"choices": [{"index": 0, "delta": {"content": "ur"}, "finish_reason": "stop"}]}]
        payload = ": ping\n" + "".join(f"data: {json.dumps(e)}\n" for e in events) + "data: [DONE]\n"
        data = payload.encode()
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _send(self, status: int, obj: dict[str, Any]) -> None:
        data = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def picky() -> Iterator[str]:
    PickyHandler.bodies = []
    PickyHandler.refuse_stream_options = False
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), PickyHandler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_port}/v1"
    httpd.shutdown()
    httpd.server_close()


@pytest.mark.parametrize("stream", [True, False])
def test_a_refused_max_tokens_is_sent_again_as_max_completion_tokens_and_remembered(
        picky: str, stream: bool) -> None:
    client = LMClient(RLMConfig(base_url=picky, api_key=TEST_KEY, stream=stream, cache=False,
                                sub_max_tokens=50, max_retries=0))
    try:
        for _ in range(2):
            comp = client.complete([{"role": "user", "content": "2+2?"}], model="m", depth=1)
            assert comp.text == "four" and comp.finish_reason == "stop"
    finally:
        client.close()
    sent = [("max_tokens" in b, b.get("max_completion_tokens")) for b in PickyHandler.bodies]
    assert sent == [(True, None), (False, 50), (False, 50)]  # refused once, then remembered


def test_refused_stream_options_are_left_out_and_usage_is_then_not_reported(picky: str) -> None:
    PickyHandler.refuse_stream_options = True
    client = LMClient(RLMConfig(base_url=picky, api_key=TEST_KEY, cache=False, max_retries=0))
    try:
        comp = client.complete([{"role": "user", "content": "2+2?"}], model="m", depth=1)
    finally:
        client.close()
    assert comp.text == "four"
    assert comp.usage.unreported == 1 and client.ledger.total.unreported == 1
    assert not client.stream_options
    assert "stream_options" not in PickyHandler.bodies[-1]


def test_the_stream_reader_takes_events_however_they_are_split() -> None:
    body = (b'data: {"choices":[{"index":0,"delta":{"content":"a"}}]}\r\n\r\n'
            b': keep-alive\n\n'
            b'data: {"choices":[{"index":0,"delta":{"content":"b"}}]}\n'
            b'data: {"choices":[{"index":0,"delta":{},"finish_reason":"length"}],'
            b'"usage":{"prompt_tokens":3,"completion_tokens":2}}\n\ndata: [DONE]\n\n')
    for size in (1, 7, len(body)):
        reader = StreamReader()
        seen = "".join(reader.feed(body[i:i + size]) for i in range(0, len(body), size))
        result = reader.close()
        assert (seen, result.text, result.finish_reason, result.done) == ("ab", "ab", "length", True)
        assert result.usage == {"prompt_tokens": 3, "completion_tokens": 2}
    cut = StreamReader()
    cut.feed(b'data: {"choices":[{"index":0,"delta":{"content":"x"}}]}\n\ndata: [DONE]\n\n')
    assert cut.close().finish_reason is None  # interrupted, not an answer
    err = StreamReader()
    err.feed(b'data: {"error": {"message": "prompt too long"}}\n\n')
    assert err.close().error == "prompt too long"


def test_a_cut_reply_runs_only_its_complete_blocks() -> None:
    reply = "Look first.\n```repl\nx = 1\n```\nThen:\n```repl\nprint(x +"
    whole = parse_reply(reply)
    cut = parse_reply(reply, cut=True)
    assert whole.code is not None and "print(x +" in whole.code  # the old rule: to the end
    assert cut.code == "x = 1" and cut.dropped == "print(x +"
    assert parse_reply("FINAL(the answer is", cut=True).final is None
    assert parse_reply("FINAL(the answer is 4)", cut=True).final == "the answer is 4"


def test_a_reply_cut_at_root_max_tokens_is_reported_to_the_model(rlm_inproc) -> None:
    long_block = repl_block("x = 1\n" + "y = 2\n" * 200 + "print('never')")
    rlm = rlm_inproc([long_block, "FINAL(done)"], root_max_tokens=50)
    res = rlm.run("q", "ctx")
    first = res.steps[0]
    assert first.finish_reason == "length" and first.code is None  # nothing complete to run
    assert "your reply was cut at the limit of 50 tokens" in first.output_text
    second_request = rlm.transport.root_requests()[1]
    assert "your reply was cut" in second_request[-1]["content"]
    cells = res.to_notebook().cells
    assert [c.metadata["rlm"]["kind"] for c in cells][:2] == ["query", "thought"]
    assert "cut at the token limit" in cells[1].source  # the thought cell says it was cut


def test_instructions_can_lead_the_first_user_message(rlm_inproc) -> None:
    rlm = rlm_inproc(["FINAL(done)"], system_role="user")
    res = rlm.run("q", "ctx")
    assert res.answer == "done"
    (request,) = rlm.transport.requests
    assert [m["role"] for m in request["messages"]] == ["user"]
    assert request["messages"][0]["content"].startswith("<instructions>\nYou are the root model")


def test_older_outputs_are_compacted_before_the_history_outgrows_the_window(rlm_inproc) -> None:
    replies = [repl_block("print('x' * 6000)"), repl_block("print('y' * 6000)"),
               repl_block("print(1)"), "FINAL(done)"]
    rlm = rlm_inproc(replies, context_window=4000)
    res = rlm.run("q", "ctx")
    assert res.answer == "done"
    compacted = [s for s in res.steps if s.compaction]
    assert compacted and compacted[0].n == 3 and res.run.elided_through >= 1
    third = rlm.transport.root_requests()[2]
    assert any("elided to fit your context window" in m["content"] for m in third)
    assert not any("x" * 6000 in m["content"] for m in third)
    cells = res.to_notebook().cells
    assert [c.metadata["rlm"]["kind"] for c in cells].count("compaction") == 1
    assert "Context compacted" in next(c.source for c in cells
                                       if c.metadata["rlm"]["kind"] == "compaction")


def test_a_streamed_reply_fills_its_thought_cell_which_the_notebook_keeps() -> None:
    """Live: the thought cell is inserted as the reply streams and updated in place; recorded:
    the same cell (a streamed step keeps its thought cell even when it has no prose)."""

    from rlm_kernel.kernel.emitter import CellEmitter
    from rlm_kernel.notebook import run_cells
    from rlm_kernel.trajectory import Run, Step

    class Sink:
        def __init__(self) -> None:
            self.msgs: list[dict[str, Any]] = []

        def send(self, msg: dict[str, Any]) -> None:
            self.msgs += msg["msgs"] if msg["type"] == "batch" else [msg]

        def barrier(self, done: threading.Event) -> None:
            done.set()

    run = Run(run_id="rlive", query="q")
    sink = Sink()
    emitter = CellEmitter(sink, run, {run.run_id: run}, anchor="Q", query_id="Q")
    emitter.start()
    emitter.history_compacted(run, 1, "steps 1–0 elided")
    emitter.step_streaming(run, 1, "Let me look")
    emitter.flush()
    step = Step(n=1, reply="```repl\nprint(1)\n```", code="print(1)", streamed=True,
                compaction="steps 1–0 elided")
    run.steps.append(step)
    emitter.step_proposed(run, step)
    emitter.stop()
    ops = [(m["type"], m["id"]) for m in sink.msgs if m["type"] in ("insert", "update")]
    assert ops[:3] == [("insert", "rlive-k1"), ("insert", "rlive-t1"), ("update", "rlive-k1")]
    assert ("update", "rlive-t1") in ops and ("insert", "rlive-s1") in ops
    live = next(m for m in sink.msgs if m["type"] == "insert" and m["id"] == "rlive-t1")
    assert "writing" in "".join(live["cell"]["source"]) and "Let me look" in "".join(
        live["cell"]["source"])
    assert [c["id"] for c in run_cells(run)][1:] == ["rlive-k1", "rlive-t1", "rlive-s1"]
