"""The compare view: alignment of two runs, where they diverge, and its three renderings."""

from __future__ import annotations

import copy
import html
import re

import nbformat
import pytest

from rlm_kernel.compare import (
    CompareView,
    compare,
    main,
    step_cost,
    to_html,
    to_markdown,
    to_text,
    tree_cost,
)
from rlm_kernel.notebook import to_notebook, write_notebook
from rlm_kernel.trajectory import ForkOf, Run, Step, SubCall, Usage


def step(n: int, code: str | None, output: str = "", *, final: str | None = None,
         thought: str = "", tokens: int = 100, cost: float = 0.001) -> Step:
    return Step(n=n, reply=f"{thought}\n```repl\n{code}\n```", thought=thought or f"step {n}",
                code=code, output_text=output, final=final, status="done",
                outputs=[{"output_type": "stream", "name": "stdout", "text": output}] if output
                else [],
                usage=Usage(prompt_tokens=tokens - 10, completion_tokens=10, requests=1,
                            cost_usd=cost),
                latency_s=0.5, exec_s=0.25)


def run_of(run_id: str, steps: list[Step], *, answer: str | None = "7", model: str = "scripted-root",
           status: str = "final", reason: str | None = None) -> Run:
    run = Run(run_id=run_id, query="How many lines contain 'x'?", model=model,
              sub_model="scripted-sub", steps=steps, answer=answer, status=status,
              stop_reason=reason, started=1000.0, ended=1010.0)
    for s in steps:
        run.usage.add(s.usage)
    return run


def parent_run() -> Run:
    return run_of("rparent", [
        step(1, "print(len(context))", "5000", thought="peek"),
        step(2, "chunks = split(context)\nanswers = llm_batch(chunks)\nprint(sum(answers))", "7",
             thought="map over chunks"),
        step(3, "FINAL('7')", final="7", thought="finish"),
    ])


def fork(parent: Run, at: int, run_id: str, later: list[Step], *, model: str = "scripted-grep",
         answer: str | None = "7", label: str = "") -> Run:
    """A branch as the fork machinery records it: the parent's steps up to ``at`` (cache hits,
    so no usage), then its own."""
    inherited = [copy.deepcopy(s) for s in parent.steps if s.n <= at]
    for s in inherited:
        s.usage, s.latency_s = Usage(), 0.0
    run = run_of(run_id, inherited + later, answer=answer, model=model)
    run.fork_of = ForkOf(run=parent.run_id, at=at,
                         models=[{"to": at, "model": parent.model, "sub_model": parent.sub_model}])
    run.branch = label
    return run


def grep_branch(parent: Run) -> Run:
    return fork(parent, 1, "rgrep", [
        step(2, "import re\nprint(len(re.findall('x', context)))", "7", thought="grep instead"),
        step(3, "FINAL('7')", final="7", thought="finish"),
    ], label="grep")


# ------------------------------------------------------------------------------- alignment


def test_a_branch_shares_its_parents_steps_up_to_the_fork_and_diverges_right_after() -> None:
    parent = parent_run()
    c = compare(parent, grep_branch(parent))
    assert c.shared == 1 and c.diverge == 2
    assert [r.shared for r in c.rows] == [True, False, False]
    assert [r.same for r in c.rows] == [True, False, True]
    assert c.relation == "B (branch `grep`) forks A after step 1"


def test_the_parent_may_be_either_side() -> None:
    parent = parent_run()
    c = compare(grep_branch(parent), parent)
    assert c.shared == 1 and c.diverge == 2 and c.relation.startswith("A (branch `grep`) forks B")


def test_a_branch_that_repeats_its_parents_next_step_diverges_later() -> None:
    parent = parent_run()
    same_next = fork(parent, 1, "rsame", [copy.deepcopy(parent.steps[1]),
                                          step(3, "FINAL('8')", final="8")], answer="8")
    c = compare(parent, same_next)
    assert c.shared == 1 and c.diverge == 3
    assert c.rows[1].same and not c.rows[1].shared


def test_unrelated_runs_align_by_step_number() -> None:
    a = parent_run()
    b = run_of("rother", [step(1, "print(len(context))", "5000"), step(2, "FINAL('9')", final="9")],
               answer="9")
    c = compare(a, b)
    assert c.shared == 0 and c.diverge == 2 and "separate runs" in c.relation
    assert c.rows[2].a is not None and c.rows[2].b is None


def test_two_forks_of_one_run_share_the_parents_steps_up_to_the_earlier_fork() -> None:
    parent = run_of("rparent", [step(n, f"print({n})", str(n)) for n in range(1, 6)])
    early = fork(parent, 2, "rearly", [step(3, "print('e')", "e")])
    late = fork(parent, 4, "rlate", [step(5, "print('l')", "l")])
    runs = {r.run_id: r for r in (parent, early, late)}
    c = compare(early, late, runs, runs)
    assert c.shared == 2 and c.diverge == 3
    assert "both fork `rparent`" in c.relation


