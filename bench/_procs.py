"""Running a measured process: ``rlm-kernel run``/``replay`` or a peer job (``bench/_peers.py``).

Why whole processes: the figures must hold whatever the kernel's internals become, so the kernel
path is measured only through its public entry points (the ``rlm-kernel`` command, or
``python -m rlm_kernel`` where that command is not installed), and each peer runs in a scratch
process of its own interpreter (rlms in ``bench/.venv``, dspy in its own venv).

What is measured for a process (``Proc``): wall from start to exit; its CPU (user+sys) from the
kernel's own accounting of the reaped child (``os.wait4``), which includes children it reaped
(the rlm kernel, dspy's Deno); and, when a child ``... -f <connection file>`` (a Jupyter kernel)
appears, that kernel's CPU, sampled with psutil every ``SAMPLE_S`` until it exits. The front-end's
own CPU is the first minus the second.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SAMPLE_S = 0.01
ENV = {"OPENAI_API_KEY": "bench", "RLM_MODEL": "scripted-root", "RLM_SUB_MODEL": "scripted-sub"}


@dataclass
class Proc:
    argv: list[str]
    returncode: int | None  # None: killed at the time bound
    wall_s: float
    cpu_s: float  # the process and every child it reaped
    kernel_cpu_s: float | None = None  # the Jupyter kernel child, if one ran
    kernel_pid: int | None = None
    stdout: str = ""
    stderr: str = ""
    result: dict[str, Any] = field(default_factory=dict)  # a peer job's RESULT line

    @property
    def timed_out(self) -> bool:
        return self.returncode is None

    @property
    def frontend_cpu_s(self) -> float | None:
        return None if self.kernel_cpu_s is None else self.cpu_s - self.kernel_cpu_s

    def check(self) -> Proc:
        """Raise with the process's last words if it failed or timed out."""
        if self.returncode != 0:
            what = "did not finish" if self.timed_out else f"exited {self.returncode}"
            raise RuntimeError(f"{' '.join(self.argv[:4])} ... {what}:\n{self.stderr[-2000:]}")
        return self


def _cpu_of(proc: Any) -> float:
    t = proc.cpu_times()
    return t.user + t.system


class _KernelWatch(threading.Thread):
    """Samples the CPU of the first descendant that looks like a Jupyter kernel (``-f`` arg)."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.kernel_pid: int | None = None
        self.kernel_cpu: float | None = None
        self.done = threading.Event()

    def run(self) -> None:
        import psutil

        try:
            parent = psutil.Process(self.pid)
        except psutil.Error:
            return
        kernel = None
        while not self.done.is_set():
            try:
                if kernel is None:
                    for child in parent.children(recursive=True):
                        try:
                            if "-f" in child.cmdline():
                                kernel, self.kernel_pid = child, child.pid
                                break
                        except psutil.Error:
                            continue
                if kernel is not None:
                    self.kernel_cpu = _cpu_of(kernel)
            except psutil.Error:
                if kernel is not None:
                    return  # the kernel exited: keep its last sample
                if not parent.is_running():
                    return
            self.done.wait(SAMPLE_S)


def run(argv: list[str], *, env: dict[str, str] | None = None, timeout: float = 600,
        cwd: str | None = None, watch_kernel: bool = False) -> Proc:
    """Run ``argv`` to completion (or kill its process group at ``timeout`` s) and measure it."""
    full_env = {**os.environ, **(env or {})}
    t0 = time.perf_counter()
    p = subprocess.Popen(argv, env=full_env, cwd=cwd, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True,
                         start_new_session=True)
    out: dict[str, str] = {}
    readers = [threading.Thread(target=lambda k, f: out.__setitem__(k, f.read()), args=(k, f),
                                daemon=True) for k, f in (("out", p.stdout), ("err", p.stderr))]
    for r in readers:
        r.start()
    watch = _KernelWatch(p.pid) if watch_kernel else None
    if watch is not None:
        watch.start()
    killed = threading.Event()

    def kill() -> None:
        killed.set()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(p.pid, signal.SIGKILL)

    timer = threading.Timer(timeout, kill)
    timer.start()
    try:
        _, status, usage = os.wait4(p.pid, 0)
    finally:
        timer.cancel()
    wall = time.perf_counter() - t0
    p.returncode = os.waitstatus_to_exitcode(status)
    if watch is not None:
        watch.done.set()
        watch.join(5)
    # whatever the process left in its group (a kernel it failed to stop) goes too
    with contextlib.suppress(ProcessLookupError):
        os.killpg(p.pid, signal.SIGKILL)
    for r in readers:
        r.join(10)
    proc = Proc(argv=argv, returncode=None if killed.is_set() else p.returncode, wall_s=wall,
                cpu_s=usage.ru_utime + usage.ru_stime,
                kernel_cpu_s=watch.kernel_cpu if watch else None,
                kernel_pid=watch.kernel_pid if watch else None,
                stdout=out.get("out", ""), stderr=out.get("err", ""))
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            proc.result = json.loads(line[len("RESULT "):])
    return proc


# ------------------------------------------------------------------------------- the commands


def rlm_kernel_cmd() -> list[str]:
    """The ``rlm-kernel`` command of this interpreter, or ``python -m rlm_kernel`` (the same CLI)
    when the console script is not installed (a checkout run with PYTHONPATH)."""
    script = Path(sys.executable).parent / "rlm-kernel"
    return [str(script)] if script.exists() else [sys.executable, "-m", "rlm_kernel"]


def kernel_run(url: str, context: Path, query: str, output: Path, *, concurrency: int | None,
               max_steps: int = 30, timeout: float = 600) -> Proc:
    """``rlm-kernel run`` end to end against the bench server, the kernel's CPU sampled."""
    argv = [*rlm_kernel_cmd(), "run", "--context", str(context), "--query", query,
            "--base-url", url, "--model", "scripted-root", "--sub-model", "scripted-sub",
            "--max-steps", str(max_steps), "--output", str(output)]
    if concurrency:
        argv += ["--concurrency", str(concurrency)]
    env = {k: v for k, v in ENV.items() if k != "RLM_CONCURRENCY"}
    return run(argv, env=env, timeout=timeout, watch_kernel=True)


