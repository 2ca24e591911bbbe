"""Linux Landlock through ctypes: the ABI version, a ruleset of path and TCP-port rules, and
``restrict_self``.

Landlock (Linux 5.13+) lets an unprivileged process give up access rights for itself and every
process it later starts; nothing can lift them again. Rights are allow-lists: once a right is
*handled* by the ruleset, it is denied everywhere except beneath the paths (or on the TCP ports)
given a rule. ABI versions add rights: 2 file renames across folders (refer), 3 truncate, 4 TCP bind
and connect by port, 5 ioctl on devices, 6 scoping of abstract unix sockets and signals, 7 audit
logging. The bindings handle every right the running kernel knows, so an older kernel still gets
the strongest rules it can enforce and the caller decides whether that is enough.

Only what the kernel needs is bound here; constants and struct layouts are from
``include/uapi/linux/landlock.h``.
"""

from __future__ import annotations

import ctypes
import errno
import os
from dataclasses import dataclass

__all__ = [
    "LandlockError",
    "FS",
    "NET",
    "SCOPE",
    "abi_version",
    "fs_rights",
    "Ruleset",
]

# Syscall numbers: the same on every architecture that has Landlock (the unified syscall table).
_SYS_CREATE_RULESET = 444
_SYS_ADD_RULE = 445
_SYS_RESTRICT_SELF = 446
_CREATE_RULESET_VERSION = 1 << 0
_RULE_PATH_BENEATH = 1
_RULE_NET_PORT = 2


class LandlockError(OSError):
    """Landlock is missing, disabled, or refused a rule."""


class FS:
    """Filesystem access rights (``LANDLOCK_ACCESS_FS_*``)."""

    EXECUTE = 1 << 0
    WRITE_FILE = 1 << 1
    READ_FILE = 1 << 2
    READ_DIR = 1 << 3
    REMOVE_DIR = 1 << 4
    REMOVE_FILE = 1 << 5
    MAKE_CHAR = 1 << 6
    MAKE_DIR = 1 << 7
    MAKE_REG = 1 << 8
    MAKE_SOCK = 1 << 9
    MAKE_FIFO = 1 << 10
    MAKE_BLOCK = 1 << 11
    MAKE_SYM = 1 << 12
    REFER = 1 << 13  # ABI 2
    TRUNCATE = 1 << 14  # ABI 3
    IOCTL_DEV = 1 << 15  # ABI 5
    # Rights that make sense on a file (not a folder): a rule on a file may hold only these.
    FILE_ONLY = EXECUTE | WRITE_FILE | READ_FILE | TRUNCATE | IOCTL_DEV


class NET:
    """TCP rights by port (``LANDLOCK_ACCESS_NET_*``, ABI 4)."""

    BIND_TCP = 1 << 0
    CONNECT_TCP = 1 << 1


class SCOPE:
    """IPC scoping (``LANDLOCK_SCOPE_*``, ABI 6): no reaching processes outside the sandbox."""

    ABSTRACT_UNIX_SOCKET = 1 << 0
    SIGNAL = 1 << 1


def fs_rights(abi: int) -> int:
    """Every filesystem right this ABI can handle."""
    rights = (1 << 13) - 1
    if abi >= 2:
        rights |= FS.REFER
    if abi >= 3:
        rights |= FS.TRUNCATE
    if abi >= 5:
        rights |= FS.IOCTL_DEV
    return rights


def net_rights(abi: int) -> int:
    return NET.BIND_TCP | NET.CONNECT_TCP if abi >= 4 else 0


def scopes(abi: int) -> int:
    return SCOPE.ABSTRACT_UNIX_SOCKET | SCOPE.SIGNAL if abi >= 6 else 0


class _RulesetAttr(ctypes.Structure):
    _fields_ = [("handled_access_fs", ctypes.c_uint64),
                ("handled_access_net", ctypes.c_uint64),
                ("scoped", ctypes.c_uint64)]


class _PathBeneathAttr(ctypes.Structure):
    _pack_ = 1  # __attribute__((packed)) in the uapi header: 12 bytes
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


class _NetPortAttr(ctypes.Structure):
    _fields_ = [("allowed_access", ctypes.c_uint64), ("port", ctypes.c_uint64)]


_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


def _syscall(number: int, *args: object) -> int:
    ret = _libc.syscall(ctypes.c_long(number), *args)
    if ret < 0:
        err = ctypes.get_errno()
        raise LandlockError(err, os.strerror(err))
    return int(ret)


def abi_version() -> int:
    """The Landlock ABI of the running kernel; 0 where Landlock is absent or disabled at boot."""
    try:
        return _syscall(_SYS_CREATE_RULESET, None, ctypes.c_size_t(0),
                        ctypes.c_uint32(_CREATE_RULESET_VERSION))
    except LandlockError as exc:
        if exc.errno in (errno.ENOSYS, errno.EOPNOTSUPP, errno.EPERM):
            return 0
        raise


@dataclass
class Ruleset:
    """A Landlock ruleset being built: handle every right of ``abi``, then allow some back."""

    abi: int
    handle_net: bool = True
    handle_scopes: bool = True

    def __post_init__(self) -> None:
        if self.abi < 1:
            raise LandlockError(errno.EOPNOTSUPP, "Landlock is not available in this Linux kernel")
        self.fs = fs_rights(self.abi)
        self.net = net_rights(self.abi) if self.handle_net else 0
        self.scoped = scopes(self.abi) if self.handle_scopes else 0
        attr = _RulesetAttr(self.fs, self.net, self.scoped)
        # Pass the struct size this ABI knows: older kernels reject unknown trailing fields.
        size = 8 if self.abi < 4 else 16 if self.abi < 6 else 24
        self.fd = _syscall(_SYS_CREATE_RULESET, ctypes.byref(attr), ctypes.c_size_t(size),
                           ctypes.c_uint32(0))

    def allow_path(self, path: str, access: int) -> None:
        """Allow ``access`` beneath ``path`` (a folder) or on it (a file: file rights only)."""
        fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
        try:
            if not os.path.isdir(path):
                access &= FS.FILE_ONLY
            attr = _PathBeneathAttr(access & self.fs, fd)
            if attr.allowed_access:
                _syscall(_SYS_ADD_RULE, ctypes.c_int(self.fd), ctypes.c_int(_RULE_PATH_BENEATH),
                         ctypes.byref(attr), ctypes.c_uint32(0))
        finally:
            os.close(fd)

    def allow_port(self, port: int, access: int) -> None:
        """Allow TCP ``access`` (``NET.*``) on ``port``, on every host and address."""
        attr = _NetPortAttr(access & self.net, port)
        if attr.allowed_access:
            _syscall(_SYS_ADD_RULE, ctypes.c_int(self.fd), ctypes.c_int(_RULE_NET_PORT),
                     ctypes.byref(attr), ctypes.c_uint32(0))

    def restrict_self(self) -> None:
        """Enforce the ruleset on the calling thread and everything it starts from now on.

        Needs ``no_new_privs`` set first (or CAP_SYS_ADMIN). Threads that already exist keep their
        rights: call this while the process has a single thread.
        """
        try:
            _syscall(_SYS_RESTRICT_SELF, ctypes.c_int(self.fd), ctypes.c_uint32(0))
        finally:
            self.close()

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
