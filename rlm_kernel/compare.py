"""Two runs side by side: where they part, and each step's code, output and cost.

Why a pure module: the same comparison is shown as rich output in a kernel cell (HTML that reads in
JupyterLab, on GitHub and in nbconvert's HTML; Markdown), printed in a terminal by ``rlm-kernel
compare`` and checked by tests, so it takes Run records and returns text, with no kernel and no
clock. Output is deterministic: the same two records always render to the same bytes.

Alignment: each run's steps are taken in order, stale ones left out (an edit may have replaced
them), and paired by position. When one run is a branch of the other (or both branch from a common
ancestor) the leading steps they share by lineage are shown once; the first pair that differs in
code, output or answer is where they diverge. Code of a pair that differs is shown as a line diff.
No JavaScript and no ``<style>`` block (GitHub and sanitised viewers drop them): inline styles for
colour, plus ``+``/``-`` marks that still read where styles are stripped.
"""

from __future__ import annotations

import argparse
import difflib
import html
import os
import sys
from dataclasses import dataclass
from typing import Any

from .trajectory import Run, Step

__all__ = [
    "Comparison", "Row", "Side", "StepCost", "compare", "step_cost", "tree_cost", "to_html",
    "to_markdown", "to_text", "CompareView", "load_side", "main",
]

OUTPUT_LINES = 8  # lines of a step's output shown per side
OUTPUT_LINE_CHARS = 160
CODE_LINES = 40  # lines of code shown per side and step (HTML, Markdown)
TEXT_WIDTH = 100  # the terminal table's width
TEXT_CODE_LINES = 12
TEXT_OUTPUT_LINES = 3
THOUGHT_CHARS = 200

_REMOVED = "background-color:#ffebe9;color:#1f2328"
_ADDED = "background-color:#e6ffec;color:#1f2328"
_CELL = "vertical-align:top;text-align:left;padding:4px 8px;border:1px solid #d0d7de"
_PRE = "margin:2px 0;white-space:pre-wrap;font-size:12px;text-align:left"
_MUTED = "color:#656d76;font-size:12px"
_OUTPUT = "border-left:3px solid #d0d7de;padding-left:6px"


# ------------------------------------------------------------------------------------ the model


@dataclass(frozen=True)
class StepCost:
    """What one step (or a whole run) took: its sub-calls and ``rlm()`` sub-runs with everything
    they made, tokens and money of the root reply and all of those, the root model's latency and
    the time its code ran."""

    subcalls: int = 0
    children: int = 0
    tokens: int = 0
    cost_usd: float = 0.0
    model_s: float = 0.0
    exec_s: float = 0.0


@dataclass(frozen=True)
class Side:
    """One of the two runs: its record, the records of its ``rlm()`` sub-runs, its steps in order."""

    name: str  # "A" or "B"
    run: Run
    runs: dict[str, Run]
    steps: list[Step]


@dataclass(frozen=True)
class Row:
    """The two runs' steps at one position (``turn``, from 1); a side may have none."""

    turn: int
    a: Step | None
    b: Step | None
    shared: bool  # inherited by lineage: the same step of a common parent
    same: bool  # identical code, output, error and answer


@dataclass(frozen=True)
class Comparison:
    a: Side
    b: Side
    relation: str  # how the runs are related, one sentence
    shared: int  # leading turns shared by lineage
    diverge: int | None  # first turn that differs; None when every turn matches
    rows: list[Row]


def compare(a: Run, b: Run, runs_a: dict[str, Run] | None = None,
            runs_b: dict[str, Run] | None = None) -> Comparison:
    """Align two runs' steps and find where they diverge. ``runs_a``/``runs_b`` hold their run
    trees (``rlm()`` sub-runs, for sub-call counts) and ancestors (for branches of branches)."""
    side_a = Side("A", a, runs_a or {a.run_id: a}, _live_steps(a))
    side_b = Side("B", b, runs_b or {b.run_id: b}, _live_steps(b))
    shared_at, relation = _lineage(side_a, side_b)
    shared = min(sum(s.n <= shared_at for s in side_a.steps),
                 sum(s.n <= shared_at for s in side_b.steps))
    rows: list[Row] = []
    for i in range(max(len(side_a.steps), len(side_b.steps))):
        sa = side_a.steps[i] if i < len(side_a.steps) else None
        sb = side_b.steps[i] if i < len(side_b.steps) else None
        rows.append(Row(i + 1, sa, sb, shared=i < shared, same=_same(sa, sb)))
    diverge = next((r.turn for r in rows if not r.same), None)
    if diverge is None and (a.answer != b.answer or a.status != b.status):
        diverge = len(rows) + 1  # same steps, different ending (e.g. a budget stopped one)
    return Comparison(side_a, side_b, relation, shared, diverge, rows)


