"""Installing the kernelspecs (``rlm`` and ``rlm-sandboxed``):
``python -m rlm_kernel install [--user|--sys-prefix|--prefix P]``."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile

from jupyter_client.kernelspec import KernelSpecManager

from .kernelspec import KERNELS, SANDBOXED_KERNEL_NAME, kernel_json

__all__ = ["install", "main"]


def _logo_dir() -> str | None:
    """The logos: ``rlm_kernel/logos`` in an installed wheel, ``kernelspec/`` in a checkout."""
    for candidate in (
        os.path.join(os.path.dirname(__file__), "logos"),
        os.path.join(os.path.dirname(os.path.dirname(__file__)), "kernelspec"),
    ):
        if os.path.isdir(candidate):
            return candidate
    return None


def install(user: bool = False, prefix: str | None = None) -> list[str]:
    """Write every kernelspec (with logos) and return where each went."""
    paths = []
    for name in KERNELS:
        with tempfile.TemporaryDirectory() as td:
            os.chmod(td, 0o755)
            logos = _logo_dir()
            if logos:
                for logo in os.listdir(logos):
                    if logo.startswith("logo"):
                        shutil.copy(os.path.join(logos, logo), td)
            with open(os.path.join(td, "kernel.json"), "w") as f:
                json.dump(kernel_json(sandboxed=name == SANDBOXED_KERNEL_NAME), f, indent=2)
            paths.append(KernelSpecManager().install_kernel_spec(
                td, name, user=user, prefix=prefix))
    return paths


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m rlm_kernel install",
                                description="Install the RLM kernelspecs.")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--user", action="store_true", help="for this user (~/.local/share/jupyter)")
    where.add_argument("--sys-prefix", action="store_true", help=f"into {sys.prefix}")
    where.add_argument("--prefix", help="into PREFIX/share/jupyter")
    args = p.parse_args(argv)
    prefix = sys.prefix if args.sys_prefix else args.prefix
    user = args.user or (not prefix and not _writable_system())
    for (name, display), path in zip(KERNELS.items(), install(user=user, prefix=prefix),
                                     strict=True):
        print(f"Installed kernelspec {name!r} ({display}) in {path}")
    return 0


def _writable_system() -> bool:
    target = os.path.join(sys.prefix, "share", "jupyter")
    return os.access(sys.prefix, os.W_OK) and (not os.path.exists(target) or os.access(target, os.W_OK))


if __name__ == "__main__":
    raise SystemExit(main())
