"""Installing the ``rlm`` kernelspec: ``python -m rlm_kernel install [--user|--sys-prefix|--prefix P]``."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from importlib import resources

from jupyter_client.kernelspec import KernelSpecManager

__all__ = ["KERNEL_NAME", "DISPLAY_NAME", "kernel_json", "install", "main"]

KERNEL_NAME = "rlm"
DISPLAY_NAME = "RLM (Python 3)"


def kernel_json(python: str | None = None) -> dict[str, object]:
    """The spec; an absolute interpreter path so an editable checkout's kernel is this Python."""
    return {
        "argv": [python or sys.executable, "-m", "rlm_kernel", "-f", "{connection_file}"],
        "display_name": DISPLAY_NAME,
        "language": "python",
        "interrupt_mode": "signal",
        "metadata": {"debugger": False},
    }


def _logo_dir() -> str | None:
    for candidate in (
        os.path.join(os.path.dirname(__file__), "kernelspec"),
        os.path.join(os.path.dirname(os.path.dirname(__file__)), "kernelspec"),
    ):
        if os.path.isdir(candidate):
            return candidate
    try:
        path = resources.files("rlm_kernel") / "kernelspec"
        return str(path) if path.is_dir() else None
    except (ModuleNotFoundError, FileNotFoundError):
        return None


def install(user: bool = False, prefix: str | None = None) -> str:
    """Write the kernelspec (with logos) and return where it went."""
    with tempfile.TemporaryDirectory() as td:
        os.chmod(td, 0o755)
        logos = _logo_dir()
        if logos:
            for name in os.listdir(logos):
                if name.startswith("logo"):
                    shutil.copy(os.path.join(logos, name), td)
        with open(os.path.join(td, "kernel.json"), "w") as f:
            json.dump(kernel_json(), f, indent=2)
        return KernelSpecManager().install_kernel_spec(
            td, KERNEL_NAME, user=user, prefix=prefix
        )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m rlm_kernel install",
                                description="Install the RLM kernelspec.")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--user", action="store_true", help="for this user (~/.local/share/jupyter)")
    where.add_argument("--sys-prefix", action="store_true", help=f"into {sys.prefix}")
    where.add_argument("--prefix", help="into PREFIX/share/jupyter")
    args = p.parse_args(argv)
    prefix = sys.prefix if args.sys_prefix else args.prefix
    user = args.user or (not prefix and not _writable_system())
    path = install(user=user, prefix=prefix)
    print(f"Installed kernelspec {KERNEL_NAME!r} ({DISPLAY_NAME}) in {path}")
    return 0


def _writable_system() -> bool:
    target = os.path.join(sys.prefix, "share", "jupyter")
    return os.access(sys.prefix, os.W_OK) and (not os.path.exists(target) or os.access(target, os.W_OK))


if __name__ == "__main__":
    raise SystemExit(main())
