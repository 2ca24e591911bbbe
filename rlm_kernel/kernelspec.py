"""The ``rlm`` kernelspec, declared once.

Everything that names or launches the kernel reads it from here: ``python -m rlm_kernel install``
(:mod:`rlm_kernel.install`), the kernelspec shipped in the wheel (written at build time by
``hatch_build.py`` at the repository root, as ipykernel does for its own), the headless runner, and
the ``kernelspec`` metadata of every notebook the project writes.

Standard library only: the build hook loads this file by path, before the package's dependencies
are installed.
"""

from __future__ import annotations

import sys
from typing import Any

__all__ = ["KERNEL_NAME", "DISPLAY_NAME", "LANGUAGE", "kernel_json", "notebook_kernelspec"]

KERNEL_NAME = "rlm"
DISPLAY_NAME = "RLM (Python 3)"
LANGUAGE = "python"
HASH_SEED = "0"


def kernel_json(python: str | None = None) -> dict[str, Any]:
    """The ``kernel.json`` of the ``rlm`` kernel.

    ``python``: the interpreter to launch. An installed spec names this interpreter by absolute
    path, so an editable checkout's kernel is this Python; the spec shipped in the wheel says
    ``"python"``, which jupyter_client rewrites to the Python of the server that launches it.
    """
    return {
        "argv": [python or sys.executable, "-m", "rlm_kernel", "-f", "{connection_file}"],
        "display_name": DISPLAY_NAME,
        "language": LANGUAGE,
        "interrupt_mode": "signal",
        # One string-hash seed for every rlm kernel: a step that prints a set (or iterates one)
        # prints it in the same order when the trajectory is replayed in another process.
        "env": {"PYTHONHASHSEED": HASH_SEED},
        "metadata": {"debugger": False},
    }


def notebook_kernelspec() -> dict[str, str]:
    """``metadata.kernelspec`` of a trajectory notebook: it opens on the ``rlm`` kernel."""
    return {"name": KERNEL_NAME, "display_name": DISPLAY_NAME, "language": LANGUAGE}
