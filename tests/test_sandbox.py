"""The sandbox (rlm_kernel.sandbox) in plain processes: every hostile attempt of the corpus fails
inside it and succeeds outside it, and what model code legitimately needs still works.

Each mode runs in one fresh subprocess (the sandbox cannot be undone): the harness enters the
sandbox or not, runs every snippet in its own namespace and reports what each raised and printed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from sandbox_world import CORPUS, UNSUPPORTED, World
from support import TEST_KEY

from rlm_kernel import sandbox
from rlm_kernel.sandbox import PolicyError, SandboxUnavailable, endpoint_ports, kernel_policy

ROOT = Path(__file__).resolve().parent.parent
needs_sandbox = pytest.mark.skipif(UNSUPPORTED is not None, reason=str(UNSUPPORTED))

HARNESS = r"""
import contextlib, io, json, sys
spec = json.loads(sys.argv[1])
from rlm_kernel.sandbox import forwarder
fw = forwarder.start(spec["endpoint"], "sk-held-by-the-forwarder-0123456789")
if spec["sandbox"]:
    from rlm_kernel import sandbox
    policy = sandbox.kernel_policy(workdir=spec["work"], tmpdir=spec["tmp"], read=spec["read"],
                                   endpoints=[fw.url], home=spec["home"])
    sandbox.apply(policy)
results = {}
for name, code in spec["snippets"].items():
    code = code.replace("@FORWARDER@", fw.url).replace("@TOKEN@", fw.token)
    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out):
            exec(code, {})
        results[name] = {"raised": None, "out": out.getvalue()}
    except BaseException as exc:
        results[name] = {"raised": type(exc).__name__, "out": out.getvalue(), "msg": str(exc)}