def test_a_fork_of_a_fork_shares_through_the_chain_when_the_ancestors_are_known() -> None:
    root = run_of("rroot", [step(n, f"print({n})", str(n)) for n in range(1, 6)])
    child = fork(root, 3, "rchild", [step(4, "print('c')", "c"), step(5, "print('c5')", "c5")])
    grandchild = fork(child, 4, "rgrand", [step(5, "print('g')", "g")])
    grandchild.fork_of.models.insert(0, {"to": 3, "model": "scripted-root",  # type: ignore[union-attr]
                                         "sub_model": "scripted-sub"})
    runs = {r.run_id: r for r in (root, child, grandchild)}
    assert compare(root, grandchild, runs, runs).shared == 3
    assert compare(child, grandchild, runs, runs).shared == 4
    assert compare(root, grandchild).shared == 0  # without the chain nothing links them


def test_stale_steps_are_left_out_of_the_alignment() -> None:
    a = parent_run()
    b = copy.deepcopy(a)
    b.run_id = "redited"
    b.steps[1].status = "stale"
    b.steps[2].status = "stale"
    b.steps += [step(4, "print(7)", "7"), step(5, "FINAL('7')", final="7")]
    c = compare(a, b)
    assert [(r.a.n if r.a else None, r.b.n if r.b else None) for r in c.rows] == \
        [(1, 1), (2, 4), (3, 5)]


def test_same_steps_with_a_different_ending_diverge_after_the_last_step() -> None:
    a = parent_run()
    b = copy.deepcopy(a)
    b.run_id, b.status, b.stop_reason = "rstopped", "stopped", "budget: max_tokens 10 reached"
    c = compare(a, b)
    assert c.diverge == len(c.rows) + 1
    assert "their endings differ" in to_markdown(c) and "stopped: budget" in to_text(c)


def test_step_cost_counts_the_steps_subcalls_and_its_rlm_subruns_with_all_they_made() -> None:
    parent = parent_run()
    for i in range(3):
        parent.subcalls[f"c{i}"] = SubCall(call_id=f"c{i}", model="scripted-sub", step=2,
                                           status="ok", usage=Usage(prompt_tokens=40,
                                                                    completion_tokens=2,
                                                                    cost_usd=0.0005))
    child = run_of("rchild", [step(1, "FINAL('1')", final="1")])
    child.depth, child.parent, child.parent_step = 1, "rparent", 2
    child.subcalls["cc"] = SubCall(call_id="cc", model="scripted-sub", step=1, status="ok",
                                   usage=Usage(prompt_tokens=8, completion_tokens=2))
    child.usage.add(child.subcalls["cc"].usage)
    parent.children.append("rchild")
    runs = {"rparent": parent, "rchild": child}
    cost = step_cost(parent, parent.steps[1], runs)
    assert (cost.subcalls, cost.children) == (4, 1)
    assert cost.tokens == 100 + 3 * 42 + (100 + 10)
    assert cost.cost_usd == pytest.approx(0.001 + 3 * 0.0005 + 0.001)
    assert (cost.model_s, cost.exec_s) == (0.5, 0.25)
    assert step_cost(parent, parent.steps[0], runs).subcalls == 0
    assert tree_cost(parent, runs).subcalls == 4


# ------------------------------------------------------------------------------- renderings


def test_html_shows_both_sides_code_as_a_diff_the_answers_and_no_script() -> None:
    parent = parent_run()
    b = grep_branch(parent)
    b.steps[1].code += "\nprint('<b>not bold</b>')"
    b.answer, b.steps[2].final = "8", "8"
    page = to_html(compare(parent, b))
    assert "<script" not in page and "<style" not in page and "onclick" not in page
    assert 'class="rlm-compare mathjax_ignore' in page  # "$0.1 ... $0.2" is no formula
    assert "- answers = llm_batch(chunks)" in page  # A's line that B does not have
    assert "+ import re" in page  # B's line that A does not have
    assert "&lt;b&gt;not bold&lt;/b&gt;" in page and "<b>not bold" not in page
    assert "◀ diverge" in page and "<details>" in page  # the shared step, folded
    answers = re.findall(r"<th[^>]*>answer</th><td[^>]*>(.*?)</td><td[^>]*>(.*?)</td>", page)
    assert answers == [("7", "8")]
    assert "3 steps · 1 sub-call" not in page  # no sub-calls recorded here: 0 for both
    assert page.count("3 steps · 0 sub-calls") == 2


def test_every_rendering_is_deterministic() -> None:
    parent = parent_run()
    first = compare(parent, grep_branch(parent))
    again = compare(copy.deepcopy(parent), grep_branch(copy.deepcopy(parent)))
    for render in (to_html, to_markdown, to_text):
        assert render(first) == render(again)


