"""``rlm-kernel``: install | run | demo | replay | serve-scripted | export | eval.

A thin shell over the library and the headless runner: every command's work lives elsewhere.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from typing import Any

__all__ = ["main"]


def _run_parser(sub: Any) -> None:
    p = sub.add_parser("run", help="run a query over a context file in a headless rlm kernel")
    p.add_argument("--context", help="file whose text is the context")
    p.add_argument("--query", help="the question")
    p.add_argument("--resume", metavar="PATH.ipynb",
                   help="resume a trajectory: recorded calls are reused, the rest runs live")
    _model_args(p)
    p.add_argument("--max-steps", type=int)
    p.add_argument("--max-depth", type=int)
    p.add_argument("--max-subcalls", type=int)
    p.add_argument("--max-wall-time", type=float)
    p.add_argument("--step-timeout", type=float)
    p.add_argument("--concurrency", type=int)
    p.add_argument("--scripted-latency", type=float, help=argparse.SUPPRESS)
    p.add_argument("--output", default="trajectory.ipynb", help="trajectory notebook to write")


def _model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", help="root model (env RLM_MODEL)")
    p.add_argument("--sub-model", help="model for llm()/llm_batch() (env RLM_SUB_MODEL)")
    p.add_argument("--base-url", help="OpenAI-compatible endpoint (env OPENAI_BASE_URL)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rlm-kernel",
        description="Recursive Language Models in a Jupyter kernel. With no OPENAI_API_KEY and no "
                    "OPENAI_BASE_URL, the embedded scripted demonstration model answers.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("install", help="install the 'rlm' kernelspec")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--user", action="store_true")
    where.add_argument("--sys-prefix", action="store_true")
    where.add_argument("--prefix")
    _run_parser(sub)
    p = sub.add_parser("demo", help="generate a 1M-character haystack and find its needle")
    p.add_argument("--dir", default="demo", help="where to write haystack.txt and the trajectory")
    p.add_argument("--size", type=int, default=1_000_000, help="haystack characters")
    p = sub.add_parser("replay", help="re-run a trajectory from its recorded responses, offline")
    p.add_argument("notebook")
    p.add_argument("--output", help="write the replayed trajectory here")
    p = sub.add_parser("serve-scripted", help="serve the scripted model over HTTP on 127.0.0.1")
    p.add_argument("rest", nargs=argparse.REMAINDER)
    p = sub.add_parser("export", help="print a trajectory notebook's runs as JSON records")
    p.add_argument("notebook")
    p.add_argument("--output", help="write the JSON here instead of stdout")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "serve-scripted":
        from .scripted.server import main as serve

        return serve(argv[1:])
    if argv and argv[0] == "eval":
        from .evals.cli import main as eval_main

        return eval_main(argv[1:])
    args = build_parser().parse_args(argv)
    if args.command == "install":
        from .install import main as install_main

        flags = ["--user"] if args.user else ["--sys-prefix"] if args.sys_prefix else \
            ["--prefix", args.prefix] if args.prefix else []
        return install_main(flags)
    if args.command == "run":
        return _cmd_run(args)
    if args.command == "demo":
        return _cmd_demo(args)
    if args.command == "replay":
        return _cmd_replay(args)
    if args.command == "export":
        return _cmd_export(args)
    return 2


def _fail(message: str, code: int = 1) -> int:
    from .config import redact

    print(f"rlm-kernel: {redact(message)}", file=sys.stderr)
    return code


def _kernel_env(args: argparse.Namespace) -> dict[str, str]:
    env: dict[str, str] = {}
    if getattr(args, "base_url", None):
        env["OPENAI_BASE_URL"] = args.base_url
    if getattr(args, "model", None):
        env["RLM_MODEL"] = args.model
    if getattr(args, "sub_model", None):
        env["RLM_SUB_MODEL"] = args.sub_model
    if getattr(args, "concurrency", None):
        env["RLM_CONCURRENCY"] = str(args.concurrency)
    return env


def _rlm_options(args: argparse.Namespace) -> str:
    opts: list[str] = []
    for name in ("max_steps", "max_depth", "max_subcalls", "max_wall_time", "step_timeout"):
        value = getattr(args, name, None)
        if value is not None:
            opts += [f"--{name.replace('_', '-')}", str(value)]
    return " ".join(shlex.quote(o) for o in opts)


def _cmd_run(args: argparse.Namespace) -> int:
    if args.resume:
        if not os.path.exists(args.resume):
            return _fail(f"no trajectory {args.resume!r} to resume")
        import nbformat

        cells = [f"%rlm resume {shlex.quote(os.path.abspath(args.resume))}"]
        output = args.output if args.output != "trajectory.ipynb" else args.resume
        original = nbformat.read(args.resume, as_version=4)
        return _headless(args, cells, output, initial=[dict(c) for c in original.cells])
    if not args.context or args.query is None:
        return _fail("run needs --context FILE and --query TEXT (or --resume PATH.ipynb)", 2)
    if not os.path.isfile(args.context):
        return _fail(f"no context file {args.context!r}", 2)
    if not args.query.strip():
        return _fail("the query is empty; pass --query 'your question'", 2)
    setup = [f"%rlm load {shlex.quote(os.path.abspath(args.context))}"]
    if args.scripted_latency:
        setup.insert(0, f"%rlm config scripted_latency={args.scripted_latency}")
    head = "%%rlm " + _rlm_options(args)
    return _headless(args, [*setup, f"{head.rstrip()}\n{args.query}"], args.output)


def _headless(args: argparse.Namespace, cells: list[str], output: str | None,
              banner: bool = True, initial: list[dict[str, Any]] | None = None) -> int:
    from .api import SCRIPTED_BANNER
    from .config import RLMConfig
    from .headless import HeadlessKernel, KernelDied, error_text

    env = _kernel_env(args)
    # The kernel sees this environment (OPENAI_API_KEY) plus --base-url: scripted if neither.
    cfg = RLMConfig(base_url=env["OPENAI_BASE_URL"]) if env.get("OPENAI_BASE_URL") else RLMConfig()
    if cfg.scripted and banner:
        print(SCRIPTED_BANNER, file=sys.stderr)
    try:
        kernel = HeadlessKernel(env=env, output=output, initial_cells=initial)
    except RuntimeError as exc:
        return _fail(f"could not start the rlm kernel: {exc}")
    interrupted = False

    def note_interrupt() -> None:
        nonlocal interrupted
        interrupted = True

    try:
        for code in cells:
            reply = kernel.execute(code, on_interrupt=note_interrupt, record=initial is None)
            finish = kernel.last_finish()
            if reply.get("status") != "ok" and finish is None:
                return _fail(error_text(reply))
        finish = kernel.last_finish()
    except KernelDied as exc:
        return _fail(f"{exc}" + (f" in {output}" if output else ""), 3)
    finally:
        kernel.close()
    if output:
        print(f"rlm-kernel: trajectory written to {output}", file=sys.stderr)
    if interrupted:
        return _fail("interrupted (Ctrl-C); the partial trajectory is kept", 130)
    if finish is None:
        return _fail("the run ended without a result")
    if finish.get("outcome") == "final":
        print(finish.get("answer"))
        return 0
    return _fail(f"run {finish.get('outcome')}: {finish.get('reason')}")


def _cmd_demo(args: argparse.Namespace) -> int:
    from .evals.sniah import make_task

    os.makedirs(args.dir, exist_ok=True)
    path = os.path.join(args.dir, "haystack.txt")
    task = make_task(seed=7, index=0, length_tokens=max(1, args.size // 4))
    text, query, value = task.context, task.query, task.gold
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
    print(f"rlm-kernel demo: {len(text):,}-character haystack in {path}; asking: {query}",
          file=sys.stderr)
    ns = argparse.Namespace(context=path, query=query, resume=None, model=None, sub_model=None,
                            base_url=None, max_steps=None, max_depth=None, max_subcalls=None,
                            max_wall_time=None, step_timeout=None, concurrency=None,
                            scripted_latency=None, output=os.path.join(args.dir, "trajectory.ipynb"))
    code = _cmd_run(ns)
    if code == 0:
        print(f"rlm-kernel demo: expected {value}", file=sys.stderr)
    return code


def _cmd_replay(args: argparse.Namespace) -> int:
    if not os.path.exists(args.notebook):
        return _fail(f"no notebook {args.notebook!r}")
    env = {"OPENAI_BASE_URL": "", "OPENAI_API_KEY": ""}
    ns = argparse.Namespace(base_url=None, model=None, sub_model=None, concurrency=None)
    code = f"%rlm replay {shlex.quote(os.path.abspath(args.notebook))}"
    os.environ.update(env)  # replay never needs (or uses) an endpoint
    return _headless(ns, [code], args.output, banner=False)


def _cmd_export(args: argparse.Namespace) -> int:
    import nbformat

    from .notebook import runs_from_notebook

    nb = nbformat.read(args.notebook, as_version=4)
    runs = runs_from_notebook(nb)
    payload = json.dumps({rid: run.to_dict() for rid, run in runs.items()}, indent=1)
    if args.output:
        with open(args.output, "w", encoding="utf-8") as f:
            f.write(payload)
    else:
        print(payload)
    return 0 if runs else _fail(f"{args.notebook} holds no RLM trajectory")
