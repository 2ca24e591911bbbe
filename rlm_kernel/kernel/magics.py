"""``%%llm`` (a sub-call as an editable cell) and the ``%rlm`` subcommands that do not drive a run.

``%%rlm``, ``%rlm continue``, ``%rlm step`` and ``%rlm replay`` drive runs and are handled by the
kernel itself (they must await model calls so that Pause/Stop reach the kernel mid-run); the magics
here say so when used elsewhere.
"""

from __future__ import annotations

import os
from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, cell_magic, line_cell_magic, magics_class
from IPython.display import Pretty, display

from .. import cells
from ..config import RLMConfig, parse_setting
from ..custom_tools import ToolError, tools_from, tools_prompt_section
from ..errors import ConfigError, ModelCallError, ReplayMissError, RLMError
from ..image_store import ImageStore
from ..loaders import DEFAULT_DPI, load_path
from ..media import ImageData
from ..notebook import branch_title, image_outputs, llm_cell_source
from ..repl import PROTECTED_NAMES
from ..states import CallState
from ..subprompt import SubPrompt
from ..trajectory import Run, SubCall, new_id, preview, sha256_text
from . import files
from .driver import RunDriver
from .options import OptionError, parse_line, parse_llm_cell
from .run_widget import subcalls_text

__all__ = ["RLMMagics"]

_DRIVERS = ("continue", "step", "replay", "resume", "fork")


