"""The sandbox of the ``rlm-sandboxed`` kernel: what model-written code may read, write and reach.

Mechanism, and why. The kernel confines *itself*, with Linux Landlock, before it runs any code:

- Landlock needs no daemon, no setuid helper, no container runtime and no user namespaces; an
  unprivileged process restricts itself, and every thread and child process it starts afterwards
  (``sh -c``, ``subprocess``, ``multiprocessing``) inherits the rules, which nothing can lift.
- It restricts files (read, write, execute, per folder) *and*, from ABI 4 (Linux 6.7), TCP
  ``connect``/``bind`` per port: the only mechanism here that can leave one way out to the model
  while closing every other port. Bubblewrap (which this machine can also run) hides paths with
  mount namespaces but its network choice is all or nothing (``--unshare-net`` also cuts the
  model endpoint and a TCP front-end); a container runtime is absent on many machines.
- A seccomp filter (:mod:`.seccomp`) closes what Landlock's rules do not cover: sockets other than
  TCP, notably unix sockets by path (docker, D-Bus, ssh-agent, other kernels' IPC), UDP, and
  ``io_uring``. ``no_new_privs`` and dropping every capability
  (:mod:`.privileges`) keep a root kernel from reaching around the rules (raw sockets, modules).

Order matters because Landlock and capabilities are per thread, and because the kernel's ZeroMQ
I/O threads make its connections: :func:`enter` runs while the process still has one thread,
before the kernel creates a ZeroMQ socket; the kernel then binds its own sockets (its ports and IPC
folder are allowed for that) and :func:`seal` installs the seccomp filter on all threads at once.
A plain process calls :func:`apply` (both).

The model endpoint and the key: the kernel does not connect to the endpoint itself. A forwarder
process (:mod:`.forwarder`), started before the sandbox and so outside it, holds the API key and
alone reaches the endpoint's host; the kernel reaches the forwarder on a loopback port with a
per-kernel token. Model code therefore never finds the provider key in the kernel, and its only
network exit is that one port (Landlock port rules hold for every address, so a server of the
attacker's listening on the same port number at a literal IP address is reachable too).

What it does not stop (say so to users): model code runs in the kernel's process, so it can
inspect the kernel's Python objects and use the forwarder (the model API at the user's cost, only
its chat and model-list paths); it can see that files exist (``stat``) where it cannot open them;
it can use CPU, memory and disk in its folders. See docs/sandbox.md.
"""

from __future__ import annotations

import os
import platform
import sys
from dataclasses import dataclass, field

from . import landlock, privileges, seccomp
from .environment import scrub
from .landlock import FS, NET
from .policy import Policy, PolicyError, endpoint_ports, kernel_policy
from .settings import LaunchSettings

__all__ = ["SandboxUnavailable", "Policy", "PolicyError", "kernel_policy", "endpoint_ports",
           "LaunchSettings", "Report", "probe", "enter", "seal", "apply", "MIN_ABI"]

MIN_ABI = 4  # TCP port rules; below it the network would be open
_READ = FS.READ_FILE | FS.READ_DIR | FS.EXECUTE
_WRITE = landlock.fs_rights(99) & ~(FS.MAKE_CHAR | FS.MAKE_BLOCK)
_DEVICE = FS.READ_FILE | FS.WRITE_FILE | FS.IOCTL_DEV


class SandboxUnavailable(RuntimeError):
    """This machine cannot enforce the sandbox; the message says why and what to do."""


@dataclass
class Report:
    """What was enforced, for the kernel's banner, ``%rlm config`` and logs."""

    abi: int
    policy: Policy
    removed_env: list[str] = field(default_factory=list)
    sealed: bool = False

    def describe(self) -> str:
        layers = f"Landlock ABI {self.abi}" + (", seccomp" if self.sealed else "")
        return f"sandboxed ({layers}): {self.policy.summary()}"


def probe(min_abi: int = MIN_ABI) -> int:
    """The Landlock ABI, or :class:`SandboxUnavailable` saying why this machine cannot sandbox."""
    if sys.platform != "linux":
        raise SandboxUnavailable(
            f"the sandboxed kernel needs Linux (Landlock); this is {platform.system()}. Run the "
            "plain kernel in a container or VM instead (README, Safety)")
    abi = landlock.abi_version()
    if abi == 0:
        raise SandboxUnavailable(
            f"Landlock is not enabled in this Linux kernel ({platform.release()}); enable it "
            "(CONFIG_SECURITY_LANDLOCK, and 'landlock' in the lsm= boot parameter) or run the "
            "plain kernel in a container or VM (README, Safety)")
    if abi < min_abi:
        raise SandboxUnavailable(
            f"this Linux kernel ({platform.release()}) has Landlock ABI {abi}, which cannot "
            f"restrict network connections; the sandbox needs ABI {min_abi} (Linux 6.7) or newer")
    why = seccomp.supported()
    if why:
        raise SandboxUnavailable(f"{why}: unix sockets could not be blocked")
    return abi


def _threads() -> list[str]:
    return os.listdir("/proc/self/task")


def enter(policy: Policy, *, min_abi: int = MIN_ABI) -> Report:
    """Confine this process for good: files, TCP ports, signals, environment, capabilities.

    Must run while the process has a single thread (threads already running would keep every
    right). Raises :class:`SandboxUnavailable` (nothing changed) if the machine cannot do it.
    """
    abi = probe(min_abi)
    threads = _threads()
    if len(threads) != 1:
        raise SandboxUnavailable(
            f"the sandbox must start before any thread ({len(threads)} running); this is a bug "
            "in rlm-kernel, please report it")
    rules = landlock.Ruleset(abi)
    try:
        for path in policy.read:
            rules.allow_path(path, _READ)
        for path in policy.write:
            rules.allow_path(path, _WRITE)
        for path in policy.devices:
            rules.allow_path(path, _DEVICE)
        for path in policy.make_sock:
            rules.allow_path(path, FS.MAKE_SOCK)
        for port in policy.connect_ports:
            rules.allow_port(port, NET.CONNECT_TCP)
        for port in policy.bind_ports:
            rules.allow_port(port, NET.BIND_TCP)
    except BaseException:
        rules.close()
        raise
    removed = scrub(os.environ, policy.tmpdir, policy.keep_env)
    sys.dont_write_bytecode = True  # site-packages is read-only now: no failed .pyc writes
    os.chdir(policy.workdir)
    privileges.set_no_new_privs()
    privileges.drop_all()
    rules.restrict_self()
    return Report(abi=abi, policy=policy, removed_env=removed)


def seal(report: Report) -> Report:
    """Block sockets Landlock cannot see (unix by path, UDP unless DNS is needed), all threads."""
    seccomp.install_socket_filter(allow_udp=report.policy.allow_udp)
    report.sealed = True
    return report


def apply(policy: Policy, *, min_abi: int = MIN_ABI) -> Report:
    """:func:`enter` then :func:`seal`: the whole sandbox, for a single-threaded process."""
    return seal(enter(policy, min_abi=min_abi))
