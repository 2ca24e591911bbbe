"""``python -m rlm_kernel.sandbox``: can this machine run the sandboxed kernel? Changes nothing."""

from __future__ import annotations

import platform
import sys

from . import SandboxUnavailable, landlock, probe, seccomp

_FEATURES = [(1, "files (read, write, execute per folder)"), (2, "renames across folders"),
             (3, "truncate"), (4, "TCP bind/connect per port"), (5, "device ioctl"),
             (6, "abstract unix sockets and signals scoped"), (7, "audit logging")]


def main() -> int:
    print(f"Linux {platform.release()} on {platform.machine()}")
    abi = landlock.abi_version() if sys.platform == "linux" else 0
    print(f"Landlock ABI: {abi or 'not available'}")
    for version, what in _FEATURES:
        print(f"  [{'x' if abi >= version else ' '}] ABI {version}: {what}")
    why = seccomp.supported()
    print(f"seccomp socket filter: {why or 'available'}")
    try:
        probe()
    except SandboxUnavailable as exc:
        print(f"The sandboxed kernel cannot run here: {exc}")
        return 1
    print("The sandboxed kernel can run here.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
