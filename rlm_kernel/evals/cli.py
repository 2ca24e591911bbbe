"""``rlm-kernel eval``: a thin shell over :mod:`rlm_kernel.evals.runner`.

    rlm-kernel eval --task {sniah,oolong,oolong-pairs} --n N --length TOKENS [--seed S]
        [--model M] [--sub-model M] [--base-url URL] [--concurrency C] [--max-steps N]
        [--baseline {rlm,no-subcalls,direct}] [--window-tokens W] [--prices JSON-or-file]
        [--via {library,kernel}] --out DIR

With no ``OPENAI_API_KEY`` and no ``OPENAI_BASE_URL`` (and no ``--base-url``) the embedded scripted
demonstration model plays the tasks offline; the table says so in its header. Exit status: 0 when
every task ran (whatever it scored), 1 when some task ended in an error, 2 for bad arguments.
"""

from __future__ import annotations

import argparse
import shlex
import sys

from ..config import add_setting_options, options_given
from ..errors import ConfigError
from . import FAMILIES
from .runner import BASELINES, DEFAULT_WINDOW_TOKENS, VIAS, EvalSettings, load_prices, run_eval

__all__ = ["main", "build_parser"]


def _positive_int(text: str) -> int:
    try:
        value = int(text.replace("_", "").replace(",", ""))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be at least 1")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="rlm-kernel eval",
        description="Run seeded, offline-generated versions of the RLM paper's benchmarks (S-NIAH, "
                    "OOLONG, OOLONG-Pairs) against any OpenAI-compatible endpoint: one trajectory "
                    "notebook per task, then a score and cost table (results.md, results.json). "
                    "With no OPENAI_API_KEY and no OPENAI_BASE_URL, the scripted demonstration "
                    "model (not an LLM) plays them.",
    )
    p.add_argument("--task", required=True, choices=FAMILIES, help="benchmark family")
    p.add_argument("--n", required=True, type=_positive_int, help="number of tasks")
    p.add_argument("--length", required=True, type=_positive_int, metavar="TOKENS",
                   help="context length in tokens (counted as characters / 4), e.g. 131072")
    p.add_argument("--seed", type=int, default=0, help="generator seed (default 0)")
    p.add_argument("--model", help="root model (env RLM_MODEL); for --baseline direct, the model")
    p.add_argument("--sub-model", help="model of llm()/llm_batch() (env RLM_SUB_MODEL)")
    p.add_argument("--base-url", help="OpenAI-compatible endpoint (env OPENAI_BASE_URL)")
    p.add_argument("--concurrency", type=_positive_int, help="model calls in flight at once")
    p.add_argument("--max-steps", type=_positive_int, help="root steps per task (default 30)")
    p.add_argument("--baseline", choices=BASELINES, default="rlm",
                   help="rlm (default); no-subcalls: the REPL without llm/llm_batch/rlm (the "
                        "paper's ablation); direct: the whole context in one call, when it fits")
    p.add_argument("--window-tokens", type=_positive_int, default=DEFAULT_WINDOW_TOKENS,
                   help=f"the direct baseline's context window (default {DEFAULT_WINDOW_TOKENS:,})")
    p.add_argument("--prices", metavar="JSON-or-file",
                   help='USD per 1M tokens: \'{"gpt-5-mini": {"prompt": 0.25, "completion": 2}}\' '
                        "or a file holding that JSON; without it costs are shown as 0")
    p.add_argument("--via", choices=VIAS, default="library",
                   help="library (default): the engine in this process; kernel: each task "
                        "through a real rlm kernel (the headless runner)")
    p.add_argument("--out", required=True, metavar="DIR",
                   help="where task files, notebooks, results.json and results.md go")
    # Every other setting rlm-kernel run takes (call_timeout, max_retries, temperature, the
    # token bounds, stream, ...), generated from the settings registry.
    add_setting_options(p, "cli", skip=_OWN_FLAGS)
    return p


#: Settings this parser defines its own way (above), not from the registry.
_OWN_FLAGS = frozenset({"model", "sub_model", "base_url", "concurrency", "max_steps"})


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    try:
        prices = load_prices(args.prices)
    except (OSError, ValueError) as exc:
        print(f"rlm-kernel eval: {exc}", file=sys.stderr)
        return 2
    settings = EvalSettings(
        task=args.task, n=args.n, length_tokens=args.length, out=args.out, seed=args.seed,
        model=args.model, sub_model=args.sub_model, base_url=args.base_url,
        concurrency=args.concurrency, max_steps=args.max_steps, baseline=args.baseline,
        prices=prices, via=args.via, window_tokens=args.window_tokens,
        command=shlex.join(["rlm-kernel", "eval", *argv]),
    )
    try:
        settings.extra = {k: v for k, v in options_given(args, "cli").items()
                          if k not in _OWN_FLAGS}
    except ConfigError as exc:
        print(f"rlm-kernel eval: {exc}", file=sys.stderr)
        return 2
    try:
        cfg = settings.config()
        if cfg.scripted:
            from ..scripted import SCRIPTED_BANNER

            print(SCRIPTED_BANNER, file=sys.stderr)
        report = run_eval(settings)
    except (ConfigError, ValueError) as exc:
        from ..config import redact

        print(f"rlm-kernel eval: {redact(str(exc))}", file=sys.stderr)
        return 2
    print(report.markdown())
    print(f"rlm-kernel eval: notebooks and results.json / results.md in {args.out}",
          file=sys.stderr)
    return 1 if any(r.status == "error" for r in report.rows) else 0