def _live_steps(run: Run) -> list[Step]:
    return sorted((s for s in run.steps if s.status != "stale"), key=lambda s: s.n)


def _same(a: Step | None, b: Step | None) -> bool:
    if a is None or b is None:
        return False
    return ((a.code or "").strip(), a.output_text, a.error, a.final) == \
        ((b.code or "").strip(), b.output_text, b.error, b.final)


def _ancestry(run: Run, runs: dict[str, Run]) -> dict[str, int]:
    """ancestor run id -> the step number up to which ``run``'s steps are that ancestor's."""
    out: dict[str, int] = {}
    limit = 10**9
    cur: Run | None = run
    seen = 0
    while cur is not None and cur.fork_of is not None and seen < 100:
        limit = min(limit, cur.fork_of.at)
        out.setdefault(cur.fork_of.run, limit)
        cur, seen = runs.get(cur.fork_of.run), seen + 1
    return out


def _lineage(a: Side, b: Side) -> tuple[int, str]:
    """(step number up to which both runs hold the same inherited steps, the relation in words)."""
    anc_a, anc_b = _ancestry(a.run, a.runs), _ancestry(b.run, b.runs)
    ida, idb = a.run.run_id, b.run.run_id
    if ida != idb and ida in anc_b:
        k = anc_b[ida]
        return k, f"B ({_name(b.run)}) forks A after step {k}"
    if ida != idb and idb in anc_a:
        k = anc_a[idb]
        return k, f"A ({_name(a.run)}) forks B after step {k}"
    common = sorted(set(anc_a) & set(anc_b), key=lambda r: (-min(anc_a[r], anc_b[r]), r))
    if common:
        root = common[0]
        k = min(anc_a[root], anc_b[root])
        return k, (f"A and B both fork `{root}` (after steps {anc_a[root]} and {anc_b[root]}); "
                   f"they share its steps up to {k}")
    return 0, "A and B are separate runs, aligned by step number"


def _name(run: Run) -> str:
    return f"branch `{run.branch}`" if run.branch else f"`{run.run_id}`"


def step_cost(run: Run, step: Step, runs: dict[str, Run]) -> StepCost:
    """What ``step`` took: its root reply, the sub-calls its code made and its rlm() sub-runs."""
    calls = [c for c in run.subcalls.values() if c.step == step.n]
    kids = [runs[c] for c in run.children if c in runs and runs[c].parent_step == step.n]
    inner = [tree_cost(k, runs) for k in kids]
    return StepCost(
        subcalls=len(calls) + sum(t.subcalls for t in inner),
        children=len(kids) + sum(t.children for t in inner),
        tokens=step.usage.total_tokens + sum(c.usage.total_tokens for c in calls)
        + sum(t.tokens for t in inner),
        cost_usd=step.usage.cost_usd + sum(c.usage.cost_usd for c in calls)
        + sum(t.cost_usd for t in inner),
        model_s=step.latency_s, exec_s=step.exec_s,
    )


def tree_cost(run: Run, runs: dict[str, Run]) -> StepCost:
    """A run and every rlm() sub-run under it: sub-calls, sub-runs, tokens, cost, time."""
    total = StepCost(model_s=sum(s.latency_s for s in run.steps),
                     exec_s=sum(s.exec_s for s in run.steps), subcalls=len(run.subcalls),
                     tokens=run.usage.total_tokens, cost_usd=run.usage.cost_usd)
    for cid in run.children:
        child = runs.get(cid)
        if child is None:
            continue
        inner = tree_cost(child, runs)
        total = StepCost(total.subcalls + inner.subcalls, total.children + 1 + inner.children,
                         total.tokens + inner.tokens, total.cost_usd + inner.cost_usd,
                         total.model_s, total.exec_s)
    return total


