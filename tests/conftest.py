"""Shared fixtures: scripted model servers, RLMs wired to them, generated contexts.

Every model call in these tests goes through the real ``openai`` client and real HTTP: either to a
:class:`ScriptedServer` on 127.0.0.1 (wire behaviour: retries, faults, concurrency, usage) or through
an in-process :class:`ScriptedTransport` (engine logic, where the socket adds nothing). Nothing mocks
the openai client.

Fixtures (all function-scoped unless said otherwise):

- ``scripted_server(latency=0.0, faults=None, root_replies=None, seed=0) -> ScriptedServer``: starts
  a server on 127.0.0.1 (free port), stopped at teardown. ``srv.base_url``, ``srv.model.stats``.
- ``rlm_http(server, **settings) -> RLM``: an ``RLM`` pointed at a server over HTTP
  (``scripted-root`` / ``scripted-sub``), closed at teardown.
- ``rlm_inproc(root_replies=None, latency=0.0, faults=None, **settings) -> RLM``: an ``RLM`` whose
  client talks to a :class:`RecordingTransport` (``rlm.transport``) that keeps every request body.
- ``needle_haystack`` (session): ~1M characters of prose with one needle sentence.
- ``log_context`` (session): a generated log of 3,000 lines with its ground-truth counts.
- ``make_haystack`` / ``make_log``: the generators themselves, for other sizes.
- ``echo_key_server``: base URL of an endpoint whose errors quote the API key (redaction tests).

Helpers: ``repl_block(code)`` (a root reply), ``count_prompt(n)`` (a sub-prompt answered "n").
"""

from __future__ import annotations

import json
import os
import random
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx2
import pytest
from support import SCRIPTED_ROOT, SCRIPTED_SUB, TEST_KEY, count_prompt, repl_block  # noqa: F401

from rlm_kernel import RLM
from rlm_kernel.lm import LMClient
from rlm_kernel.scripted import FaultPlan, ScriptedModel, ScriptedServer, ScriptedTransport

_ENV_VARS = ("OPENAI_API_KEY", "OPENAI_BASE_URL", "RLM_MODEL", "RLM_SUB_MODEL", "RLM_CONCURRENCY",
             "RLM_PANEL")