def test_the_text_table_fits_100_columns_and_cuts_long_lines() -> None:
    parent = parent_run()
    b = grep_branch(parent)
    b.steps[1].code = "x = '" + "y" * 300 + "'\nprint(x)"
    b.steps[1].output_text = "z" * 500 + "\n" + "\n".join(map(str, range(50)))
    b.answer = "a long answer " * 40
    text = to_text(compare(parent, b))
    lines = text.splitlines()
    assert max(len(ln) for ln in lines) <= 100
    assert any(ln.rstrip().endswith("…") for ln in lines)
    assert any(ln.startswith("2 ◀") for ln in lines)
    assert "more lines" in text  # the 51-line output was cut
    assert any(ln.startswith("step ") for ln in to_text(compare(parent, b), width=72).splitlines())
    assert max(len(ln) for ln in to_text(compare(parent, b), width=72).splitlines()) <= 72


def test_markdown_has_a_step_table_and_a_diff_per_divergent_step() -> None:
    parent = parent_run()
    parent.steps[0].thought = "peek | with a pipe"
    md = to_markdown(compare(parent, grep_branch(parent)))
    assert "| step | A | B |" in md and "peek \\| with a pipe" in md
    assert "\\$0.0010" in md and " $0.0010" not in md  # dollars are no math delimiters
    assert "### Step 2" in md and "### Step 3" not in md  # step 3 is the same in both
    diff = md.split("```diff\n", 1)[1].split("\n```", 1)[0]
    assert "-answers = llm_batch(chunks)" in diff and "+import re" in diff


def test_the_rich_view_offers_html_markdown_and_text() -> None:
    parent = parent_run()
    bundle = CompareView(compare(parent, grep_branch(parent)))._repr_mimebundle_()
    assert set(bundle) == {"text/html", "text/markdown", "text/plain"}
    assert bundle["text/plain"].startswith("Compare · B (branch `grep`) forks A after step 1")


def test_nbconvert_html_of_a_notebook_with_the_view_shows_both_branches_differing_steps() -> None:
    from nbconvert import HTMLExporter

    parent = parent_run()
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("%rlm compare rparent rgrep")
    cell.outputs = [nbformat.v4.new_output(
        "display_data", data=CompareView(compare(parent, grep_branch(parent)))._repr_mimebundle_())]
    nb.cells = [cell]
    body, _ = HTMLExporter().from_notebook_node(nb)
    text = html.unescape(body)
    assert "- answers = llm_batch(chunks)" in text and "+ print(len(re.findall('x', context)))" in text
    assert "<script" not in body.split('class="rlm-compare', 1)[1].split("</table>", 1)[0]


# ------------------------------------------------------------------------------- the command


@pytest.fixture
def branched_notebook(tmp_path) -> str:
    parent = parent_run()
    path = str(tmp_path / "branched.ipynb")
    write_notebook(to_notebook([parent, grep_branch(parent)]), path)
    return path


def test_compare_command_defaults_to_the_first_and_last_run_of_one_notebook(
        branched_notebook, capsys) -> None:
    assert main([branched_notebook]) == 0
    out = capsys.readouterr().out
    assert out.startswith("Compare · B (branch `grep`) forks A after step 1; they diverge at step 2")
    assert max(len(ln) for ln in out.splitlines()) <= 100


def test_compare_command_picks_runs_by_id_or_label_and_writes_html(branched_notebook, tmp_path,
                                                                   capsys) -> None:
    out_path = str(tmp_path / "cmp.html")
    assert main([f"{branched_notebook}#grep", f"{branched_notebook}#rparent",
                 "--output", out_path]) == 0
    with open(out_path, encoding="utf-8") as f:
        page = f.read()
    assert page.startswith('<div class="rlm-compare') and "A (branch `grep`) forks B" in page


def test_compare_command_says_which_runs_a_notebook_holds_when_one_is_missing(
        branched_notebook, capsys) -> None:
    assert main([f"{branched_notebook}#rnope", branched_notebook]) == 1
    err = capsys.readouterr().err
    assert "holds no run 'rnope'" in err and "rgrep (grep)" in err and "rparent" in err
    assert main([f"{branched_notebook}#rparent", f"{branched_notebook}#rparent"]) == 2
    assert main([str(branched_notebook) + ".missing"]) == 1


def test_rlm_kernel_compare_is_the_cli_entry_to_the_same_command(branched_notebook, capsys) -> None:
    from rlm_kernel.cli import main as cli_main

    assert cli_main(["compare", branched_notebook, "--format", "markdown"]) == 0
    assert capsys.readouterr().out.startswith("**Compare** · B (branch `grep`) forks A")