# ------------------------------------------------------------------------------ shared pieces


def _cost_line(cost: StepCost) -> str:
    parts = [f"{cost.subcalls} sub-call{'s' if cost.subcalls != 1 else ''}"]
    if cost.children:
        parts.append(f"{cost.children} rlm()")
    parts += [f"{cost.tokens:,} tok", f"${cost.cost_usd:.4f}",
              f"model {cost.model_s:.2f}s", f"code {cost.exec_s:.2f}s"]
    return " · ".join(parts)


def _total_line(side: Side) -> str:
    cost = tree_cost(side.run, side.runs)
    return f"{len(side.steps)} steps · " + _cost_line(cost)


def _ending(run: Run) -> str:
    return run.status + (f": {run.stop_reason}" if run.stop_reason else "")


def _output_lines(step: Step, limit: int) -> list[str]:
    """The step's output as the model saw it (its error included), cut to ``limit`` lines."""
    text = step.output_text or ""
    if step.error and step.error not in text:
        text = (text + "\n" if text else "") + step.error
    lines = text.rstrip("\n").split("\n") if text.strip() else []
    out = [ln if len(ln) <= OUTPUT_LINE_CHARS else ln[:OUTPUT_LINE_CHARS - 1] + "…"
           for ln in lines[:limit]]
    if len(lines) > limit:
        out.append(f"… {_n(len(lines) - limit, 'more line')}")
    return out


def _thought(step: Step) -> str:
    text = " ".join((step.thought or "").split())
    return text if len(text) <= THOUGHT_CHARS else text[:THOUGHT_CHARS - 1] + "…"


def _plain(step: Step | None) -> list[tuple[str, str]]:
    return [(" ", ln) for ln in _lines(step.code if step else None)]


def _lines(code: str | None) -> list[str]:
    return code.rstrip("\n").split("\n") if code else []


def _marks(mine: list[str], theirs: list[str], added: str = "+") -> list[tuple[str, str]]:
    matcher = difflib.SequenceMatcher(a=theirs, b=mine, autojunk=False)
    out: list[tuple[str, str]] = []
    for op, _i1, _i2, j1, j2 in matcher.get_opcodes():
        mark = " " if op == "equal" else added
        out += [(mark, ln) for ln in mine[j1:j2]]
    return out


def _side_marks(row: Row, which: str) -> list[tuple[str, str]]:
    """Code lines of one side of a row, marked ``-`` (on A) or ``+`` (on B) where they are not in
    the other side's code; unmarked when the row is shared, a side has no code, or it is the same."""
    mine, other = (row.a, row.b) if which == "A" else (row.b, row.a)
    if row.shared or mine is None or other is None or mine.code is None or other.code is None \
            or mine.code.strip() == other.code.strip():
        return _plain(mine)
    return _marks(_lines(mine.code), _lines(other.code), "-" if which == "A" else "+")


def _header_lines(c: Comparison) -> list[tuple[str, str]]:
    """(side name, one-line description) for A and B."""
    out = []
    for side in (c.a, c.b):
        run = side.run
        desc = f"`{run.run_id}`"
        if run.branch:
            desc += f" branch `{run.branch}`"
        desc += f" · {run.model or '?'} / {run.sub_model or run.model or '?'}"
        out.append((side.name, desc))
    return out


def _summary(c: Comparison) -> str:
    if c.diverge is None:
        where = "every step and the answer match"
    elif c.diverge > len(c.rows):
        where = "their steps match; their endings differ"
    else:
        where = f"they diverge at step {c.diverge}"
    return f"{c.relation}; {where}."


def _queries(c: Comparison) -> list[tuple[str, str]]:
    if c.a.run.query == c.b.run.query:
        return [("query", c.a.run.query)]
    return [("query A", c.a.run.query), ("query B", c.b.run.query)]


# ------------------------------------------------------------------------------------- HTML


def _esc(text: str) -> str:
    return html.escape(text, quote=True)