@magics_class
class RLMMagics(Magics):
    def __init__(self, shell: Any, driver: RunDriver) -> None:
        super().__init__(shell)
        self.driver = driver
        self.registry = driver.registry

    # -- %%llm ---------------------------------------------------------------------------------
    @cell_magic
    def llm(self, line: str, cell: str) -> Pretty:
        """%%llm [--model M] [--call ID] [--fresh]: send the body as one sub-call; show the response.

        With ``--call ID`` the cell is a recorded sub-call. Unedited, the kernel shows its record
        (no call: its body may be only a preview of the prompt, never to be sent as if it were
        it); ``--fresh`` sends its whole recorded prompt again. Edited, the body is sent as written and the record updated; a call that carried
        images sends the same images again (held by the kernel this session; the notebook has
        only their thumbnails) and shows their thumbnails. A ``--call`` this kernel cannot find
        sends nothing.
        """
        try:
            opts = parse_llm_cell(line)
        except OptionError as exc:
            raise UsageError(str(exc)) from None
        drv = self.driver
        call = _find_call(self.registry.runs, opts.get("call"))
        if opts.get("call") and call is None:
            raise UsageError(
                f"this cell records sub-call {opts['call']} of a run this kernel does not hold, so "
                "nothing was sent (its body may be only a preview of the prompt). `%rlm continue "
                "--from NOTEBOOK.ipynb` loads the run; or remove --call to send the body as a new "
                "prompt")
        prompt = cell.rstrip("\n")
        if opts.get("fresh") and call is not None and \
                prompt.strip() == llm_cell_source(call).partition("\n")[2].strip():
            full = call.prompt if call.prompt is not None else drv.prompts.get(call.call_id)
            if full is None:
                raise UsageError(
                    f"sub-call {call.call_id}'s cell shows only a preview of its prompt (the "
                    "record keeps prompts up to record_prompt_chars), so nothing was sent. Edit "
                    "the body to the prompt you want sent")
            prompt = full
        if not prompt.strip():
            raise UsageError("%%llm needs a prompt: write it below the %%llm line")
        model = opts.get("model") or (call.model if call else None) or drv.config.subcall_model
        sp = SubPrompt(prompt, _held_images(call, drv.images) if call is not None else [])
        detail = drv.config.image_detail
        if sp.images:
            display(*(_Output(o) for o in image_outputs(sp.records(drv.images))))
        client = drv.client
        try:
            comp = client.complete([sp.message(detail)], model=model, depth=1,
                                   key=client.key_for([sp.key_message(detail)], model),
                                   fresh=bool(opts.get("fresh")))
        except (ModelCallError, ReplayMissError) as exc:
            raise UsageError(str(exc)) from None
        if call is not None:
            call.edited = call.edited or sha256_text(prompt) != call.prompt_sha256
            call.response, call.usage, call.latency_s = comp.text, comp.usage, comp.latency_s
            call.cache_key, call.cached = comp.cache_key, comp.cached
            call.status, call.error = CallState.OK, None
            call.prompt_sha256, call.prompt_chars = sha256_text(prompt), len(prompt)
            call.prompt_preview = preview(prompt, 400)
            call.prompt = prompt if len(prompt) <= drv.config.record_prompt_chars else None
            call.images = sp.records(drv.images) if sp.images else []
        else:
            rec = SubCall(call_id=new_id("c"), model=model, prompt=prompt, response=comp.text,
                          status=CallState.OK, usage=comp.usage, latency_s=comp.latency_s,
                          cache_key=comp.cache_key, cached=comp.cached, prompt_chars=len(prompt),
                          prompt_sha256=sha256_text(prompt))
            drv.prompts[rec.call_id] = prompt
        return Pretty(comp.text)

    # -- %rlm / %%rlm --------------------------------------------------------------------------
    @line_cell_magic
    def rlm(self, line: str, cell: str | None = None) -> Any:
        """%rlm config|status|stop|export|load|continue|step|replay ... ; %%rlm runs a query.

        Subcommands:
          config [key=value ...]   show or change settings (secrets are never shown)
          status                   the runs of this kernel and their state
          stop                     stop a paused run
          export PATH.ipynb        write this kernel's trajectories as a notebook
          load PATH [--var NAME] [--dpi N]
                                   read a text file, a PDF (page images + text) or a folder of
                                   images into `context` (or NAME), noting its source
          tool NAME [NAME ...]     offer these functions of the namespace to the model (listed in
                                   its system prompt, callable from its code); `tool` lists them,
                                   `tool --remove NAME` withdraws one
          continue [--run ID]      resume a run (in a cell of its own)
          step [--run ID]          run one more step, then pause (in a cell of its own)
          replay PATH.ipynb        re-run a trajectory from its recorded responses (own cell)
          fork --at K [--run ID] [--model M] ...   a branch of a run after step K (own cell)
          compare [RUN_A] [RUN_B]  two runs side by side (default: the latest branch and its
                                   parent)
        """
        if cell is not None:
            raise UsageError(
                "%%rlm must be the first line of its cell (the kernel runs it); this looks nested"
            )
        try:
            sub, args = parse_line(line)
        except OptionError as exc:
            raise UsageError(str(exc)) from None
        handler = getattr(self, f"_sub_{sub.replace('-', '_')}", None)
        if sub in _DRIVERS:
            raise UsageError(f"%rlm {sub} must be alone in its cell: the kernel runs it as a run")
        if handler is None:
            raise UsageError(
                f"unknown %rlm subcommand {sub!r}; use one of: config, status, stop, export, load, "
                "tool, continue, step, replay, resume, fork, compare"
            )
        return handler(args)

    def _sub_config(self, args: list[str]) -> Any:
        cfg: RLMConfig = self.driver.config
        changes: dict[str, Any] = {}
        for arg in args:
            key, sep, raw = arg.partition("=")
            key = key.strip().replace("-", "_")
            if key == "api_key" and not sep:
                # Prompted without echo: the key never has to be typed into a cell.
                from getpass import getpass

                changes["api_key"] = getpass("API key (not shown, not saved in the notebook): ")
                continue
            if not sep:
                raise UsageError(f"%rlm config takes key=value pairs, not {arg!r}")
            try:
                changes[key] = parse_setting(key, raw)
            except ConfigError as exc:
                raise UsageError(str(exc)) from None
        try:
            self.driver.reconfigure(**changes)
        except RLMError as exc:
            raise UsageError(str(exc)) from None
        if changes.get("api_key"):
            _scrub_history(self.shell, changes["api_key"])
        shown = cfg.describe()
        width = max(map(len, shown))
        text = "\n".join(f"{k.ljust(width)} = {v!r}" for k, v in sorted(shown.items()))
        display(Pretty(text))

    def _sub_status(self, args: list[str]) -> None:
        reg = self.registry
        if not reg.roots:
            display(Pretty("No runs yet. Start one with a %%rlm cell."))
            return
        lines = []
        for rid, depth in _branch_order(reg.roots, reg.runs):
            run = reg.runs[rid]
            st = cells.run_status(run, reg.runs)
            pad = "  " * depth
            head = f"{pad}└ " if depth else ""
            lines.append(
                f"{head}{rid}  {run.status!s:<8} step {st['step']}/{st['max_steps']}  sub-calls "
                f"{subcalls_text(st['subcalls'])}  tokens {st['tokens']:,}  "
                f"${st['cost_usd']:.4f}  {st['elapsed_s']:.1f}s  {run.query[:60]!r}"
                + (f"\n{pad}    {branch_title(run)} · {run.model} / {run.sub_model}"
                   if run.fork_of is not None else "")
                + (f"\n{pad}    {run.stop_reason}" if run.stop_reason else "")
            )
        snap = self.driver.pool.ledger.snapshot()
        lines.append(f"session: {snap['total']['requests']} model requests, "
                     f"{snap['http_attempts']} HTTP attempts, {snap['cache_hits']} cache hits")
        display(Pretty("\n".join(lines)))

    def _sub_compare(self, args: list[str]) -> Any:
        """Two runs of this kernel side by side (ids or branch labels). One run: it and its
        parent. None: the latest branch and its parent."""
        from ..compare import CompareView, compare

        reg = self.registry
        if len(args) > 2:
            raise UsageError("usage: %rlm compare [RUN_A] [RUN_B]")
        picked = [_run_named(reg.runs, name) for name in args]
        if len(picked) < 2:
            branch = picked[0] if picked else next(
                (reg.runs[r] for r in reversed(reg.roots) if reg.runs[r].fork_of is not None), None)
            if branch is None or branch.fork_of is None:
                raise UsageError(
                    "%rlm compare needs two runs (%rlm compare RUN_A RUN_B), or a branch to set "
                    "beside its parent; this kernel has " + ("no branch yet: make one with "
                                                             "%rlm fork --at K --model M"
                                                             if branch is None else
                                                             f"{branch.run_id}, which is no branch"))
            parent = reg.runs.get(branch.fork_of.run)
            if parent is None:
                raise UsageError(f"the parent {branch.fork_of.run} of {branch.run_id} is not in "
                                 "this kernel; name both runs")
            picked = [parent, branch]
        display(CompareView(compare(picked[0], picked[1], reg.runs, reg.runs)))

    def _sub_tool(self, args: list[str]) -> None:
        assert self.shell is not None
        tools = self.driver.tools
        if args[:1] == ["--remove"]:
            for name in args[1:]:
                tools.pop(name, None)
        elif args:
            missing = [n for n in args if n not in self.shell.user_ns]
            if missing:
                raise UsageError(f"no {missing[0]!r} in the namespace: define the function "
                                 "first, then %rlm tool NAME")
            try:
                found = tools_from({n: self.shell.user_ns[n] for n in args},
                                   reserved=PROTECTED_NAMES)
            except ToolError as exc:
                raise UsageError(str(exc)) from None
            tools.update(found)
        listed = tools_prompt_section(tools).strip() or "No custom tools (%rlm tool NAME adds one)."
        display(Pretty(listed))

    def _sub_stop(self, args: list[str]) -> None:
        stopped = self.driver.stop_paused()
        display(Pretty(f"stopped {len(stopped)} paused run(s)" if stopped
                       else "no paused run to stop"))

    def _sub_export(self, args: list[str]) -> None:
        if len(args) != 1:
            raise UsageError("usage: %rlm export PATH.ipynb")
        nb = files.export(self.registry, args[0])
        display(Pretty(f"wrote {args[0]} ({len(nb.cells)} cells)"))

    def _sub_load(self, args: list[str]) -> None:
        if not args:
            raise UsageError("usage: %rlm load PATH [--var NAME] [--dpi N]")
        path, var, dpi = args[0], "context", DEFAULT_DPI
        for flag in ("--var", "--dpi"):
            if flag in args:
                i = args.index(flag)
                if i + 1 >= len(args):
                    raise UsageError(f"{flag} needs a value")
                if flag == "--var":
                    var = args[i + 1]
                elif not args[i + 1].isdigit() or int(args[i + 1]) < 1:
                    raise UsageError(f"--dpi needs a whole number of dots per inch, not {args[i + 1]!r}")
                else:
                    dpi = int(args[i + 1])
        if not os.path.exists(path):
            raise UsageError(f"no file {path!r} (from {os.getcwd()})")
        try:
            loaded = load_path(path, dpi=dpi)
        except PermissionError:
            raise UsageError(files.unreadable(path)) from None
        except (ImportError, ValueError, OSError) as exc:
            raise UsageError(str(exc)) from None
        assert self.shell is not None
        self.shell.user_ns[var] = loaded.context
        self.registry.context_sources[var] = loaded.source
        display(Pretty(f"{var} = {path}: {loaded.summary()}"))


