"""What the sandbox allows, decided once from the kernel's settings: folders to read, folders to
write, TCP ports to reach, and whether UDP (DNS) is needed.

Reading: the Python environment (prefixes, ``sys.path``), the system's programs and libraries
(``/usr``, ``/lib*``, ``/bin``), a short list of ``/etc`` files that name resolution, TLS and the
dynamic linker read, the context files and folders given, and the working folder. Writing: the
working folder and a private temporary folder (never the shared ``/tmp``, where other programs'
files, sockets and Jupyter connection files live). TCP: ``connect`` to the given endpoints' ports
(the kernel gives its forwarder's, :mod:`.forwarder`) and to the kernel's own ports; ``bind`` only
to the kernel's own ports. Every other port is closed.

Landlock's network rules are per *port*, not per host: allowing port 8000 allows port 8000 on every
host, and an ``https://`` endpoint would open port 443 everywhere. That is why the kernel does not
allow its model endpoint at all but a local forwarder on a random port, which alone reaches the
endpoint's host. The user's home folder is never readable: a working folder or a read path that is the
home folder, one of its parents, or ``/`` is refused rather than silently widening the sandbox.
"""

from __future__ import annotations

import ipaddress
import os
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from .settings import WORKDIR_ENV

__all__ = ["Policy", "PolicyError", "kernel_policy", "endpoint_ports"]

# Read-only system locations: programs and shared libraries (``sh`` and what model code runs).
_SYSTEM_READ = ("/usr", "/lib", "/lib32", "/lib64", "/libx32", "/bin", "/sbin",
                "/sys/devices/system/cpu", "/proc/cpuinfo", "/proc/meminfo")
# /etc files the resolver, TLS, the dynamic linker, locale and time zone read; not /etc itself
# (it holds e.g. /etc/shadow, ssh host keys, and credentials some tools keep there).
_ETC_READ = ("resolv.conf", "hosts", "host.conf", "nsswitch.conf", "gai.conf", "services",
             "protocols", "localtime", "timezone", "passwd", "group", "ld.so.cache",
             "ld.so.conf", "ld.so.conf.d", "ssl", "pki", "ca-certificates",
             "ca-certificates.conf", "os-release", "mime.types", "fonts", "locale.alias", "gitconfig",
             "matplotlibrc")
# Devices every program expects to open.
_DEVICES = ("/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom")
# Environment variables naming files that TLS clients read.
_TLS_ENV = ("SSL_CERT_FILE", "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE")
# Shared folders never read whole, even when on sys.path: other programs' files live there.
_SHARED = ("/tmp", "/var/tmp", "/dev/shm", "/run", "/var/run")


class PolicyError(ValueError):
    """The settings ask for something the sandbox will not allow (e.g. the home folder)."""


@dataclass(frozen=True)
class Policy:
    workdir: str
    tmpdir: str
    read: tuple[str, ...]
    write: tuple[str, ...]
    devices: tuple[str, ...] = _DEVICES
    make_sock: tuple[str, ...] = ()  # folders where the kernel binds its own IPC sockets
    connect_ports: tuple[int, ...] = ()
    bind_ports: tuple[int, ...] = ()
    allow_udp: bool = False
    keep_env: tuple[str, ...] = ()
    given: tuple[str, ...] = ()  # the read paths the user named (context files, folders)
    notes: tuple[str, ...] = field(default=())

    def summary(self) -> str:
        """One paragraph for the kernel banner and log: what model code can reach."""
        ports = ", ".join(str(p) for p in self.connect_ports if p not in self.bind_ports)
        reads = ["the Python environment", "system libraries", self.workdir, *self.given]
        udp = "allowed (DNS)" if self.allow_udp else "blocked"
        return (f"model code reads only {', '.join(reads[:-1])} and {reads[-1]}; writes only "
                f"{self.workdir} and {self.tmpdir}; connects only to TCP port(s) "
                f"{ports or '(none)'} (any address); UDP {udp}; unix sockets by path, signals "
                "to other processes and capabilities blocked")


def _within(path: str, folder: str) -> bool:
    path, folder = os.path.normpath(path), os.path.normpath(folder)
    return path == folder or path.startswith(folder.rstrip("/") + "/")


def _exposes_home(path: str, home: str) -> bool:
    """True if reading beneath ``path`` would read the home folder (it is home, or holds it)."""
    real = os.path.realpath(path)
    return real == "/" or (bool(home) and _within(os.path.realpath(home), real))


def _python_paths() -> list[str]:
    found = [sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix,
             os.path.dirname(os.path.realpath(sys.executable))]
    found += [p for p in sys.path if p]
    return found


