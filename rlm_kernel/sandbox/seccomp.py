"""A seccomp filter for what Landlock cannot see: which kinds of socket may be created.

Landlock's network rules cover TCP ``bind``/``connect`` only. Everything else a socket can reach
needs closing here, by refusing to *create* such sockets (``EPERM``):

- unix sockets by path (``/var/run/docker.sock``, D-Bus, an ssh-agent, other Jupyter kernels'
  IPC channels): Landlock (up to ABI 7) does not check ``connect`` on them;
- vsock (the hypervisor's host services), packet, SCTP and every other family or protocol;
- UDP, unless the policy allows it (a model endpoint named by a host name needs DNS over UDP);
- ``io_uring``, whose operations create sockets without passing through this filter;
- syscalls of another ABI (32-bit ``int 0x80``, x32), which would bypass the numbers checked here.

``socketpair`` stays allowed (asyncio needs it and such a pair reaches nothing outside), as do TCP
sockets over IPv4/IPv6, whose ``connect`` Landlock restricts by port, and netlink (read-only route
queries without capabilities). The filter is installed on every thread at once (TSYNC), so it
can come after the kernel has bound its own IPC sockets and started its threads.
"""

from __future__ import annotations

import ctypes
import os
import platform
import socket
from dataclasses import dataclass

__all__ = ["SeccompError", "supported", "install_socket_filter"]


class SeccompError(OSError):
    """The filter could not be installed."""


@dataclass(frozen=True)
class _Arch:
    audit: int  # AUDIT_ARCH_* seen in seccomp_data.arch
    seccomp: int  # syscall numbers
    socket: int
    io_uring_setup: int
    x32_bit: int  # syscall numbers with this bit set are another ABI (0: none)


_ARCHES = {
    "x86_64": _Arch(audit=0xC000003E, seccomp=317, socket=41, io_uring_setup=425,
                    x32_bit=0x40000000),
    "aarch64": _Arch(audit=0xC00000B7, seccomp=277, socket=198, io_uring_setup=425, x32_bit=0),
}

# Classic BPF opcodes and seccomp return values (linux/filter.h, linux/seccomp.h).
_LD_W_ABS = 0x20
_JEQ_K = 0x15
_JGE_K = 0x35
_AND_K = 0x54
_RET_K = 0x06
_RET_ALLOW = 0x7FFF0000
_RET_ERRNO = 0x00050000
_SET_MODE_FILTER = 1
_FLAG_TSYNC = 1
_PR_SET_NO_NEW_PRIVS = 38
# Offsets in struct seccomp_data: nr, arch, then the low 32 bits of each argument (little-endian).
_NR, _ARCH = 0, 4
_ARG = [16 + 8 * i for i in range(6)]
_SOCK_TYPE_MASK = 0xF  # SOCK_NONBLOCK / SOCK_CLOEXEC live above it


# One instruction: (opcode, jump-if-true, jump-if-false, k); jumps name a label or are 0. A tuple
# whose first item is a string is a label marking the next instruction.
_Ins = tuple[int | str, int | str, int | str, int]


class _SockFilter(ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint16), ("jt", ctypes.c_uint8), ("jf", ctypes.c_uint8),
                ("k", ctypes.c_uint32)]


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.POINTER(_SockFilter))]


def supported() -> str | None:
    """None if this machine's architecture is covered, else why not."""
    machine = platform.machine()
    return None if machine in _ARCHES else f"no seccomp socket filter for {machine}"


def _program(arch: _Arch, allow_udp: bool) -> list[_Ins]:
    """The filter, with symbolic jumps."""
    deny = _RET_ERRNO | 1  # EPERM
    p: list[_Ins] = [
        (_LD_W_ABS, 0, 0, _ARCH),
        (_JEQ_K, 0, "deny", arch.audit),
        (_LD_W_ABS, 0, 0, _NR),
    ]
    if arch.x32_bit:
        p.append((_JGE_K, "deny", 0, arch.x32_bit))
    p += [
        (_JEQ_K, "deny", 0, arch.io_uring_setup),
        (_JEQ_K, 0, "allow", arch.socket),
        # socket(family, type, protocol)
        (_LD_W_ABS, 0, 0, _ARG[0]),
        (_JEQ_K, "allow", 0, socket.AF_NETLINK),
        (_JEQ_K, "inet", 0, socket.AF_INET),
        (_JEQ_K, "inet", "deny", socket.AF_INET6),
        ("inet", 0, 0, 0),
        (_LD_W_ABS, 0, 0, _ARG[1]),
        (_AND_K, 0, 0, _SOCK_TYPE_MASK),
        (_JEQ_K, "stream", 0, socket.SOCK_STREAM),
        (_JEQ_K, "dgram" if allow_udp else "deny", "deny", socket.SOCK_DGRAM),
        ("stream", 0, 0, 0),
        (_LD_W_ABS, 0, 0, _ARG[2]),
        (_JEQ_K, "allow", 0, 0),
        (_JEQ_K, "allow", "deny", socket.IPPROTO_TCP),
        ("dgram", 0, 0, 0),
        (_LD_W_ABS, 0, 0, _ARG[2]),
        (_JEQ_K, "allow", 0, 0),
        (_JEQ_K, "allow", "deny", socket.IPPROTO_UDP),
        ("allow", 0, 0, 0),
        (_RET_K, 0, 0, _RET_ALLOW),
        ("deny", 0, 0, 0),
        (_RET_K, 0, 0, deny),
    ]
    return p


def _assemble(program: list[_Ins]) -> list[tuple[int, int, int, int]]:
    """Resolve labels to the relative jumps classic BPF uses."""
    labels: dict[str, int] = {}
    code: list[_Ins] = []
    for ins in program:
        if isinstance(ins[0], str):
            labels[ins[0]] = len(code)
        else:
            code.append(ins)
    out = []
    for i, (op, jt, jf, k) in enumerate(code):
        def offset(target: int | str, i: int = i) -> int:
            return target if isinstance(target, int) else labels[target] - i - 1
        assert isinstance(op, int)
        out.append((op, offset(jt), offset(jf), k))
    return out


def install_socket_filter(*, allow_udp: bool) -> None:
    """Install the filter on every thread of this process; it cannot be removed afterwards."""
    why = supported()
    if why:
        raise SeccompError(why)
    arch = _ARCHES[platform.machine()]
    code = _assemble(_program(arch, allow_udp))
    filters = (_SockFilter * len(code))(*[_SockFilter(*ins) for ins in code])
    prog = _SockFprog(len(code), filters)
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    if libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        err = ctypes.get_errno()
        raise SeccompError(err, f"prctl(PR_SET_NO_NEW_PRIVS): {os.strerror(err)}")
    ret = libc.syscall(ctypes.c_long(arch.seccomp), ctypes.c_uint(_SET_MODE_FILTER),
                       ctypes.c_uint(_FLAG_TSYNC), ctypes.byref(prog))
    if ret != 0:
        err = ctypes.get_errno() if ret < 0 else 0
        # A positive return is the id of a thread that could not be synchronised.
        raise SeccompError(err, f"seccomp(SET_MODE_FILTER, TSYNC) failed: "
                                f"{os.strerror(err) if err else f'thread {ret} not synchronised'}")