def _held_images(call: SubCall, store: ImageStore) -> list[ImageData]:
    """The images a recorded call sent, from the kernel's store; a clear error if one is gone."""
    images = []
    for k, rec in enumerate(call.images, start=1):
        held = store.get(str(rec.get("sha256", "")))
        if held is None:
            raise UsageError(
                f"sub-call {call.call_id} sent {len(call.images)} image(s); image {k} "
                f"({rec.get('width')}x{rec.get('height')}, sha256 {str(rec.get('sha256'))[:12]}) is "
                "not held by this kernel (a notebook keeps only thumbnails; the kernel keeps the "
                "newest keep_image_bytes of images this session). Re-run the step that made the "
                "call, or call llm(prompt, images=[...]) yourself.")
        images.append(held)
    return images


class _Output:
    """An nbformat display output, shown as it is (its data and metadata)."""

    def __init__(self, output: dict[str, Any]) -> None:
        self.output = output

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None
                          ) -> tuple[dict[str, Any], dict[str, Any]]:
        return self.output["data"], self.output["metadata"]


def _run_named(runs: dict[str, Run], name: str) -> Run:
    """A root run by id or branch label, or a UsageError listing the runs there are."""
    found = [r for r in runs.values() if r.depth == 0 and name in (r.run_id, r.branch)]
    if not found:
        known = ", ".join(r.run_id + (f" ({r.branch})" if r.branch else "")
                          for r in runs.values() if r.depth == 0) or "none"
        raise UsageError(f"no run {name!r} in this kernel; runs: {known}")
    return found[-1]