def _html_code(marks: list[tuple[str, str]]) -> str:
    if not marks:
        return f'<div style="{_MUTED}">(no code)</div>'
    shown = marks[:CODE_LINES]
    lines = []
    for mark, line in shown:
        text = _esc(f"{mark} {line}")
        if mark == "-":
            lines.append(f'<span style="{_REMOVED}">{text}</span>')
        elif mark == "+":
            lines.append(f'<span style="{_ADDED}">{text}</span>')
        else:
            lines.append(text)
    if len(marks) > CODE_LINES:
        lines.append(_esc(f"  … {_n(len(marks) - CODE_LINES, 'more line')}"))
    return f'<pre style="{_PRE}">' + "\n".join(lines) + "</pre>"


def _html_step(side: Side, step: Step | None, marks: list[tuple[str, str]]) -> str:
    if step is None:
        return f'<td style="{_CELL}"><span style="{_MUTED}">(no step: the run had ended)</span></td>'
    parts = [f'<div style="{_MUTED}">step {step.n}</div>']
    if step.thought:
        parts.append(f"<div><i>{_esc(_thought(step))}</i></div>")
    parts.append(_html_code(marks))
    out = _output_lines(step, OUTPUT_LINES)
    if out:
        parts.append(f'<pre style="{_PRE};{_MUTED};{_OUTPUT}">' + _esc("\n".join(out)) + "</pre>")
    if step.final is not None:
        parts.append(f"<div><b>FINAL</b> → {_esc(_clip(step.final, 300))}</div>")
    parts.append(f'<div style="{_MUTED}">{_esc(_cost_line(step_cost(side.run, step, side.runs)))}'
                 "</div>")
    return f'<td style="{_CELL}">' + "".join(parts) + "</td>"


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit - 1] + "…"


def to_html(c: Comparison) -> str:
    """The comparison as one self-contained HTML table (inline styles, no script)."""
    th = f'<th style="{_CELL}">'
    # MathJax (JupyterLab, nbconvert) would read "$0.01 ... $0.02" as math: not in this div.
    out = ['<div class="rlm-compare mathjax_ignore tex2jax_ignore">',
           f"<p><b>Compare</b> · {_esc(_summary(c))}</p>",
           '<table style="border-collapse:collapse;font-size:13px;table-layout:fixed;width:100%">']
    out.append(f'<thead><tr><th style="{_CELL};width:5.5em">step</th>' + "".join(
        f'<th style="{_CELL};width:47%">{name} · {_md_inline_html(desc)}</th>'
        for name, desc in _header_lines(c)) + "</tr></thead><tbody>")
    for label, query in _queries(c):
        out.append(f"<tr>{th}{_esc(label)}</th>"
                   f'<td colspan="2" style="{_CELL}">{_esc(_clip(query, 600))}</td></tr>')
    for row in c.rows:
        mark = " ◀ diverge" if row.turn == c.diverge else ""
        head = f"{th}{row.turn}{_esc(mark)}</th>"
        if row.shared and row.a is not None and row.b is not None:
            summary = _esc(f"shared: {_thought(row.a) or 'step ' + str(row.a.n)}")
            costs = (f"A {_cost_line(step_cost(c.a.run, row.a, c.a.runs))}<br>"
                     f"B {_cost_line(step_cost(c.b.run, row.b, c.b.runs))}")
            out.append(f'<tr>{head}<td colspan="2" style="{_CELL}"><details><summary>{summary}'
                       f"</summary>{_html_code(_plain(row.a))}</details>"
                       f'<div style="{_MUTED}">{costs}</div></td></tr>')
            continue
        out.append(f"<tr>{head}{_html_step(c.a, row.a, _side_marks(row, 'A'))}"
                   f"{_html_step(c.b, row.b, _side_marks(row, 'B'))}</tr>")
    for label, va, vb in _ending_rows(c):
        out.append(f'<tr>{th}{label}</th><td style="{_CELL}">{_esc(va)}</td>'
                   f'<td style="{_CELL}">{_esc(vb)}</td></tr>')
    out.append("</tbody></table></div>")
    return "\n".join(out)


def _md_inline_html(text: str) -> str:
    """`code` spans of a header line as <code>, the rest escaped."""
    pieces = text.split("`")
    return "".join(f"<code>{_esc(p)}</code>" if i % 2 else _esc(p) for i, p in enumerate(pieces))


