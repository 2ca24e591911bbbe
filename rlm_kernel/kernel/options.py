"""Parsing the option lines of ``%%rlm``, ``%%llm`` and ``%rlm`` with messages that say what to do."""

from __future__ import annotations

import argparse
import shlex
from typing import Any

from ..config import add_setting_options, options_given
from ..errors import ConfigError

__all__ = ["OptionError", "parse_rlm_cell", "parse_llm_cell", "parse_line"]


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
    return p


def _split(line: str) -> list[str]:
    try:
        return shlex.split(line)
    except ValueError as exc:
        raise OptionError(f"cannot read the options {line!r}: {exc}") from None


def parse_rlm_cell(code: str) -> tuple[dict[str, Any], str]:
    """``%%rlm [options]\\n<query>`` -> (options, query)."""
    first, _, body = code.lstrip().partition("\n")
    args = _rlm_parser().parse_args(_split(first)[1:])
    try:
        options_given(args)  # out-of-range values together, with the setting's name
    except ConfigError as exc:
        raise OptionError(f"%%rlm: {exc}") from None
    query = body.strip()
    if not query:
        raise OptionError("the %%rlm cell needs a query: write it on the lines below %%rlm")
    return vars(args), query


def parse_llm_cell(line: str) -> dict[str, Any]:
    p = _Parser(prog="%%llm", add_help=False)
    p.add_argument("--model")
    p.add_argument("--call")
    return vars(p.parse_args(_split(line)))


def parse_line(line: str) -> tuple[str, list[str]]:
    """``%rlm <subcommand> args...`` -> (subcommand, args)."""
    parts = _split(line)
    return (parts[0] if parts else "status"), parts[1:]
