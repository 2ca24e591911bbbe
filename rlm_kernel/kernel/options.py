"""Parsing the option lines of ``%%rlm``, ``%%llm`` and ``%rlm`` with messages that say what to do."""

from __future__ import annotations

import argparse
import shlex
from typing import Any

from ..config import add_setting_options, options_given
from ..errors import ConfigError
from ..notebook import split_query_marker

__all__ = ["OptionError", "parse_rlm_cell", "parse_fork_cell", "parse_llm_cell", "parse_line"]


class OptionError(ValueError):
    """Bad magic options; the message lists what is accepted."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise OptionError(f"{self.prog}: {message}\n{self.format_usage().strip()}")


def _rlm_parser() -> _Parser:
    """``%%rlm``'s options: every per-run setting (generated from its declaration), plus the
    options of the query cell itself."""
    p = _Parser(prog="%%rlm", add_help=False)
    add_setting_options(p, "per_run")
    p.add_argument("--context", default="context", help="variable holding the context")
    p.add_argument("--step", action="store_true", help="stop after each proposed step")
    p.add_argument("--fresh", action="store_true",
                   help="ask the model again even though this cell recorded a run (which the "
                        "new run replaces; its cells stay, marked as an earlier version); no "
                        "response is reused from the session's cache")
    return p


def _split(line: str) -> list[str]:
    try:
        return shlex.split(line)
    except ValueError as exc:
        raise OptionError(f"cannot read the options {line!r}: {exc}") from None


def parse_rlm_cell(code: str) -> tuple[dict[str, Any], str]:
    """``%%rlm [options]\\n[# rlm: run=ID]\\n<query>`` -> (options, query).

    ``options["recorded"]`` is the run the cell's marker line names (None for a new cell)."""
    first, _, body = code.lstrip().partition("\n")
    recorded, _superseded, body = split_query_marker(body)
    args = _rlm_parser().parse_args(_split(first)[1:])
    try:
        options_given(args)  # out-of-range values together, with the setting's name
    except ConfigError as exc:
        raise OptionError(f"%%rlm: {exc}") from None
    query = body.strip()
    if not query:
        raise OptionError("the %%rlm cell needs a query: write it on the lines below %%rlm")
    return {**vars(args), "recorded": recorded}, query


def _fork_parser() -> _Parser:
    """``%rlm fork``'s options: where to fork, what to call the branch, and any per-run setting
    to change from the parent's (``--model``, ``--sub-model``, ``--max-steps``...)."""
    p = _Parser(prog="%rlm fork", add_help=False)
    p.add_argument("--run", help="the run to fork (default: the latest)")
    p.add_argument("--trust", action="store_true",
                   help="with --from: fork a trajectory you did not write without being asked")
    p.add_argument("--at", type=int, required=True,
                   help="the parent's step to fork after (0: start afresh)")
    p.add_argument("--query", help="another query for the branch (default: the parent's)")
    p.add_argument("--label", help="the branch's name (default: what it changes, and where)")
    p.add_argument("--from", dest="from", metavar="PATH.ipynb",
                   help="read the parent from this notebook (default: this kernel's runs)")
    p.add_argument("--step", action="store_true", help="stop after each proposed step")
    p.add_argument("--fresh", action="store_true",
                   help="fork again even though this cell recorded a branch")
    add_setting_options(p, "per_run")
    return p


def parse_fork_cell(code: str) -> tuple[dict[str, Any], str | None]:
    """``%rlm fork [options]`` or ``%%rlm fork [options]\n<query>`` -> (options, query or None).

    The cell form's body is the branch's query (what an exported branch's query cell holds)."""
    first, _, body = code.lstrip().partition("\n")
    recorded, _superseded, body = split_query_marker(body)
    words = _split(first)
    if words[1:2] != ["fork"]:
        raise OptionError("a fork cell starts with %rlm fork (or %%rlm fork)")
    args = _fork_parser().parse_args(words[2:])
    try:
        options_given(args)
    except ConfigError as exc:
        raise OptionError(f"%rlm fork: {exc}") from None
    opts = {**vars(args), "recorded": recorded}
    if opts["at"] < 0:
        raise OptionError("%rlm fork: --at is a step number (0 forks before the first step)")
    query = body.strip() or None
    if query is not None and opts.get("query"):
        raise OptionError("%rlm fork: give the branch's query either with --query or as the cell's "
                          "body, not both")
    return opts, query or opts.get("query")


def parse_llm_cell(line: str) -> dict[str, Any]:
    p = _Parser(prog="%%llm", add_help=False)
    p.add_argument("--model")
    p.add_argument("--call")
    p.add_argument("--fresh", action="store_true",
                   help="send a recorded call again instead of showing its record (the "
                        "model is asked, not the session's cache)")
    return vars(p.parse_args(_split(line)))


def parse_line(line: str) -> tuple[str, list[str]]:
    """``%rlm <subcommand> args...`` -> (subcommand, args)."""
    parts = _split(line)
    return (parts[0] if parts else "status"), parts[1:]