def _ending_rows(c: Comparison) -> list[tuple[str, str, str]]:
    a, b = c.a.run, c.b.run
    same = " (the same)" if a.answer == b.answer and a.answer is not None else ""
    return [
        ("answer", _clip(a.answer if a.answer is not None else "(none)", 1000) + same,
         _clip(b.answer if b.answer is not None else "(none)", 1000) + same),
        ("ended", _ending(a), _ending(b)),
        ("total", _total_line(c.a), _total_line(c.b)),
    ]


# --------------------------------------------------------------------------------- Markdown


def _md_cell(text: str) -> str:
    """One table cell: pipes escaped, one line, and ``$`` escaped (renderers read math)."""
    return " ".join(text.replace("|", "\\|").replace("$", "\\$").split()) or " "


def _md_step_summary(side: Side, step: Step | None) -> str:
    if step is None:
        return "(no step)"
    bits = [f"*{_clip(_thought(step), 90)}*" if step.thought else f"step {step.n}"]
    if step.final is not None:
        bits.append(f"FINAL → {_clip(step.final, 60)}")
    bits.append(_cost_line(step_cost(side.run, step, side.runs)))
    return _md_cell(" · ".join(bits))


def to_markdown(c: Comparison) -> str:
    """A summary table (one row per step) and, for each step from the divergence on, the code as
    a diff (A → B) and both outputs."""
    out = [f"**Compare** · {_summary(c)}", ""]
    out += [f"- **{name}** {desc}" for name, desc in _header_lines(c)]
    out += [f"- **{label}** {_md_cell(_clip(q, 300))}" for label, q in _queries(c)]
    out += ["", "| step | A | B |", "|---:|---|---|"]
    for row in c.rows:
        turn = f"{row.turn} ◀" if row.turn == c.diverge else str(row.turn)
        if row.shared:
            cell = _md_cell(f"shared: {_thought(row.a) if row.a else ''}")
            out.append(f"| {turn} | {cell} | (same step) |")
        else:
            out.append(f"| {turn} | {_md_step_summary(c.a, row.a)} | "
                       f"{_md_step_summary(c.b, row.b)} |")
    for label, va, vb in _ending_rows(c):
        out.append(f"| {label} | {_md_cell(va)} | {_md_cell(vb)} |")
    for row in c.rows:
        if row.shared or row.same:
            continue
        out += ["", f"### Step {row.turn}", ""]
        diff = list(difflib.unified_diff(_lines(row.a.code if row.a else None),
                                         _lines(row.b.code if row.b else None),
                                         "A", "B", lineterm="", n=3))
        if diff:
            body = diff[:CODE_LINES * 2]
            if len(diff) > len(body):
                body.append(f"… {len(diff) - len(body)} more diff lines")
            out += [_fence(body, "diff")]
        else:
            out.append("Same code; the outputs differ.")
        for name, step in (("A", row.a), ("B", row.b)):
            if step is None:
                out.append(f"\n**{name}**: no step (the run had ended)")
                continue
            lines = _output_lines(step, OUTPUT_LINES)
            out.append(f"\n**{name}** output" + (f" (FINAL → {_md_cell(_clip(step.final, 200))})"
                                                  if step.final is not None else "") + ":")
            out.append(_fence(lines or ["(no output)"], "text"))
    return "\n".join(out) + "\n"


def _fence(lines: list[str], lang: str) -> str:
    body = "\n".join(lines)
    fence = "```"
    while fence in body:
        fence += "`"
    return f"{fence}{lang}\n{body}\n{fence}"


# ------------------------------------------------------------------------------ plain text


def _fit(text: str, width: int) -> str:
    text = text.replace("\t", "    ")
    return text if len(text) <= width else text[:width - 1] + "…"


def _squeeze(marks: list[tuple[str, str]], context: int = 1) -> list[tuple[str, str]]:
    """A diffed side with the unchanged stretches folded: the changed lines, ``context`` lines
    around them, and one ``⋯ N unchanged`` line for each stretch left out. Undiffed: as is."""
    if all(m == " " for m, _ in marks):
        return marks
    near = {i for i, (m, _) in enumerate(marks) if m != " "}
    keep = {j for i in near for j in range(i - context, i + context + 1)}
    out: list[tuple[str, str]] = []
    skipped = 0
    for i, item in enumerate(marks):
        if i in keep:
            if skipped:
                out.append((" ", f"⋯ {_n(skipped, 'unchanged line')}"))
                skipped = 0
            out.append(item)
        else:
            skipped += 1
    if skipped:
        out.append((" ", f"⋯ {_n(skipped, 'unchanged line')}"))
    return out


