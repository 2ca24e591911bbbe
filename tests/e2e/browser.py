"""Reusable browser-test helpers: a real ``jupyter lab`` on 127.0.0.1 and headless Chromium.

Import the fixtures into a test module (``from browser import lab, page``); no conftest needed.
Without ``/usr/bin/chromium`` the tests skip, unless ``CI=true``: then they fail loudly, so a CI
image that lost its browser cannot pass by skipping.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
REPO = Path(__file__).resolve().parents[2]
SCREENSHOTS = REPO / ".ci" / "artifacts" / "screenshots"
LABEXTENSION = REPO / "rlm_kernel" / "labextension"
EXTENSION_NAME = "rlm-kernel-extension"


def require_chromium() -> None:
    if Path(CHROMIUM).exists():
        return
    reason = f"{CHROMIUM} is missing (apt-get install chromium)"
    if os.environ.get("CI") == "true":
        pytest.fail(f"browser tests cannot run in CI: {reason}", pytrace=False)
    pytest.skip(reason)


@dataclass
class LabServer:
    url: str
    token: str
    root: Path
    log: Path

    def lab_url(self, path: str) -> str:
        # reset: start from an empty workspace, not the previous test's open tabs
        return f"{self.url}/lab/tree/{path}?reset&token={self.token}"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _isolated_env(home: Path) -> dict[str, str]:
    """Keep the user's settings and workspaces out; serve the tree's extension build if any."""
    env = dict(os.environ)
    env["JUPYTERLAB_SETTINGS_DIR"] = str(home / "settings")
    env["JUPYTERLAB_WORKSPACES_DIR"] = str(home / "workspaces")
    env["JUPYTER_RUNTIME_DIR"] = str(home / "runtime")
    # No "get notified about Jupyter news?" toast over the screenshots.
    news = home / "settings" / "@jupyterlab" / "apputils-extension"
    news.mkdir(parents=True)
    (news / "notification.jupyterlab-settings").write_text('{"fetchNews": "false"}')
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    if (LABEXTENSION / "package.json").exists():
        # First on JUPYTER_PATH wins, so the source tree's build beats an older installed copy.
        data = home / "data"
        (data / "labextensions").mkdir(parents=True)
        (data / "labextensions" / EXTENSION_NAME).symlink_to(LABEXTENSION)
        env["JUPYTER_PATH"] = os.pathsep.join(filter(None, [str(data), env.get("JUPYTER_PATH")]))
    return env


@contextlib.contextmanager
def scripted_lab(latency: float = 0.05) -> Iterator[tuple[LabServer, Any]]:
    """A JupyterLab whose kernels talk to a :class:`ScriptedServer` in this process (its request
    counter says whether a model was asked)."""
    from support import scripted_env

    from rlm_kernel.scripted import ScriptedModel, ScriptedServer

    srv = ScriptedServer(ScriptedModel(latency=latency), host="127.0.0.1", port=0)
    srv.start()
    try:
        with start_lab(scripted_env(srv.base_url)) as lab:
            yield lab, srv
    finally:
        srv.stop()


@contextlib.contextmanager
def start_lab(env: dict[str, str] | None = None) -> Iterator[LabServer]:
    """Start a JupyterLab server with a temp root dir (``env`` is added to its environment, and
    so to its kernels'); the app is exposed as ``window.jupyterapp``."""
    require_chromium()
    home = Path(tempfile.mkdtemp(prefix="rlm-lab-"))
    root = home / "root"
    root.mkdir()
    port, token = _free_port(), secrets.token_hex(16)
    log = home / "lab.log"
    cmd = [
        sys.executable, "-m", "jupyter", "lab",
        "--ip=127.0.0.1", f"--port={port}", "--ServerApp.port_retries=0",
        f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}",
        "--ServerApp.open_browser=False", "--LabApp.expose_app_in_browser=True",
        "--LabApp.news_url=None",
        "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
    ]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        cmd.append("--allow-root")  # CI containers run as root
    full_env = _isolated_env(home)
    full_env.update(env or {})
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=root, env=full_env)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"jupyter lab exited with {proc.returncode}:\n{log.read_text()}")
            try:
                with urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=2) as r:
                    json.load(r)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"jupyter lab not ready in 60 s:\n{log.read_text()}") from None
                time.sleep(0.25)
        yield LabServer(url=url, token=token, root=root, log=log)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture(scope="module")
def lab() -> Iterator[LabServer]:
    """A JupyterLab server with a temp root dir; the app is exposed as ``window.jupyterapp``."""
    with start_lab() as server:
        yield server


@contextlib.contextmanager
def browser_page():
    """A fresh headless Chromium page (1400x1000); console errors are kept on ``page.errors``."""
    require_chromium()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(viewport={"width": 1400, "height": 1000})
            pg = context.new_page()
            pg.errors = []  # type: ignore[attr-defined]
            pg.on("pageerror", lambda e: pg.errors.append(str(e)))  # type: ignore[attr-defined]
            pg.console = []  # type: ignore[attr-defined]
            pg.on("console", lambda m: pg.console.append(f"{m.type}: {m.text}"))  # type: ignore[attr-defined]
            yield pg
        finally:
            browser.close()


@pytest.fixture
def page(lab: LabServer):
    """A fresh headless Chromium page for the ``lab`` server's tests."""
    with browser_page() as pg:
        yield pg


def screenshot(pg, name: str) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    pg.screenshot(path=str(path))
    return path