print(json.dumps(results))
"""

# What model code needs, which the sandbox must leave working.
NEEDED = {
    "reach the model endpoint through the forwarder":
        "import json, urllib.request\n"
        "req = urllib.request.Request('@FORWARDER@/chat/completions', data=b'{}', headers={\n"
        "    'Authorization': 'Bearer @TOKEN@', 'Content-Type': 'application/json'})\n"
        "answer = json.load(urllib.request.urlopen(req, timeout=30))\n"
        "assert answer['choices'][0]['message']['content'] == 'forty-two'",
    "read the context file": "assert open('@CONTEXT@').read() == 'the context'",
    "write, read and delete in the working folder":
        "import os\nopen('scratch.txt', 'w').write('x')\nassert open('scratch.txt').read() == 'x'\n"
        "os.remove('scratch.txt')",
    "make a temporary file":
        "import tempfile\nwith tempfile.NamedTemporaryFile() as f: f.write(b'x')",
    "import a module not loaded yet": "import xml.dom.minidom, sqlite3, decimal",
    "run a shell command": "import subprocess\n"
        "assert subprocess.run(['sh', '-c', 'echo hi'], capture_output=True, text=True).stdout == 'hi\\n'",
    "resolve localhost": "import socket\nsocket.getaddrinfo('localhost', 80)",
    "use asyncio": "import asyncio\nasyncio.run(asyncio.sleep(0))",
    "start a thread": "import threading\nt = threading.Thread(target=lambda: None)\nt.start(); t.join()",
}

# Denials with no unsandboxed counterpart worth asserting (they depend on the machine).
SANDBOX_ONLY_DENIED = {
    "create an io_uring": "import ctypes, errno\nlibc = ctypes.CDLL(None, use_errno=True)\n"
        "params = ctypes.create_string_buffer(120)\n"
        "assert libc.syscall(425, 1, params) == -1 and ctypes.get_errno() == errno.EPERM",
    "open a vsock socket": "import socket\nsocket.socket(socket.AF_VSOCK, socket.SOCK_STREAM)",
    "open a raw socket": "import socket\nsocket.socket(socket.AF_INET, socket.SOCK_RAW, 1)",
    "bind a listening TCP port":
        "import socket\ns = socket.socket()\ns.bind(('127.0.0.1', 0))",
}

ENV_CHECK = (
    "import os, json\n"
    "print(json.dumps({'names': sorted(os.environ), 'home': os.environ['HOME'],\n"
    "                  'tmp': os.environ['TMPDIR'], 'cwd': os.getcwd()}))"
)
CAPS_CHECK = "from rlm_kernel.sandbox import privileges\nprint(privileges.effective())"


def _run(world: World, snippets: dict[str, str], *, sandboxed: bool, tmp: Path) -> dict[str, Any]:
    context = world.root / "context.txt"
    context.write_text("the context")
    tmp.mkdir(exist_ok=True)
    fill = {k: world.fill(v).replace("@CONTEXT@", str(context)) for k, v in snippets.items()}
    spec = {"sandbox": sandboxed, "work": str(world.work), "tmp": str(tmp), "read": [str(context)],
            "endpoint": world.endpoint_url, "home": str(world.home), "snippets": fill}
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": str(ROOT),
           "HOME": str(world.home), "OPENAI_API_KEY": TEST_KEY,
           "AWS_SECRET_ACCESS_KEY": "PLANTED-AWS-CREDENTIAL", "GITHUB_TOKEN": "ghp_PLANTED"}
    proc = subprocess.run([sys.executable, "-c", HARNESS, json.dumps(spec)], env=env,
                          cwd=world.work, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Any:
    w = World(tmp_path_factory.mktemp("sandbox-world"))
    yield w
    w.close()


@pytest.fixture(scope="module")
def inside(world: World, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    snippets = {c["name"]: c["code"] for c in CORPUS}
    snippets.update(NEEDED)
    snippets.update(SANDBOX_ONLY_DENIED)
    snippets["env"] = ENV_CHECK
    snippets["caps"] = CAPS_CHECK
    return _run(world, snippets, sandboxed=True, tmp=tmp_path_factory.mktemp("sbx-tmp"))


@pytest.fixture(scope="module")
def outside(world: World, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    snippets = {c["name"]: c["code"] for c in CORPUS}
    snippets["caps"] = CAPS_CHECK
    return _run(world, snippets, sandboxed=False, tmp=tmp_path_factory.mktemp("plain-tmp"))


@needs_sandbox
@pytest.mark.parametrize("case", CORPUS, ids=[c["name"] for c in CORPUS])
def test_each_hostile_attempt_fails_in_the_sandbox(case: dict[str, Any], inside: dict[str, Any],
                                                  world: World) -> None:
    got = inside[case["name"]]
    assert got["raised"] == case["sandboxed"]["raises"], got
    assert case["unsandboxed"]["prints"] not in got["out"]
    assert not list(world.outside.iterdir()), "something was written outside the working folder"


@pytest.mark.parametrize("case", CORPUS, ids=[c["name"] for c in CORPUS])
def test_each_hostile_attempt_succeeds_without_the_sandbox(case: dict[str, Any],
                                                           outside: dict[str, Any]) -> None:
    got = outside[case["name"]]
    assert got["raised"] is None, got
    assert case["unsandboxed"]["prints"] in got["out"]


@needs_sandbox
@pytest.mark.parametrize("name", list(NEEDED))
def test_what_model_code_needs_still_works_in_the_sandbox(name: str, inside: dict[str, Any]) -> None:
    assert inside[name]["raised"] is None, inside[name]


@needs_sandbox
@pytest.mark.parametrize("name", list(SANDBOX_ONLY_DENIED))
def test_sockets_landlock_cannot_see_are_refused_by_seccomp(name: str, inside: dict[str, Any]) -> None:
    got = inside[name]
    assert got["raised"] in ("PermissionError", None), got
    if got["raised"] is None:  # the io_uring snippet asserts EPERM itself
        assert name == "create an io_uring"
    else:
        assert "Operation not permitted" in got["msg"] or "Permission denied" in got["msg"]


@needs_sandbox
def test_secrets_leave_the_environment_and_home_and_temp_are_private(inside: dict[str, Any],
                                                                     world: World) -> None:
    env = json.loads(inside["env"]["out"])
    for secret in ("OPENAI_API_KEY", "AWS_SECRET_ACCESS_KEY", "GITHUB_TOKEN"):
        assert secret not in env["names"]
    assert "PATH" in env["names"]
    assert not env["home"].startswith(str(world.home)) and env["home"].startswith(env["tmp"])
    assert env["cwd"] == str(world.work)


@needs_sandbox
def test_a_root_kernel_gives_up_every_capability(inside: dict[str, Any],
                                                  outside: dict[str, Any]) -> None:
    assert int(inside["caps"]["out"]) == 0
    if os.geteuid() == 0:  # CI runs as root: prove the check can fail
        assert int(outside["caps"]["out"]) != 0


@needs_sandbox
def test_the_sandbox_refuses_a_kernel_without_the_landlock_abi_it_needs(tmp_path: Path) -> None:
    (tmp_path / "w").mkdir()
    before = dict(os.environ)
    policy = kernel_policy(workdir=str(tmp_path / "w"), tmpdir=str(tmp_path), home="/nonexistent")
    with pytest.raises(SandboxUnavailable, match=r"Landlock ABI \d+.*needs ABI 99"):
        sandbox.enter(policy, min_abi=99)
    assert dict(os.environ) == before  # nothing was changed


@needs_sandbox
def test_the_sandbox_refuses_to_start_once_other_threads_run(tmp_path: Path) -> None:
    code = (
        "import threading, time\n"
        "from rlm_kernel import sandbox\n"
        "threading.Thread(target=time.sleep, args=(30,), daemon=True).start()\n"
        f"p = sandbox.kernel_policy(workdir={str(tmp_path)!r}, tmpdir={str(tmp_path)!r}, "
        "home='/nonexistent')\n"
        "try:\n    sandbox.enter(p)\nexcept sandbox.SandboxUnavailable as e:\n    print('refused:', e)\n"
        "import os\nprint('environment kept:', 'PYTHONPATH' in os.environ)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert "refused: the sandbox must start before any thread (2 running)" in proc.stdout
    assert "environment kept: True" in proc.stdout  # and the process was left as it was


def test_the_home_folder_or_a_shared_folder_is_never_the_working_folder(tmp_path: Path) -> None:
    home = tmp_path / "home"
    (home / "project").mkdir(parents=True)
    for bad in (home, tmp_path, "/", "/tmp"):
        with pytest.raises(PolicyError, match="working folder"):
            kernel_policy(workdir=str(bad), tmpdir=str(tmp_path), home=str(home))
    ok = kernel_policy(workdir=str(home / "project"), tmpdir=str(tmp_path), home=str(home))
    assert ok.workdir == str(home / "project")


def test_reading_the_home_folder_or_root_is_refused_not_silently_allowed(tmp_path: Path) -> None:
    home = tmp_path / "home"
    (home / "data").mkdir(parents=True)
    (tmp_path / "w").mkdir()
    for bad in (home, "/", "/tmp"):
        with pytest.raises(PolicyError, match="will not allow reading"):
            kernel_policy(workdir=str(tmp_path / "w"), tmpdir=str(tmp_path), read=[str(bad)],
                          home=str(home))
    policy = kernel_policy(workdir=str(tmp_path / "w"), tmpdir=str(tmp_path),
                           read=[str(home / "data")], home=str(home))
    assert str(home / "data") in policy.read and str(home) not in policy.read


def test_endpoint_ports_are_per_port_and_say_when_dns_is_needed() -> None:
    assert endpoint_ports(["http://127.0.0.1:8000/v1"]) == ((8000,), False)
    assert endpoint_ports(["http://localhost:11434/v1"]) == ((11434,), False)
    assert endpoint_ports(["https://api.openai.com/v1"]) == ((443,), True)
    assert endpoint_ports(["http://[::1]:9000", "http://gateway.internal"]) == ((80, 9000), True)
    assert endpoint_ports([""]) == ((), False)  # the in-process scripted model: no port at all


def test_only_the_given_endpoints_and_the_kernel_ports_are_reachable(tmp_path: Path) -> None:
    (tmp_path / "w").mkdir()
    policy = kernel_policy(workdir=str(tmp_path / "w"), tmpdir=str(tmp_path),
                           endpoints=["http://127.0.0.1:4321/v1"], kernel_ports=[5001, 5002],
                           environ={"HTTPS_PROXY": "http://proxy.local:3128"}, home="/nonexistent")
    assert policy.connect_ports == (4321, 5001, 5002)  # never a proxy's: the forwarder uses it
    assert policy.bind_ports == (5001, 5002)
    assert not policy.allow_udp
    assert "4321" in policy.summary() and "5001" not in policy.summary()


def test_the_policy_lets_the_python_environment_be_read(tmp_path: Path) -> None:
    (tmp_path / "w").mkdir()
    policy = kernel_policy(workdir=str(tmp_path / "w"), tmpdir=str(tmp_path), home="/nonexistent")
    assert any(sys.prefix == p or sys.prefix.startswith(p + "/") for p in policy.read)
    assert "/usr" in policy.read and "/etc" not in policy.read


def test_the_root_model_is_told_the_sandbox_limits_and_a_replay_rebuilds_that_prompt(
        rlm_inproc: Any) -> None:
    from rlm_kernel.engine import build_history
    from rlm_kernel.prompts import SANDBOX_NOTE

    rlm = rlm_inproc(["FINAL(done)"], sandboxed=True)
    result = rlm.run("what is here?", context="some text")
    system = rlm.transport.root_requests()[0][0]["content"]
    assert system.endswith(SANDBOX_NOTE) and "PermissionError" in system
    assert result.run.settings["sandboxed"] is True
    plain = rlm_inproc(["FINAL(done)"])
    plain.run("what is here?", context="some text")
    assert SANDBOX_NOTE not in plain.transport.root_requests()[0][0]["content"]
    # Replayed anywhere, the recorded setting rebuilds the same system prompt (cache keys hold).
    replayed = plain.config.replayable(result.run.settings)
    assert build_history(result.run, replayed)[0]["content"] == system
