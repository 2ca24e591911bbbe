"""Giving up privileges for good: ``no_new_privs`` and every Linux capability.

Landlock needs ``no_new_privs`` (no setuid/setcap program run later can gain rights). Dropping
capabilities matters when the kernel runs as root (containers, CI): Landlock rules bind root too,
but capabilities reach around them: ``CAP_NET_RAW`` builds TCP packets by hand past the port rules,
``CAP_SYS_MODULE`` loads kernel code, ``CAP_SYS_ADMIN`` does almost anything. With the bounding
set emptied, no program started later (even as uid 0) gets a capability back.

Like Landlock, capabilities are per thread: call :func:`drop_all` while the process has one thread.
"""

from __future__ import annotations

import ctypes
import os

__all__ = ["set_no_new_privs", "drop_all", "capabilities_held", "effective"]

_PR_CAPBSET_READ = 23
_PR_CAPBSET_DROP = 24
_PR_SET_NO_NEW_PRIVS = 38
_PR_CAP_AMBIENT = 47
_PR_CAP_AMBIENT_CLEAR_ALL = 4
_CAPABILITY_VERSION_3 = 0x20080522
_CAP_SETPCAP = 8

_libc = ctypes.CDLL(None, use_errno=True)


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                ("inheritable", ctypes.c_uint32)]


def _check(ret: int, what: str) -> None:
    if ret != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def set_no_new_privs() -> None:
    _check(_libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "prctl(PR_SET_NO_NEW_PRIVS)")


def _last_cap() -> int:
    try:
        with open("/proc/sys/kernel/cap_last_cap") as f:
            return int(f.read())
    except (OSError, ValueError):
        return 63  # probe below: dropping an unknown capability fails with EINVAL


def capabilities_held() -> list[int]:
    """Capabilities still in this thread's bounding set."""
    return [cap for cap in range(_last_cap() + 1)
            if _libc.prctl(_PR_CAPBSET_READ, cap, 0, 0, 0) == 1]


def effective() -> int:
    """This thread's effective capabilities, as a bit mask (0: none)."""
    header = _CapHeader(_CAPABILITY_VERSION_3, 0)
    data = (_CapData * 2)()
    _check(_libc.capget(ctypes.byref(header), data), "capget")
    return data[0].effective | data[1].effective << 32


def drop_all() -> None:
    """Empty the bounding and ambient sets, then the effective, permitted and inheritable sets.

    The bounding set can only be emptied holding CAP_SETPCAP (root has it); a process without it
    runs nothing that could gain a capability anyway once ``no_new_privs`` is set.
    """
    if effective() & (1 << _CAP_SETPCAP):
        for cap in capabilities_held():
            _check(_libc.prctl(_PR_CAPBSET_DROP, cap, 0, 0, 0), f"prctl(PR_CAPBSET_DROP, {cap})")
    _libc.prctl(_PR_CAP_AMBIENT, _PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0)  # EINVAL before Linux 4.3
    header = _CapHeader(_CAPABILITY_VERSION_3, 0)
    data = (_CapData * 2)()  # all zero: no capability in any set
    _check(_libc.capset(ctypes.byref(header), data), "capset")