def _branch_order(roots: list[str], runs: dict[str, Run]) -> list[tuple[str, int]]:
    """Root runs with each branch under its parent (run id, depth of branching), oldest first."""
    kids: dict[str | None, list[str]] = {}
    for rid in roots:
        fork = runs[rid].fork_of
        parent = fork.run if fork is not None and fork.run in roots else None
        kids.setdefault(parent, []).append(rid)
    out: list[tuple[str, int]] = []

    def walk(parent: str | None, depth: int) -> None:
        for rid in kids.get(parent, []):
            out.append((rid, depth))
            walk(rid, depth + 1)

    walk(None, 0)
    return out


def _find_call(runs: dict[str, Any], call_id: str | None) -> SubCall | None:
    if not call_id:
        return None
    for run in runs.values():
        if call_id in run.subcalls:
            return run.subcalls[call_id]
    return None


def _scrub_history(shell: Any, secret: str) -> None:
    """Take a key typed into ``%rlm config api_key=...`` out of IPython's history (In, _ih,
    %history and the history database), so it is not saved or shown again."""
    if len(secret) < 8:
        return
    hm = shell.history_manager
    for hist in (hm.input_hist_parsed, hm.input_hist_raw):
        for i, line in enumerate(hist):
            if secret in line:
                hist[i] = line.replace(secret, "***")
    with hm.db_input_cache_lock:
        hm.db_input_cache[:] = [
            tuple(x.replace(secret, "***") if isinstance(x, str) else x for x in entry)
            for entry in hm.db_input_cache
        ]
