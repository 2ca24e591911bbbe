"""``rlm-kernel``: install | run | fork | demo | replay | serve-scripted | export | eval | compare |
import.

A thin shell over the library and the headless runner: every command's work lives elsewhere.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import sys
from typing import Any

from .config import (
    add_setting_options,
    env_name,
    options_given,
    setting_flags,
    setting_traits,
)
from .errors import ConfigError

__all__ = ["main"]


#: Exit status of ``run`` when the answer is best-effort (asked for after a budget ran out).
EXIT_BEST_EFFORT = 5


def _run_parser(sub: Any) -> None:
    p = sub.add_parser("run", help="run a query over a context file in a headless rlm kernel")
    p.add_argument("--context", help="the context: a text file, a PDF (page images and text), "
                                     "an image, or a folder of images")
    p.add_argument("--query", help="the question")
    p.add_argument("--resume", metavar="PATH.ipynb",
                   help="resume a trajectory: recorded calls are reused, the rest runs live")
    p.add_argument("--trust", action="store_true",
                   help="resume a trajectory you did not write without being asked (read its "
                        "code first: resuming runs it)")
    add_setting_options(p, "cli")
    p.add_argument("--scripted-latency", type=float, help=argparse.SUPPRESS)
    p.add_argument("--output", default="trajectory.ipynb", help="trajectory notebook to write")
    _sandbox_args(p)


def _sandbox_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--sandbox", action="store_true",
                   help="run in the sandboxed kernel: model code reads only the Python "
                        "environment, the context and the working folder, writes only there, "
                        "reaches no network but the model (docs/sandbox.md)")
    p.add_argument("--workdir", metavar="DIR",
                   help="with --sandbox: the working folder (default: a fresh temporary one)")
    p.add_argument("--read", metavar="PATH", action="append", default=[],
                   help="with --sandbox: another file or folder model code may read (repeatable)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rlm-kernel",
        description="Recursive Language Models in a Jupyter kernel. With no OPENAI_API_KEY and no "
                    "OPENAI_BASE_URL, the embedded scripted demonstration model answers.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("install", help="install the 'rlm' and 'rlm-sandboxed' kernelspecs")
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
    p.add_argument("--trust", action="store_true",
                   help="replay a trajectory you did not write without being asked (read its "
                        "code first: replaying runs it)")
    p.add_argument("--output", help="write the replayed trajectory here")
    _sandbox_args(p)
    p = sub.add_parser("fork", help="branch a recorded run at a step, headless: its steps up to "
                       "--at are re-executed from the record (nothing paid), the rest runs live "
                       "with the settings given")
    p.add_argument("notebook")
    p.add_argument("--at", type=int, required=True,
                   help="the parent's step to fork after (0: start afresh)")
    p.add_argument("--run", help="the run to fork (default: the notebook's last run)")
    p.add_argument("--query", help="another query for the branch (default: the parent's)")
    p.add_argument("--label", help="the branch's name (default: what it changes, and where)")
    p.add_argument("--trust", action="store_true",
                   help="fork a trajectory you did not write without being asked (its first "
                        "steps are re-executed)")
    add_setting_options(p, "cli")
    p.add_argument("--output", help="notebook to write (default: the notebook itself)")
    _sandbox_args(p)
    p = sub.add_parser("serve-scripted", help="serve the scripted model over HTTP on 127.0.0.1")
    p.add_argument("rest", nargs=argparse.REMAINDER)
    p = sub.add_parser("export", help="print a trajectory notebook's runs as JSON records")
    p.add_argument("notebook")
    p.add_argument("--output", help="write the JSON here instead of stdout")
    p = sub.add_parser("import", help="turn an rlms log (RLMLogger .jsonl) into a trajectory "
                                      "notebook: import LOG.jsonl -o run.ipynb [--context FILE]")
    p.add_argument("rest", nargs=argparse.REMAINDER)
    return parser


def _without_iri_grammars() -> None:
    """Spare every command 1.3 s of start-up: jsonschema (imported by nbformat) loads
    ``rfc3987_syntax`` when it is installed (JupyterLab's dependencies install it) for its "iri"
    format checks, and that module compiles some 35 Earley grammars at import. No notebook schema
    uses those formats, so this process's jsonschema goes without them (a known upstream cost;
    done here, in the application, never in the library a user imports)."""
    if "jsonschema" not in sys.modules:
        sys.modules.setdefault("rfc3987_syntax", None)  # type: ignore[arg-type]


def main(argv: list[str] | None = None) -> int:
    _without_iri_grammars()
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "serve-scripted":
        from .scripted.server import main as serve

        return serve(argv[1:])
    if argv and argv[0] == "eval":
        from .evals.cli import main as eval_main

        return eval_main(argv[1:])
    if argv and argv[0] == "compare":
        from .compare import main as compare_main

        return compare_main(argv[1:])
    if argv and argv[0] == "import":
        from .importers.rlms_log import main as import_main

        return import_main(argv[1:])
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
    if args.command == "fork":
        return _cmd_fork(args)
    return 2


def _fail(message: str, code: int = 1) -> int:
    from .config import redact

    print(f"rlm-kernel: {redact(message)}", file=sys.stderr)
    return code


def _settings_given(args: argparse.Namespace) -> dict[str, Any]:
    return options_given(args, "cli") if hasattr(args, "max_steps") else {}


def _kernel_env(values: dict[str, Any]) -> dict[str, str]:
    """Settings for the kernel process as its environment (each setting's own variable), so the
    kernel starts with them; the per-run ones are also written on the ``%%rlm`` line, where the
    trajectory shows them."""
    traits = setting_traits()
    return {env_name(k, traits[k]): (json.dumps(v) if isinstance(v, dict) else str(v))
            for k, v in values.items()}


def _rlm_options(values: dict[str, Any]) -> str:
    per_run = {k: v for k, v in values.items()
               if setting_traits()[k].metadata.get("per_run")}
    return " ".join(shlex.quote(o) for o in setting_flags(per_run))


def _cmd_run(args: argparse.Namespace) -> int:
    try:
        values = _settings_given(args)
    except ConfigError as exc:
        return _fail(str(exc), 2)
    if args.scripted_latency:
        values["scripted_latency"] = args.scripted_latency
    if args.resume:
        if not os.path.exists(args.resume):
            return _fail(f"no trajectory {args.resume!r} to resume", 2)
        import nbformat

        refused = _consent(args.resume, args.trust)
        if refused:
            return _fail(refused, 2)
        cells = [f"%rlm resume --trust {shlex.quote(os.path.abspath(args.resume))}"]
        output = args.output if args.output != "trajectory.ipynb" else args.resume
        original = nbformat.read(args.resume, as_version=4)
        return _headless(values, cells, output, initial=[dict(c) for c in original.cells],
                         sandbox=_sandbox(args, _trajectory_files(original, args.resume)))
    if not args.context or args.query is None:
        return _fail("run needs --context FILE and --query TEXT (or --resume PATH.ipynb)", 2)
    if not os.path.exists(args.context):
        return _fail(f"no context file {args.context!r}", 2)
    if not args.query.strip():
        return _fail("the query is empty; pass --query 'your question'", 2)
    setup = [f"%rlm load {shlex.quote(os.path.abspath(args.context))}"]
    head = f"%%rlm {_rlm_options(values)}".rstrip()
    return _headless(values, [*setup, f"{head}\n{args.query}"], args.output,
                     sandbox=_sandbox(args, [args.context]))


def _sandbox(args: argparse.Namespace, files: list[str]) -> Any:
    """The sandboxed kernel's launch settings for this command, or None without ``--sandbox``:
    model code may read the command's own files (context, trajectory) and ``--read`` ones."""
    if not getattr(args, "sandbox", False):
        return None
    from .sandbox import LaunchSettings

    paths = [os.path.abspath(p) for p in [*files, *args.read]]
    workdir = os.path.abspath(args.workdir) if args.workdir else ""
    return LaunchSettings(workdir=workdir, read=tuple(dict.fromkeys(paths)))


def _trajectory_files(nb: Any, path: str) -> list[str]:
    """A trajectory and the context files its runs read (replay, resume and fork reload them)."""
    from .notebook import runs_from_notebook

    sources = [run.context.source.partition("#dpi=")[0]
               for run in runs_from_notebook(nb).values()]
    return [path, *(s for s in sources if s and not s.startswith("variable:")
                    and os.path.exists(s))]


def _consent(path: str, trusted: bool) -> str | None:
    """None when the trajectory at ``path`` may run: signed by this user and its cells show what
    runs, or ``--trust``, or the human said yes at the prompt. Otherwise why not."""
    import nbformat

    from .trust import review

    report = review(nbformat.read(path, as_version=4), path)
    if trusted or not report.needs_consent:
        return None
    print(report.summary(), file=sys.stderr)
    if sys.stdin.isatty():
        try:
            if input("Run this code? [y/N] ").strip().lower() in ("y", "yes"):
                return None
        except EOFError:
            pass
    return (f"{path} is not trusted and nothing was run; read the code above, then pass --trust "
            f"(or `jupyter trust {path}`)")


def _output_problem(path: str | None) -> str | None:
    """Why the trajectory could not be written to ``path``, found before the run starts."""
    if not path:
        return None
    target = os.path.abspath(path)
    if os.path.isdir(target):
        return f"--output {path!r} is a directory; give a file name such as {path}/run.ipynb"
    probe = os.path.dirname(target)
    while probe and not os.path.exists(probe):
        probe = os.path.dirname(probe)
    if not os.path.isdir(probe or "."):
        return f"--output {path!r} is not writable: {probe} is a file, not a directory"
    if not os.access(probe or ".", os.W_OK) or (os.path.exists(target)
                                               and not os.access(target, os.W_OK)):
        return f"--output {path!r} is not writable; choose a path you can write to"
    return None


def _headless(values: dict[str, Any], cells: list[str], output: str | None,
              banner: bool = True, initial: list[dict[str, Any]] | None = None,
              record: bool | None = None, after: str | None = None, sandbox: Any = None) -> int:
    import shutil
    import tempfile

    from .config import RLMConfig

    problem = _output_problem(output)
    if problem:
        return _fail(problem, 2)
    env = _kernel_env(values)
    # The kernel sees this environment (OPENAI_API_KEY, OPENAI_BASE_URL) plus these settings.
    cfg = RLMConfig(**{k: v for k, v in values.items() if k == "base_url"})
    if cfg.scripted and banner:
        from .scripted import SCRIPTED_BANNER

        print(SCRIPTED_BANNER, file=sys.stderr)
    cwd, scratch = None, None
    if sandbox is not None:
        if not sandbox.workdir:  # a fresh working folder, gone with the run
            scratch = tempfile.mkdtemp(prefix="rlm-workdir-")
            sandbox = type(sandbox)(workdir=scratch, read=sandbox.read, keep_env=sandbox.keep_env)
        env.update(sandbox.to_environ())
        cwd = sandbox.workdir
    try:
        return _drive(_Launch(env, cwd, output, initial, sandbox is not None), cells, output,
                      initial, record, after)
    finally:
        if scratch:
            shutil.rmtree(scratch, ignore_errors=True)


class _Launch:
    """The kernel a command runs in, started before the front-end's heavier imports (nbclient,
    nbformat), which then overlap the kernel's own start-up on the other core."""

    def __init__(self, env: dict[str, str], cwd: str | None, output: str | None,
                 initial: list[dict[str, Any]] | None, sandboxed: bool) -> None:
        self.env = {**os.environ, **env}
        self.cwd = cwd or os.getcwd()
        self.output, self.initial, self.sandboxed = output, initial, sandboxed
        self.runner: Any = None

    async def start(self) -> Any:
        from .launch import kernel_manager, start_kernel

        km = kernel_manager(self.sandboxed)
        await start_kernel(km, env=self.env, cwd=self.cwd)
        from .headless import HeadlessRunner  # while the kernel boots

        self.runner = HeadlessRunner(env=self.env, cwd=self.cwd, output=self.output,
                                     initial_cells=self.initial, sandboxed=self.sandboxed, km=km)
        await self.runner.astart()
        return self.runner


def _drive(launch: _Launch, cells: list[str], output: str | None,
           initial: list[dict[str, Any]] | None, record: bool | None, after: str | None) -> int:
    """Run the cells in the launched kernel; print the answer or one line saying what failed."""
    from .launch import run_sync

    async def main() -> tuple[int, str | None, Any]:
        try:
            runner = await launch.start()
        except Exception as exc:  # noqa: BLE001 - one clear line, not a traceback
            if launch.runner is not None:
                with contextlib.suppress(Exception):
                    await launch.runner.aclose()
            return 1, f"could not start the rlm kernel: {exc}", None
        from .headless import DeadKernelError, error_text

        interrupted = False
        try:
            for code in cells:
                res = await runner.aexecute(
                    code, record=initial is None if record is None else record, after=after)
                interrupted = interrupted or res.interrupted
                if res.reply.get("status") != "ok" and runner.last_finish() is None:
                    return 1, error_text(res.reply), None
                if interrupted:
                    break
        except DeadKernelError:
            return 3, ("the kernel died while running the cell (model code may have called "
                       "os._exit or run out of memory); the partial trajectory is kept"
                       + (f" in {output}" if output else "")), None
        finally:
            await runner.aclose()
        if interrupted:
            return 130, "interrupted (Ctrl-C); the partial trajectory is kept", None
        return 0, None, runner.last_finish()

    code, message, finish = run_sync(main())
    runner = launch.runner
    written = output and runner is not None and not runner.write_error
    if written:
        print(f"rlm-kernel: trajectory written to {output}", file=sys.stderr)
    if message is not None:
        return _fail(message, code)
    if finish is None:
        return _fail("the run ended without a result")
    status = 0 if finish.get("outcome") == "final" else 1
    if finish.get("outcome") == "final":
        print(finish.get("answer"))
        if finish.get("best_effort"):  # answered, but only when asked after a budget ran out
            status = EXIT_BEST_EFFORT
            _fail(f"the answer is best-effort: {finish.get('reason')}")
    else:
        _fail(f"run {finish.get('outcome')}: {finish.get('reason')}")
    if output and runner.write_error:
        return _fail(f"the trajectory could not be written to {output}: {runner.write_error}", 4)
    return status


def _cmd_demo(args: argparse.Namespace) -> int:
    from .tasks.sniah import make_task

    os.makedirs(args.dir, exist_ok=True)
    path = os.path.join(args.dir, "haystack.txt")
    task = make_task(seed=7, index=0, length_tokens=max(1, args.size // 4))
    text, query, value = task.context, task.query, task.gold
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
    print(f"rlm-kernel demo: {len(text):,}-character haystack in {path}; asking: {query}",
          file=sys.stderr)
    ns = argparse.Namespace(context=path, query=query, resume=None, scripted_latency=None,
                            output=os.path.join(args.dir, "trajectory.ipynb"))
    code = _cmd_run(ns)
    if code == 0:
        print(f"rlm-kernel demo: expected {value}", file=sys.stderr)
    return code


def _cmd_replay(args: argparse.Namespace) -> int:
    if not os.path.exists(args.notebook):
        return _fail(f"no notebook {args.notebook!r}", 2)
    refused = _consent(args.notebook, args.trust)
    if refused:
        return _fail(refused, 2)
    code = f"%rlm replay --trust {shlex.quote(os.path.abspath(args.notebook))}"
    os.environ.update({"OPENAI_BASE_URL": "", "OPENAI_API_KEY": ""})  # replay needs no endpoint
    sandbox = None
    if args.sandbox:
        import nbformat

        nb = nbformat.read(args.notebook, as_version=4)
        sandbox = _sandbox(args, _trajectory_files(nb, args.notebook))
    return _headless({}, [code], args.output, banner=False, sandbox=sandbox)


def _cmd_fork(args: argparse.Namespace) -> int:
    """A branch of a saved run, written into the notebook after the parent's group (and after
    the branches it already has), as JupyterLab's "Fork here" places it."""
    import nbformat

    from .notebook import runs_from_notebook

    try:
        values = _settings_given(args)
    except ConfigError as exc:
        return _fail(str(exc), 2)
    if not os.path.isfile(args.notebook):
        return _fail(f"no notebook {args.notebook!r} to fork", 2)
    refused = _consent(args.notebook, args.trust)  # its first steps are re-executed
    if refused:
        return _fail(refused, 2)
    original = nbformat.read(args.notebook, as_version=4)
    runs = runs_from_notebook(original)
    roots = [r for r in runs.values() if r.depth == 0]
    parent = runs.get(args.run) if args.run else (roots[-1] if roots else None)
    if parent is None or parent.depth:
        known = ", ".join(r.run_id for r in roots) or "none"
        return _fail(f"{args.notebook} holds no run {args.run!r} to fork; its runs: {known}", 2)
    group = {parent.run_id}
    for run in runs.values():  # oldest first: a branch's parent is seen before it
        origin = run.fork_of.run if run.fork_of is not None else run.parent
        if origin in group:
            group.add(run.run_id)
    last = [c.get("id") for c in original.cells
            if c.get("metadata", {}).get("rlm", {}).get("run") in group]
    words = ["%rlm", "fork", "--trust", "--from", os.path.abspath(args.notebook), "--run",
             parent.run_id, "--at", str(args.at)]
    for flag, value in (("--query", args.query), ("--label", args.label)):
        if value:
            words += [flag, value]
    code = " ".join(shlex.quote(w) for w in words)
    options = _rlm_options(values)
    if options:
        code += " " + options
    return _headless(values, [code], args.output or args.notebook,
                     initial=[dict(c) for c in original.cells], record=True,
                     after=last[-1] if last else None,
                     sandbox=_sandbox(args, _trajectory_files(original, args.notebook)))


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
