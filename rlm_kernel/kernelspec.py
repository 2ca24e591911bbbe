"""The ``rlm`` kernelspec and its sandboxed variant ``rlm-sandboxed``, declared once.

Everything that names or launches the kernel reads it from here: ``python -m rlm_kernel install``
(:mod:`rlm_kernel.install`), the kernelspecs shipped in the wheel (written at build time by
``hatch_build.py`` at the repository root, as ipykernel does for its own), the headless runner, and
the ``kernelspec`` metadata of every notebook the project writes. The sandboxed variant is the same
kernel started with ``--sandbox`` (docs/sandbox.md).

Standard library only: the build hook loads this file by path, before the package's dependencies
are installed.
"""

from __future__ import annotations

import sys
from typing import Any

__all__ = ["KERNEL_NAME", "DISPLAY_NAME", "SANDBOXED_KERNEL_NAME", "SANDBOXED_DISPLAY_NAME",
           "SANDBOX_FLAG", "LANGUAGE", "KERNELS", "kernel_name", "kernel_json",
           "notebook_kernelspec", "language_info"]

KERNEL_NAME = "rlm"
DISPLAY_NAME = "RLM (Python 3)"
SANDBOXED_KERNEL_NAME = "rlm-sandboxed"
SANDBOXED_DISPLAY_NAME = "RLM (Python 3, sandboxed)"
SANDBOX_FLAG = "--sandbox"  # on the kernel's command line: start it in the sandbox
LANGUAGE = "python"
HASH_SEED = "0"
#: name -> display name of every kernelspec the project installs
KERNELS = {KERNEL_NAME: DISPLAY_NAME, SANDBOXED_KERNEL_NAME: SANDBOXED_DISPLAY_NAME}


def kernel_name(sandboxed: bool = False) -> str:
    return SANDBOXED_KERNEL_NAME if sandboxed else KERNEL_NAME


def kernel_json(python: str | None = None, sandboxed: bool = False) -> dict[str, Any]:
    """The ``kernel.json`` of the ``rlm`` kernel (``sandboxed``: of ``rlm-sandboxed``).

    ``python``: the interpreter to launch. An installed spec names this interpreter by absolute
    path, so an editable checkout's kernel is this Python; the spec shipped in the wheel says
    ``"python"``, which jupyter_client rewrites to the Python of the server that launches it.
    """
    flag = [SANDBOX_FLAG] if sandboxed else []
    return {
        "argv": [python or sys.executable, "-m", "rlm_kernel", *flag, "-f", "{connection_file}"],
        "display_name": KERNELS[kernel_name(sandboxed)],
        "language": LANGUAGE,
        "interrupt_mode": "signal",
        # One string-hash seed for every rlm kernel: a step that prints a set (or iterates one)
        # prints it in the same order when the trajectory is replayed in another process.
        "env": {"PYTHONHASHSEED": HASH_SEED},
        "metadata": {"debugger": False},
    }


def notebook_kernelspec(sandboxed: bool = False) -> dict[str, str]:
    """``metadata.kernelspec`` of a trajectory notebook: it opens on the kernel it ran in, so a
    sandboxed trajectory re-runs sandboxed."""
    name = kernel_name(sandboxed)
    return {"name": name, "display_name": KERNELS[name], "language": LANGUAGE}


def language_info() -> dict[str, Any]:
    """``language_info`` as the kernel reports it in its ``kernel_info_reply``, and as every
    notebook the project writes records it. Equal on both sides, so JupyterLab, which copies the
    kernel's into the document when it connects, finds nothing to change: a trajectory opens
    clean (not "modified") and a saved one keeps its bytes."""
    return {
        "name": LANGUAGE,
        "version": sys.version.split()[0],
        "mimetype": "text/x-python",
        "codemirror_mode": {"name": "ipython", "version": sys.version_info[0]},
        "pygments_lexer": f"ipython{sys.version_info[0]}",
        "nbconvert_exporter": "python",
        "file_extension": ".py",
    }