def _n(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def _text_side(side: Side, step: Step | None, marks: list[tuple[str, str]], width: int
               ) -> list[str]:
    if step is None:
        return ["(no step)"]
    lines = [_fit(f"step {step.n}: {_thought(step)}", width)] if step.thought else []
    marks = _squeeze(marks)
    shown = marks[:TEXT_CODE_LINES]
    lines += [_fit(f"{m} {ln}", width) for m, ln in shown]
    if len(marks) > TEXT_CODE_LINES:
        lines.append(f"  … {_n(len(marks) - TEXT_CODE_LINES, 'more line')}")
    lines += [_fit(f"> {ln}", width) for ln in _output_lines(step, TEXT_OUTPUT_LINES)]
    if step.final is not None:
        lines.append(_fit(f"FINAL → {step.final}", width))
    lines.append(_fit(_cost_line(step_cost(side.run, step, side.runs)), width))
    return lines


def to_text(c: Comparison, width: int = TEXT_WIDTH) -> str:
    """A terminal table, ``width`` columns wide: step | A | B, long lines cut with "…"."""
    step_w = 7
    side_w = (width - step_w - 6) // 2
    full_w = width - step_w - 3
    rule = "─" * width
    out = _wrap(f"Compare · {_summary(c)}", width, 3)
    out += [_fit(f"{name}  {desc.replace('`', '')}", width) for name, desc in _header_lines(c)]
    out += [_fit(f"{label}: {' '.join(q.split())}", width) for label, q in _queries(c)]
    out.append(rule)
    out.append(f"{'step':<{step_w}} │ {'A':<{side_w}} │ B")
    sep = f"{'─' * step_w}─┼─{'─' * side_w}─┼─{'─' * side_w}"
    out.append(sep[:width])

    def emit(label: str, left: list[str], right: list[str] | None) -> None:
        if right is None:
            for i, ln in enumerate(left):
                out.append(f"{(label if i == 0 else ''):<{step_w}} │ {ln}".rstrip())
            return
        for i in range(max(len(left), len(right))):
            lft = left[i] if i < len(left) else ""
            rgt = right[i] if i < len(right) else ""
            out.append(f"{(label if i == 0 else ''):<{step_w}} │ {lft:<{side_w}} │ {rgt}".rstrip())

    for row in c.rows:
        label = f"{row.turn} ◀" if row.turn == c.diverge else str(row.turn)
        if row.shared and row.a is not None and row.b is not None:
            emit(label, [_fit(f"shared: {_thought(row.a) or 'step ' + str(row.a.n)}", full_w),
                         _fit(f"A {_cost_line(step_cost(c.a.run, row.a, c.a.runs))}", full_w),
                         _fit(f"B {_cost_line(step_cost(c.b.run, row.b, c.b.runs))}", full_w)],
                 None)
        else:
            emit(label, _text_side(c.a, row.a, _side_marks(row, "A"), side_w),
                 _text_side(c.b, row.b, _side_marks(row, "B"), side_w))
        out.append(sep[:width])
    for label, va, vb in _ending_rows(c):
        emit(label, _wrap(va, side_w, 3), _wrap(vb, side_w, 3))
    return "\n".join(out) + "\n"


def _wrap(text: str, width: int, max_lines: int) -> list[str]:
    """Word-wrap ``text`` to ``width`` columns, at most ``max_lines`` lines (the last cut with …)."""
    lines: list[str] = []
    for word in text.split():
        while len(word) > width:  # a word longer than the column is cut, not lost
            lines.append(word[:width])
            word = word[width:]
        if lines and len(lines[-1]) + 1 + len(word) <= width:
            lines[-1] += " " + word
        else:
            lines.append(word)
    lines = lines or [""]
    if len(lines) > max_lines:
        lines = lines[:max_lines]
        lines[-1] = _fit(lines[-1] + " …", width)
    return lines


# ------------------------------------------------------------------------------ rich output


class CompareView:
    """A comparison as IPython rich output: HTML, Markdown and plain text in one bundle, so each
    front-end (JupyterLab, GitHub, nbconvert, a terminal) picks what it renders."""

    def __init__(self, comparison: Comparison) -> None:
        self.comparison = comparison

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, str]:
        return {"text/html": to_html(self.comparison),
                "text/markdown": to_markdown(self.comparison),
                "text/plain": to_text(self.comparison)}

    def __repr__(self) -> str:
        return to_text(self.comparison)


