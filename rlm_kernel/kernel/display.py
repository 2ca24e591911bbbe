"""What the query cell shows when no front-end mirrors the run as cells (plain Jupyter, nbclient).

Each step appears as rich output (markdown with the code and its text output, plain text for
consoles), and the run ends with its answer, so nothing is lost without the extension.
"""

from __future__ import annotations

from IPython.display import display

from ..notebook import answer_preview
from ..observer import RunObserver
from ..outputs import truncate
from ..trajectory import Run, Step

__all__ = ["show_step", "show_end", "end_bundle", "QueryCellView"]


def _fence(text: str, lang: str = "") -> str:
    ticks = "````" if "```" in text else "```"
    return f"{ticks}{lang}\n{text.rstrip()}\n{ticks}"


def show_step(run: Run, step: Step) -> None:
    calls = sum(1 for c in run.subcalls.values() if c.step == step.n)
    head = f"**Step {step.n}**" + (f" · {calls} sub-calls" if calls else "")
    parts = [head]
    if step.thought:
        parts.append(truncate(step.thought, 1500))
    if step.code is not None:
        parts.append(_fence(step.code, "python"))
        out = step.output_text.strip()
        if out:
            parts.append(_fence(truncate(out, 3000)))
    plain = "\n".join(p for p in [f"--- step {step.n} ---", step.code or "", step.output_text] if p)
    display({"text/markdown": "\n\n".join(parts), "text/plain": truncate(plain, 3000)}, raw=True)


def end_bundle(run: Run, usage_line: str) -> dict[str, str]:
    """What the query cell shows when its run ends: the answer (or why none), and its usage."""
    if run.answer is not None:
        shown, _ = answer_preview(run.answer)  # whole in the final cell; a long one once
        md = f"**Final answer:**\n\n{shown}\n\n<sub>{usage_line}</sub>"
        return {"text/markdown": md, "text/plain": f"FINAL: {shown}\n{usage_line}"}
    text = f"Run {run.status}: {run.stop_reason}"
    return {"text/markdown": f"**Run {run.status}:** {run.stop_reason}\n\n<sub>{usage_line}</sub>",
            "text/plain": f"{text}\n{usage_line}"}


def show_end(run: Run, usage_line: str) -> None:
    display(end_bundle(run, usage_line), raw=True)


class QueryCellView(RunObserver):
    """Without a mirroring front-end, the query cell itself shows each finished root step."""

    def step_finished(self, run: Run, step: Step) -> None:
        if run.depth == 0:
            show_step(run, step)
