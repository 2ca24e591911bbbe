"""Trajectory files and context files, as the kernel reads and writes them.

``%rlm export`` writes the session's trajectories; ``%rlm replay`` / ``%rlm resume`` /
``%rlm continue --from`` read one back; replay and resume reload the context a recorded run read,
and say plainly when that is not possible.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .. import trust
from ..errors import RLMError
from ..loaders import load_source
from ..notebook import query_cell_ids, runs_from_notebook, to_notebook, write_notebook
from ..sandbox.settings import READ_ENV
from ..trajectory import ContextInfo, Run
from .registry import RunRegistry

if TYPE_CHECKING:
    import nbformat

__all__ = ["export", "read_trajectory", "load_context", "session_notebook", "unreadable"]


def export(registry: RunRegistry, path: str) -> nbformat.NotebookNode:
    """Write every root run of the session (with its children) as one notebook."""
    roots = [registry.runs[r] for r in registry.roots]
    nb = to_notebook(roots, registry.runs)
    # Keep each query cell as the human typed it (its options included).
    for cell in nb.cells:
        meta = cell.metadata.get("rlm", {})
        if meta.get("kind") == "query" and meta.get("run") in registry.places:
            cell.source = registry.places[meta["run"]].source
    write_notebook(nb, path)
    return nb


def read_trajectory(path: str, *, consent: Callable[[str], bool] | None,
                    ) -> tuple[dict[str, Run], dict[str, str]]:
    """The runs a notebook records, and each root run's query cell id in it.

    ``consent``: asked, with what would run, before an untrusted trajectory (not signed by this
    user, or running code its cells do not show) is used; None means the caller already has
    the human's consent (``--trust``).
    """
    import nbformat

    if not os.path.isfile(path):
        raise RLMError(f"no notebook {path!r} (from {os.getcwd()})")
    try:
        nb = nbformat.read(path, as_version=4)
    except PermissionError:
        raise RLMError(unreadable(path)) from None
    if consent is not None:
        report = trust.review(nb, path)
        if report.needs_consent and not consent(report.summary()):
            raise RLMError(
                f"{path} is not trusted, and nothing was run. Read the code above; to run it, "
                "add --trust (%rlm replay --trust PATH, rlm-kernel replay --trust PATH) or "
                f"trust the notebook with `jupyter trust {path}`")
    runs = runs_from_notebook(nb)
    if not runs:
        raise RLMError(f"{path} holds no RLM trajectory (no cells with metadata.rlm)")
    return runs, query_cell_ids(nb)


def load_context(source: str, expected_sha: str, namespace: dict[str, Any]) -> Any:
    """Reload a recorded run's context: from the variable it named, or the file it was read from."""
    if source.startswith("variable:"):
        var = source.split(":", 1)[1]
        if var in namespace:
            return namespace[var]
        raise RLMError(
            f"the trajectory's context came from the variable {var!r}, which this kernel does "
            f"not have; set `{var} = ...` to the same data, then re-run"
        )
    if not source or not os.path.exists(source.partition("#dpi=")[0]):
        raise RLMError(
            f"the trajectory's context file {source!r} is not here; put it at that path (or "
            "load the data into `context`) and re-run"
        )
    try:
        context = load_source(source).context
    except PermissionError:
        raise RLMError(unreadable(source)) from None
    except (ImportError, ValueError, OSError) as exc:
        raise RLMError(f"the trajectory's context {source!r} could not be loaded again: {exc}"
                       ) from None
    info = ContextInfo.describe(context, source)
    if expected_sha and info.sha256 != expected_sha:
        raise RLMError(
            f"the context file {source} differs from the recorded one (sha256 {info.sha256[:12]} "
            f"!= {expected_sha[:12]}); replay needs the same data"
        )
    return context


def unreadable(path: str) -> str:
    """A refused read, said with where the sandboxed kernel may read (the usual cause)."""
    return (f"permission denied reading {path} (the sandboxed kernel reads only its working "
            f"folder and the paths in {READ_ENV}: add it there and restart the kernel)")


def session_notebook() -> str | None:
    """The notebook this kernel serves, if the server said (jupyter_server sets JPY_SESSION_NAME)."""
    name = os.environ.get("JPY_SESSION_NAME", "")
    if not name.endswith(".ipynb"):
        return None
    for candidate in (name, os.path.basename(name)):
        if os.path.isfile(candidate):
            return os.path.abspath(candidate)
    return None