@pytest.fixture(scope="session", autouse=True)
def _isolated_jupyter(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """The user's IPython and Jupyter directories never meet a test (history, config, kernelspecs,
    runtime files): each session gets its own, with the ``rlm`` kernelspec installed there."""
    from rlm_kernel.install import install

    root = tmp_path_factory.mktemp("home")
    prefix = root / "prefix"
    install(prefix=str(prefix))
    env = {
        "IPYTHONDIR": str(root / "ipython"),
        "JUPYTER_CONFIG_DIR": str(root / "jupyter-config"),
        "JUPYTER_DATA_DIR": str(root / "jupyter-data"),
        "JUPYTER_RUNTIME_DIR": str(root / "jupyter-runtime"),
        "JUPYTER_PATH": str(prefix / "share" / "jupyter"),
        "JUPYTER_PLATFORM_DIRS": "1",
    }
    with pytest.MonkeyPatch.context() as mp:
        for key, value in env.items():
            mp.setenv(key, value)
        yield


@pytest.fixture(autouse=True)
def _no_model_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """A developer's real OPENAI_API_KEY / RLM_MODEL must never reach a test (or a paid API)."""
    for name in [*_ENV_VARS, *(k for k in os.environ if k.startswith("RLM_"))]:
        monkeypatch.delenv(name, raising=False)


# ------------------------------------------------------------------------------------------ servers

ServerFactory = Callable[..., ScriptedServer]


@pytest.fixture
def scripted_server() -> Iterator[ServerFactory]:
    servers: list[ScriptedServer] = []

    def start(*, latency: float | tuple[float, float] = 0.0, faults: FaultPlan | None = None,
              root_replies: list[str] | None = None, seed: int = 0) -> ScriptedServer:
        model = ScriptedModel(latency=latency, faults=faults, root_replies=root_replies, seed=seed)
        srv = ScriptedServer(model, host="127.0.0.1", port=0)
        srv.start()
        servers.append(srv)
        return srv

    yield start
    for srv in servers:
        srv.stop()


@pytest.fixture
def rlm_http() -> Iterator[Callable[..., RLM]]:
    made: list[RLM] = []

    def make(server: ScriptedServer, **settings: Any) -> RLM:
        settings.setdefault("api_key", TEST_KEY)
        settings.setdefault("model", SCRIPTED_ROOT)
        settings.setdefault("sub_model", SCRIPTED_SUB)
        rlm = RLM(base_url=server.base_url, **settings)
        made.append(rlm)
        return rlm

    yield make
    for rlm in made:
        rlm.close()


# ------------------------------------------------------------------------------------ in-process


class RecordingTransport(ScriptedTransport):
    """The in-process scripted transport, keeping every chat request body (decoded JSON)."""

    def __init__(self, model: ScriptedModel) -> None:
        super().__init__(model)
        self.requests: list[dict[str, Any]] = []

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        if request.url.path.rstrip("/").endswith("/chat/completions"):
            self.requests.append(json.loads(await request.aread()))
        return await super().handle_async_request(request)

    def root_requests(self) -> list[list[dict[str, Any]]]:
        """The message lists of root calls (those carrying the engine's system prompt)."""
        return [r["messages"] for r in self.requests
                if any(m["role"] == "system" for m in r["messages"])]

    def sub_requests(self) -> list[list[dict[str, Any]]]:
        return [r["messages"] for r in self.requests
                if not any(m["role"] == "system" for m in r["messages"])]


@pytest.fixture
def rlm_inproc() -> Iterator[Callable[..., RLM]]:
    made: list[RLM] = []

    def make(root_replies: list[str] | None = None, *, latency: float = 0.0,
             faults: FaultPlan | None = None, **settings: Any) -> RLM:
        settings.setdefault("api_key", TEST_KEY)
        settings.setdefault("model", SCRIPTED_ROOT)
        settings.setdefault("sub_model", SCRIPTED_SUB)
        settings.setdefault("base_url", "http://scripted.invalid/v1")
        rlm = RLM(**settings)
        transport = RecordingTransport(
            ScriptedModel(latency=latency, faults=faults, root_replies=root_replies))
        # RLM builds its client lazily; give it one whose HTTP goes to the recording transport.
        rlm._client = LMClient(rlm.config, transport=transport)
        rlm.transport = transport  # type: ignore[attr-defined]
        made.append(rlm)
        return rlm

    yield make
    for rlm in made:
        rlm.close()


# ------------------------------------------------------------------------------------------ data

WORDS = ["amber", "basil", "cedar", "dune", "ember", "fjord", "glade", "heron", "iris", "jasper",
         "kelp", "lotus", "maple", "nectar", "onyx", "pine", "quartz", "reed", "sage", "thyme",
         "umber", "vale", "willow", "yarrow"]


@dataclass(frozen=True)
class Haystack:
    text: str
    key: str
    value: str
    query: str
    needle_at: int


def make_haystack(n_chars: int = 1_000_000, *, key: str = "curious-guava",
                  value: str = "7314159", seed: int = 7, depth: float = 0.55) -> Haystack:
    """Prose of about ``n_chars`` with one needle sentence at ``depth`` (0..1) of the text."""
    rng = random.Random(seed)
    parts: list[str] = []
    size = 0
    while size < n_chars:
        words = rng.choices(WORDS, k=rng.randint(6, 14))
        sentence = " ".join(words).capitalize() + f" {rng.randint(10, 999)}. "
        parts.append(sentence)
        size += len(sentence)
    text = "".join(parts)[:n_chars]
    needle = f"One of the special magic numbers for {key} is: {value}."
    at = text.rfind(". ", 0, int(len(text) * depth)) + 2
    text = text[:at] + needle + " " + text[at:]
    query = f"What is the special magic number for {key} mentioned in the provided text?"
    return Haystack(text, key, value, query, at)


@dataclass(frozen=True)
class LogContext:
    text: str
    n_lines: int
    level_error: int  # lines whose level is ERROR
    contains_error: int  # lines containing the text "ERROR" anywhere
    query: str  # asks for contains_error


def make_log(n_lines: int = 3000, *, seed: int = 11) -> LogContext:
    """A service log; the ground truth is counted here, independently of the scripted policies."""
    rng = random.Random(seed)
    lines: list[str] = []
    level_error = contains_error = 0
    for i in range(n_lines):
        level = rng.choices(["INFO", "DEBUG", "WARN", "ERROR"], [60, 20, 12, 8])[0]
        msg = rng.choice(["request served", "cache miss", "retrying upstream", "user login",
                          "ERRORS cleared from queue", "disk at 71%"])
        line = f"2025-03-{1 + i % 28:02d}T{i % 24:02d}:{i % 60:02d}:00Z {level} svc-{i % 7} {msg}"
        lines.append(line)
        level_error += level == "ERROR"
        contains_error += "ERROR" in line
    return LogContext("\n".join(lines), n_lines, level_error, contains_error,
                      "How many lines contain 'ERROR'?")


@pytest.fixture(scope="session")
def needle_haystack() -> Haystack:
    return make_haystack()


@pytest.fixture(scope="session")
def log_context() -> LogContext:
    return make_log()


@pytest.fixture(name="make_haystack")
def _make_haystack_fixture() -> Callable[..., Haystack]:
    return make_haystack


@pytest.fixture(name="make_log")
def _make_log_fixture() -> Callable[..., LogContext]:
    return make_log


class EchoKeyHandler(BaseHTTPRequestHandler):
    """Like some providers: an error message that echoes the API key it was sent."""

    def do_POST(self) -> None:  # noqa: N802
        self.rfile.read(int(self.headers.get("content-length", 0)))
        key = self.headers.get("authorization", "").removeprefix("Bearer ")
        body = json.dumps({"error": {"message": f"Key {key} is not allowed to use this model",
                                     "type": "invalid_request_error", "code": None}}).encode()
        self.send_response(400)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def echo_key_server() -> Iterator[str]:
    """Base URL of a loopback endpoint that answers every POST with HTTP 400 quoting the API key."""
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), EchoKeyHandler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_port}/v1"
    httpd.shutdown()
    httpd.server_close()