# ---------------------------------------------------------------------------- the command


def load_side(spec: str, default: str = "first") -> tuple[Run, dict[str, Run]]:
    """``PATH.ipynb[#RUN]`` -> (the run, every run of that notebook). RUN is a run id or a branch
    label; without it, the notebook's first (``default="first"``) or last root run."""
    import nbformat

    from .errors import RLMError
    from .notebook import runs_from_notebook

    path, _, wanted = spec.partition("#")
    try:
        nb = nbformat.read(path, as_version=4)
    except FileNotFoundError:
        raise RLMError(f"no notebook {path!r}") from None
    except Exception as exc:  # noqa: BLE001 - any unreadable file gets the same clear message
        raise RLMError(f"{path} is not a readable notebook: {exc}") from None
    runs = runs_from_notebook(nb)
    roots = [r for r in runs.values() if r.depth == 0]
    if not roots:
        raise RLMError(f"{path} holds no RLM run (no cells with metadata.rlm)")
    if wanted:
        found = [r for r in roots if wanted in (r.run_id, r.branch)]
        if not found:
            known = ", ".join(r.run_id + (f" ({r.branch})" if r.branch else "") for r in roots)
            raise RLMError(f"{path} holds no run {wanted!r}; its runs: {known}")
        return found[0], runs
    return (roots[0] if default == "first" else roots[-1]), runs


def main(argv: list[str] | None = None) -> int:
    """``rlm-kernel compare A.ipynb[#RUN] B.ipynb[#RUN] [--format F] [--output P]``."""
    from .errors import RLMError

    parser = argparse.ArgumentParser(
        prog="rlm-kernel compare",
        description="Two runs side by side: where they diverge, each step's code (a diff), "
                    "outputs, sub-calls, tokens, cost and latency, and the answers. Without #RUN, "
                    "A is the notebook's first run and B the last (a notebook holding a run and "
                    "its fork compares the two).")
    parser.add_argument("a", metavar="A.ipynb[#RUN]")
    parser.add_argument("b", metavar="B.ipynb[#RUN]", nargs="?",
                        help="default: the same notebook as A")
    parser.add_argument("--format", choices=("text", "markdown", "html"),
                        help="default: text, or from --output's extension (.md, .html)")
    parser.add_argument("--output", help="write here instead of printing")
    parser.add_argument("--width", type=int, default=TEXT_WIDTH, help="text table width")
    args = parser.parse_args(argv)
    try:
        run_a, runs_a = load_side(args.a, "first")
        run_b, runs_b = load_side(args.b or args.a.partition("#")[0], "last")
    except RLMError as exc:
        print(f"rlm-kernel compare: {exc}", file=sys.stderr)
        return 1
    same_file = os.path.abspath(args.a.partition("#")[0]) == \
        os.path.abspath((args.b or args.a).partition("#")[0])
    if same_file and run_a.run_id == run_b.run_id:
        print(f"rlm-kernel compare: both sides are run {run_a.run_id}; name the runs with "
              "PATH.ipynb#RUN", file=sys.stderr)
        return 2
    fmt = args.format or ("html" if (args.output or "").endswith(".html") else
                          "markdown" if (args.output or "").endswith(".md") else "text")
    # Ancestors may sit in the other notebook: each side sees both files' runs for lineage.
    comparison = compare(run_a, run_b, {**runs_b, **runs_a}, {**runs_a, **runs_b})
    text = {"text": lambda: to_text(comparison, max(60, args.width)),
            "markdown": lambda: to_markdown(comparison),
            "html": lambda: to_html(comparison)}[fmt]()
    if args.output:
        with open(args.output, "w", encoding="utf-8") as f:
            f.write(text)
        print(f"rlm-kernel compare: written to {args.output}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0
