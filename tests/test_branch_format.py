"""Branches in the trajectory format: fork metadata round-trips, old files still load."""

from __future__ import annotations

import nbformat

from rlm_kernel.notebook import runs_from_notebook, to_notebook
from rlm_kernel.trajectory import ForkOf, Run, Step, Usage


def recorded_run(run_id: str, n_steps: int, model: str = "scripted-root") -> Run:
    run = Run(run_id=run_id, query="How many lines contain 'x'?", model=model,
              sub_model="scripted-sub", status="final", answer="42", stop_reason=None)
    for n in range(1, n_steps + 1):
        run.steps.append(Step(n=n, reply=f"step {n}\n```repl\nprint({n})\n```", thought=f"step {n}",
                              code=f"print({n})", output_text=f"{n}\n", status="done",
                              outputs=[{"output_type": "stream", "name": "stdout",
                                        "text": f"{n}\n"}],
                              usage=Usage(prompt_tokens=10, completion_tokens=5, requests=1)))
    return run


def branch_of(parent: Run, at: int, run_id: str = "rbranch") -> Run:
    branch = recorded_run(run_id, at + 2, model="scripted-other")
    branch.fork_of = ForkOf(run=parent.run_id, at=at,
                            models=[{"to": at, "model": parent.model,
                                     "sub_model": parent.sub_model}])
    branch.branch = "other-root"
    return branch


def test_a_branch_keeps_its_parent_step_and_label_through_a_notebook() -> None:
    parent = recorded_run("rparent", 4)
    branch = branch_of(parent, 2)
    nb = nbformat.from_dict(to_notebook([parent, branch]))
    runs = runs_from_notebook(nb)
    assert runs["rparent"].fork_of is None and runs["rparent"].branch == ""
    got = runs["rbranch"]
    assert got.fork_of == ForkOf(run="rparent", at=2, models=[
        {"to": 2, "model": "scripted-root", "sub_model": "scripted-sub"}])
    assert got.branch == "other-root" and got.inherited == 2
    assert [s.n for s in got.steps] == [1, 2, 3, 4]


def test_a_branch_query_cell_is_a_fork_cell_with_what_changed_and_the_query() -> None:
    parent = recorded_run("rparent", 4)
    nb = to_notebook([parent, branch_of(parent, 2)])
    query = next(c for c in nb.cells
                 if c.metadata["rlm"]["kind"] == "query" and c.metadata["rlm"]["run"] == "rbranch")
    head, body = query.source.split("\n", 1)
    assert head == "%%rlm fork --run rparent --at 2 --model scripted-other --label other-root"
    assert body == parent.query
    assert query.metadata["rlm"]["header"]["fork_of"]["run"] == "rparent"


def test_inherited_steps_are_marked_and_collapsed_and_new_ones_are_not() -> None:
    parent = recorded_run("rparent", 4)
    nb = to_notebook([parent, branch_of(parent, 2)])
    steps = [c for c in nb.cells if c.metadata["rlm"]["kind"] == "step"
             and c.metadata["rlm"]["run"] == "rbranch"]
    assert [bool(c.metadata["rlm"].get("inherited")) for c in steps] == [True, True, False, False]
    assert [c.metadata.get("jupyter", {}).get("source_hidden", False) for c in steps] == \
        [True, True, False, False]
    final = next(c for c in nb.cells if c.metadata["rlm"]["kind"] == "final"
                 and c.metadata["rlm"]["run"] == "rbranch")
    assert "fork of `rparent` at step 2" in final.source and "`other-root`" in final.source


def test_a_notebook_written_before_branches_loads_with_no_fork() -> None:
    nb = to_notebook([recorded_run("rold", 3)])
    for cell in nb.cells:  # what an older writer produced: no fork_of, no branch in the header
        header = cell.metadata["rlm"].get("header")
        if header is not None:
            header.pop("fork_of")
            header.pop("branch")
    run = runs_from_notebook(nb)["rold"]
    assert run.fork_of is None and run.branch == "" and run.inherited == 0
    assert len(run.steps) == 3 and run.answer == "42"