def endpoint_ports(urls: Iterable[str]) -> tuple[tuple[int, ...], bool]:
    """The TCP ports of these URLs, and whether any names a host that needs DNS."""
    ports: list[int] = []
    dns = False
    for url in urls:
        if not url:
            continue
        parts = urlsplit(url if "://" in url else f"http://{url}")
        try:
            port = parts.port
        except ValueError as exc:
            raise PolicyError(f"{url!r} has an invalid port") from exc
        ports.append(port or (443 if parts.scheme == "https" else 80))
        host = parts.hostname or ""
        try:
            ipaddress.ip_address(host)
        except ValueError:
            dns = dns or host not in ("localhost", "")
    return tuple(sorted(set(ports))), dns


def _existing(paths: Iterable[str]) -> list[str]:
    """Each path that exists, plus where its symlinks lead (Landlock checks the real location)."""
    out: list[str] = []
    for p in paths:
        if p and os.path.exists(p):
            for q in (os.path.abspath(p), os.path.realpath(p)):
                if q not in out:
                    out.append(q)
    return out


def kernel_policy(*, workdir: str, tmpdir: str, read: Iterable[str] = (),
                  endpoints: Iterable[str] = (), kernel_ports: Iterable[int] = (),
                  ipc_dirs: Iterable[str] = (), kernel_files: Iterable[str] = (),
                  keep_env: Iterable[str] = (),
                  environ: dict[str, str] | None = None, home: str | None = None) -> Policy:
    """The policy for one kernel.

    ``workdir``: the folder model code works in (read+write). ``tmpdir``: a private temporary folder
    made for this kernel (read+write). ``read``: context files and folders. ``endpoints``: URLs
    model code may connect to (the kernel's forwarder). ``kernel_ports``: the kernel's
    own TCP ports (bound by it; model code may connect to them, as the kernel's front-end does).
    ``ipc_dirs``: folders where the kernel binds IPC sockets. ``kernel_files``: files the kernel
    itself reads after the sandbox starts (its connection file). ``keep_env``: extra environment
    variable names model code may see.
    """
    env = dict(os.environ if environ is None else environ)
    home = os.path.expanduser("~") if home is None else home
    notes: list[str] = []
    workdir = os.path.abspath(workdir)
    if not os.path.isdir(workdir):
        raise PolicyError(f"the working folder {workdir} does not exist")
    if os.path.realpath(workdir) in _SHARED:
        raise PolicyError(
            f"the sandbox's working folder would be {workdir}, a folder other programs share "
            "(their files, sockets and Jupyter connection files live there); use a folder of its "
            "own, e.g. one made with mkdir, as the working folder")
    if _exposes_home(workdir, home):
        raise PolicyError(
            f"the sandbox's working folder would be {workdir}, which is (or holds) your home "
            "folder, and model code may read and write its working folder; start the kernel in a "
            f"project folder (open the notebook from one) or name one with {WORKDIR_ENV}")
    read = list(read)
    for p in read:
        if not os.path.exists(p):
            raise PolicyError(f"the sandbox cannot allow reading {p}: it does not exist")
        if _exposes_home(p, home) or os.path.realpath(p) in _SHARED:
            raise PolicyError(f"the sandbox will not allow reading {p}: it is (or holds) your "
                              "home folder or a shared folder; name the files or a project "
                              "folder instead")
    python = []
    for p in _python_paths():
        if _exposes_home(p, home) or os.path.realpath(p) in _SHARED:
            notes.append(f"sys.path entry {p} is not readable in the sandbox (it is a shared or "
                         "home folder)")
        else:
            python.append(p)
    etc = [os.path.join("/etc", name) for name in _ETC_READ]
    etc.append(f"/etc/python{sys.version_info[0]}.{sys.version_info[1]}")
    tls = [env[name] for name in _TLS_ENV if env.get(name)]
    read_paths = _existing([*python, *_SYSTEM_READ, *etc, *tls, *read, *kernel_files])
    ports, dns = endpoint_ports(endpoints)
    own = tuple(sorted({int(p) for p in kernel_ports if int(p) > 0}))
    return Policy(
        workdir=workdir, tmpdir=os.path.abspath(tmpdir), read=tuple(read_paths),
        write=tuple(_existing([workdir, tmpdir])), devices=tuple(_existing(_DEVICES)),
        make_sock=tuple(_existing(ipc_dirs)), connect_ports=tuple(sorted({*ports, *own})),
        bind_ports=own, allow_udp=dns, keep_env=tuple(keep_env),
        given=tuple(os.path.abspath(p) for p in read), notes=tuple(notes))
