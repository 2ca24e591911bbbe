"""Trusting a trajectory before running it again: Jupyter's notebook signatures, and what would run.

Why: replay and resume re-execute a trajectory's steps. A notebook someone sent may have been
edited so that what runs is not what its cells show (a step's recorded reply is what the engine
replays), or so that it reads a file of yours as its context. Jupyter's answer is trust: a notebook
*this user* wrote is signed (nbformat's ``NotebookNotary``, the same signatures JupyterLab checks),
anything else is untrusted. The project signs the trajectories it writes; before replaying or
resuming an unsigned one, the code that would run (and any file it would read) is shown and the
user is asked; a non-interactive caller must pass ``--trust``. Where a step's recorded reply would
run other code than its cell shows, that is reported as well, signed or not.
"""

from __future__ import annotations

import contextlib
import difflib
import functools
from dataclasses import dataclass, field
from typing import Any

from .notebook import runs_from_notebook
from .parsing import parse_reply
from .tool_mode import reply_parts

__all__ = ["TrustReport", "review", "sign", "is_signed"]


@dataclass
class TrustReport:
    """What replaying or resuming a notebook would do, and whether its author is this user."""

    path: str
    signed: bool
    runs: list[str] = field(default_factory=list)
    code: list[tuple[str, int, str]] = field(default_factory=list)  # (run, step, code that runs)
    hidden: list[tuple[str, int, str]] = field(default_factory=list)  # (run, step, diff)
    reads: list[str] = field(default_factory=list)  # context files it would load

    @property
    def needs_consent(self) -> bool:
        return not self.signed or bool(self.hidden)

    def summary(self, limit: int = 60) -> str:
        """The text shown before asking: why, what would run, what it would read."""
        lines = []
        if not self.signed:
            lines.append(f"{self.path} is not signed by you (it was written elsewhere, or changed "
                         "since): replaying or resuming it runs the code below with your "
                         "privileges.")
        for rid, n, diff in self.hidden:
            lines.append(f"Run {rid} step {n}: its recorded reply would run code its cell does "
                         f"not show:\n{diff}")
        if self.reads:
            lines.append("It would read: " + ", ".join(self.reads))
        shown = 0
        for rid, n, code in self.code:
            body = code.splitlines()
            lines.append(f"--- run {rid} step {n} ---")
            lines += body[: max(0, limit - shown)]
            shown += len(body)
            if shown >= limit:
                lines.append(f"... ({sum(len(c.splitlines()) for *_, c in self.code) - limit} "
                             "more lines)")
                break
        return "\n".join(lines)


def _notary() -> Any:
    return _notary_class()()


@functools.cache
def _notary_class() -> type:
    """nbformat's notary with its digest computed in one pass (the class is made once, on first
    use: nbformat is imported only then)."""
    import hmac

    from nbformat.sign import NotebookNotary, signature_removed

    class Notary(NotebookNotary):
        """The same HMAC as nbformat's (of the same bytes, so JupyterLab and ``jupyter trust``
        agree), without a generator step and an ``update`` call per string of the notebook,
        which cost ~60 ms per 1,000 cells."""

        def compute_signature(self, nb: Any) -> str:
            pieces: list[str] = []
            with signature_removed(nb):
                _everything(nb, pieces)
            return hmac.new(self.secret, "".join(pieces).encode("utf8"),
                            self.digestmod).hexdigest()

    return Notary


def _everything(obj: Any, out: list[str]) -> None:
    """The strings nbformat's ``yield_everything`` yields (as text; their UTF-8 concatenated is
    what its HMAC reads): keys sorted, each followed by its value; other scalars as ``str``."""
    if isinstance(obj, dict):
        for key in sorted(obj):
            out.append(key)
            value = obj[key]
            if isinstance(value, str):  # most leaves: no call for them
                out.append(value)
            else:
                _everything(value, out)
    elif isinstance(obj, (list, tuple)):
        for item in obj:
            if isinstance(item, str):
                out.append(item)
            else:
                _everything(item, out)
    else:
        out.append(obj if isinstance(obj, str) else str(obj))


def sign(nb: Any) -> None:
    """Mark ``nb`` as written by this user (Jupyter's signature store)."""
    # An unwritable signature store must not lose the file: unsigned, it is asked about later.
    with contextlib.suppress(Exception):
        _notary().sign(nb)


def is_signed(nb: Any) -> bool:
    try:
        return bool(_notary().check_signature(nb))
    except Exception:  # noqa: BLE001 - no store: nothing is trusted
        return False


def review(nb: Any, path: str) -> TrustReport:
    """What replaying or resuming ``nb`` would run and read, and whether it is signed."""
    report = TrustReport(path=path, signed=is_signed(nb))
    runs = runs_from_notebook(nb)
    for run in runs.values():
        if run.depth:
            continue
        report.runs.append(run.run_id)
        source = run.context.source
        if source and not source.startswith("variable:"):
            report.reads.append(source)
        for step in run.steps:
            if not step.reply:
                continue
            # Reasoning never runs and tool calls run as their code: read the reply as the
            # engine does.
            runs_code = (parse_reply(reply_parts(step.reply)[1]).code or "").strip()
            shown = (step.code or "").strip()
            report.code.append((run.run_id, step.n, runs_code or "(no code)"))
            if not step.edited and runs_code != shown:
                diff = "\n".join(difflib.unified_diff(
                    shown.splitlines(), runs_code.splitlines(), "the cell shows", "would run",
                    lineterm="", n=1))
                report.hidden.append((run.run_id, step.n, diff))
    return report