def replay(notebook: Path, output: Path, timeout: float) -> Proc:
    return run([*rlm_kernel_cmd(), "replay", str(notebook), "--output", str(output)],
               timeout=timeout, watch_kernel=True)


# ---------------------------------------------------------------------------------- the peers

DSPY_VENV_ENV = "BENCH_DSPY_PYTHON"


def peer_python(peer: str) -> str | None:
    """The interpreter that has ``peer`` installed, or None (then its rows are skipped).

    rlms: this interpreter (``bench/.venv`` holds it). dspy: ``$BENCH_DSPY_PYTHON``, else
    ``bench/.venv-dspy`` (``bench/run.sh`` makes it), else this interpreter."""
    if peer == "dspy":
        candidates = [os.environ.get(DSPY_VENV_ENV, ""), str(HERE / ".venv-dspy" / "bin" / "python"),
                      sys.executable]
        module = "dspy"
    elif peer == "rlms":
        candidates, module = [sys.executable], "rlm"
    else:  # library, openai, threads: this interpreter
        return sys.executable
    for py in filter(None, candidates):
        if not (Path(py).exists() or shutil.which(py)):
            continue
        probe = subprocess.run([py, "-c", f"import {module}"], capture_output=True)
        if probe.returncode == 0:
            return py
    return None


def skip_line(peer: str) -> str:
    how = ("bash bench/run.sh installs rlms==0.1.3 in bench/.venv" if peer == "rlms" else
           "bash bench/run.sh makes bench/.venv-dspy (dspy, deno); or set "
           f"{DSPY_VENV_ENV} to a python that has dspy")
    return f"SKIP {peer}: not installed for this run ({how})"


def peer_job(peer: str, job_args: list[str], *, timeout: float = 600,
             env: dict[str, str] | None = None) -> Proc | None:
    """Run ``bench/_peers.py <peer> ...`` under the peer's interpreter; None if not installed."""
    py = peer_python(peer)
    if py is None:
        print(skip_line(peer), flush=True)
        return None
    return run([py, str(HERE / "_peers.py"), peer, *job_args], timeout=timeout,
               env={**ENV, "PYTHONPATH": os.environ.get("PYTHONPATH", ""), **(env or {})})
