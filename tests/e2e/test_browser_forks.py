"""Fork here and Compare in JupyterLab, with the real ``rlm`` kernel, in headless Chromium.

The user's way: right-click a step cell, "RLM: Fork Here…", say what the branch changes in the
dialog; then "Compare" in the run bar. The branch's cells appear as a group after the parent's,
and the comparison renders in the notebook (screenshot ``rlm-compare-view.png``).
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from browser import browser_page, screenshot, scripted_lab
from test_browser_rlm import NB_JS, _cells, _kinds, _notebook, _open, _run_cell, _wait_cell_done

from rlm_kernel.scripted.stepwise_policy import STEPWISE_MODEL


@pytest.fixture(scope="module")
def lab_and_server() -> Iterator[tuple]:
    with scripted_lab() as lab_srv:
        yield lab_srv


def _runs_by_kind(pg, kind: str) -> list[dict]:
    return [c for c in _cells(pg) if _kinds([c])[0] == kind]


def test_fork_here_on_a_step_cell_then_compare_in_the_run_bar(lab_and_server, make_log) -> None:
    lab, srv = lab_and_server
    log = make_log(2000, seed=5)
    (lab.root / "service.log").write_text(log.text, encoding="utf-8")
    query = "%%rlm\nHow many lines contain 'ERROR'? [chunks=4]"
    _notebook(lab.root / "forks.ipynb", [f"%rlm load {lab.root / 'service.log'}", query])
    with browser_page() as pg:
        _open(pg, lab, "forks.ipynb")
        _run_cell(pg, 0)
        _wait_cell_done(pg, 0)
        _run_cell(pg, 1)
        pg.wait_for_function(
            f"{NB_JS}.content.model.toJSON().cells.some(c => c.metadata?.rlm?.kind === 'final')",
            timeout=60_000)
        _wait_cell_done(pg, 1)
        parent = _runs_by_kind(pg, "query")[0]["metadata"]["rlm"]["run"]

        # Right-click step 1's cell: "RLM: Fork Here…", a new root model in the dialog.
        index = pg.evaluate(
            f"{NB_JS}.content.widgets.findIndex(w => w.model.getMetadata('rlm')?.kind === 'step'"
            " && w.model.getMetadata('rlm')?.step === 1)")
        pg.evaluate(f"{NB_JS}.content.activeCellIndex = {index}")
        cell = pg.locator(".jp-Notebook .jp-Cell").nth(index)
        cell.locator(".jp-InputArea").click(button="right")
        pg.locator(".lm-Menu-item", has_text="RLM: Fork Here").click()
        field = pg.locator(".jp-Dialog input")
        field.wait_for(timeout=10_000)
        assert field.input_value() == "--model "
        field.fill(f"--model {STEPWISE_MODEL}")
        pg.locator(".jp-Dialog .jp-mod-accept").click()
        pg.wait_for_function(
            f"{NB_JS}.content.model.toJSON().cells.filter(c => c.metadata?.rlm?.kind === 'final')"
            ".length === 2", timeout=90_000)

        cells = _cells(pg)
        queries = [c for c in cells if _kinds([c])[0] == "query"]
        assert len(queries) == 2
        branch = queries[1]["metadata"]["rlm"]
        assert branch["header"]["fork_of"]["run"] == parent and branch["header"]["fork_of"]["at"] == 1
        source = "".join(queries[1]["source"])
        assert source.startswith(f"%%rlm fork --run {parent} --at 1 --model {STEPWISE_MODEL}")
        # The branch's group follows the parent's; its inherited step is folded.
        runs = [c.get("metadata", {}).get("rlm", {}).get("run") for c in cells]
        last_parent = max(i for i, r in enumerate(runs) if r == parent)
        first_branch = runs.index(branch["run"])
        assert first_branch > last_parent
        inherited = [c for c in cells if c.get("metadata", {}).get("rlm", {}).get("inherited")]
        assert inherited and all(c["metadata"]["jupyter"]["source_hidden"] for c in inherited)
        finals = [c["metadata"]["rlm"]["answer"] for c in cells if _kinds([c])[0] == "final"]
        assert finals == [str(log.contains_error)] * 2

        # Compare, from the run bar, with a cell of the branch selected.
        pg.evaluate(f"{NB_JS}.content.activeCellIndex = {first_branch}")
        pg.locator(".rlm-fork-buttons .rlm-compare").click()
        view = pg.locator(".jp-OutputArea .rlm-compare")
        view.wait_for(timeout=60_000)
        text = view.inner_text()
        assert "forks A after step 1; they diverge at step 2" in text
        assert "- answers = llm_batch(prompts)" in text and "+ reply = llm(" in text
        assert "(the same)" in text  # both answers agree
        compare_cell = next(c for c in _cells(pg) if "%rlm compare" in "".join(c["source"]))
        assert "".join(compare_cell["source"]) == f"%rlm compare {parent} {branch['run']}"
        view.scroll_into_view_if_needed()
        shot = screenshot(pg, "rlm-compare-view")
        assert shot.exists()
        assert not pg.errors, pg.errors  # type: ignore[attr-defined]
        print(json.dumps({"screenshot": str(shot)}))
