"""``rlm-kernel eval`` end to end on the scripted model (issue 8, items 2 and 4).

Every run goes through :func:`rlm_kernel.evals.cli.main` exactly as the command line does, with the
embedded scripted model (no key: in-process transport), a :class:`ScriptedServer` on 127.0.0.1 (to
check prices and the endpoint path) or a real ``rlm`` kernel (one small task). Sizes are small so
the whole file runs in well under a minute; what is checked is the harness: task files, notebooks,
scores from the published scorers, the results table and its honesty about the scripted model.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import nbformat
import pytest

from rlm_kernel.evals import generate
from rlm_kernel.evals.cli import main
from rlm_kernel.evals.runner import SCRIPTED_LABEL, load_prices, p95

SUMMARY_KEYS = {"n", "score_mean", "cost_mean_usd", "cost_p95_usd", "tokens_mean", "tokens_p95",
                "subcalls_mean", "wall_mean_s", "wall_p95_s"}
ROW_KEYS = {"task_id", "family", "baseline", "via", "score", "status", "answer", "gold", "notebook",
            "cost_usd", "prompt_tokens", "completion_tokens", "total_tokens", "subcalls", "wall_s"}


def run_cli(out: Path, *args: str) -> tuple[int, dict[str, Any]]:
    code = main([*args, "--out", str(out)])
    results = json.loads((out / "results.json").read_text("utf-8"))
    return code, results


def kinds(path: Path) -> list[str | None]:
    nb = nbformat.read(str(path), as_version=4)
    nbformat.validate(nb)
    return [(c.metadata.get("rlm") or {}).get("kind") for c in nb.cells]


@pytest.mark.parametrize("family,length", [("sniah", 4000), ("oolong", 3000),
                                           ("oolong-pairs", 3000)])
def test_rlm_baseline_every_family(tmp_path: Path, family: str, length: int,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    code, res = run_cli(tmp_path, "--task", family, "--n", "2", "--length", str(length),
                        "--seed", "3")
    assert code == 0
    assert res["family"] == family and res["baseline"] == "rlm" and res["via"] == "library"
    assert res["scripted"] is True and res["model_label"] == SCRIPTED_LABEL
    assert (res["model"], res["sub_model"]) == ("scripted-root", "scripted-sub")
    assert set(res["summary"]) >= SUMMARY_KEYS and res["summary"]["n"] == 2
    assert res["summary"]["score_mean"] == 1.0
    assert "no price table" in res["cost_note"] and res["summary"]["cost_mean_usd"] == 0.0
    assert res["command"].startswith("rlm-kernel eval --task " + family)
    for row, task in zip(res["tasks"], generate(family, 3, 2, length), strict=True):
        assert set(row) >= ROW_KEYS
        assert row["task_id"] == task.task_id and row["score"] == 1.0 and row["status"] == "final"
        assert row["total_tokens"] > 0 and row["wall_s"] > 0
        # The task files sit beside the notebook; the notebook is a valid RLM trajectory.
        for suffix in ("context.txt", "task.json", "answer.json"):
            assert (tmp_path / f"{task.task_id}.{suffix}").exists()
        k = kinds(tmp_path / row["notebook"])
        assert k[0] == "query" and k[-1] == "final" and "step" in k
        if family != "sniah":  # OOLONG labels come only from sub-calls
            assert row["subcalls"] >= 1 and "llm" in k
    table = (tmp_path / "results.md").read_text("utf-8")
    assert SCRIPTED_LABEL in table and "| **mean** (n=2) | **1.000**" in table
    assert table in capsys.readouterr().out  # printed and saved: the same table


def test_direct_baseline_says_when_context_does_not_fit(tmp_path: Path) -> None:
    code, res = run_cli(tmp_path, "--task", "sniah", "--n", "1", "--length", "3000",
                        "--baseline", "direct", "--window-tokens", "1000")
    assert code == 0
    row = res["tasks"][0]
    assert row["status"] == "not_run" and row["score"] == 0.0
    assert "context does not fit" in row["note"] and "> window 1,000" in row["note"]
    assert row["requests"] == 0 and row["total_tokens"] == 0 and row["answer"] is None
    assert kinds(tmp_path / row["notebook"]) == ["query", "final"]
    assert "context does not fit" in (tmp_path / "results.md").read_text("utf-8")


def test_direct_baseline_makes_one_call_when_it_fits(tmp_path: Path) -> None:
    code, res = run_cli(tmp_path, "--task", "oolong", "--n", "1", "--length", "2000",
                        "--baseline", "direct")
    assert code == 0
    row = res["tasks"][0]
    # The scripted model has no rule for a whole-context prompt: it says so, and scores 0.
    assert row["status"] == "final" and row["requests"] == 1 and row["subcalls"] == 0
    assert row["prompt_tokens"] >= 2000 and "not an LLM" in row["answer"]
    assert row["score"] == 0.0
    assert kinds(tmp_path / row["notebook"]) == ["query", "llm", "final"]


def test_no_subcalls_ablation_runs_and_records_its_score(tmp_path: Path) -> None:
    code, res = run_cli(tmp_path / "oolong", "--task", "oolong", "--n", "2", "--length", "2000",
                        "--baseline", "no-subcalls")
    assert code == 0 and res["baseline"] == "no-subcalls"
    for row in res["tasks"]:
        assert row["status"] == "final" and row["subcalls"] == 0
        assert row["score"] < 1.0  # labels need sub-calls; the scripted root gives up honestly
        nb = nbformat.read(str(tmp_path / "oolong" / row["notebook"]), as_version=4)
        errors = [o["evalue"] for c in nb.cells if c.cell_type == "code"
                  for o in c.get("outputs", []) if o["output_type"] == "error"]
        assert any("sub-calls are switched off" in e for e in errors)
    assert res["summary"]["score_mean"] < 1.0
    # S-NIAH needs no sub-call: a regex over `context` finds the needle, as in the paper.
    code, res = run_cli(tmp_path / "sniah", "--task", "sniah", "--n", "1", "--length", "3000",
                        "--baseline", "no-subcalls")
    assert code == 0 and res["summary"]["score_mean"] == 1.0


def test_prices_and_endpoint_give_costs(tmp_path: Path, scripted_server: Any) -> None:
    srv = scripted_server()
    prices = {"scripted-root": {"prompt": 1.0, "completion": 4.0, "cached": 0.5},
              "scripted-sub": {"prompt": 0.5, "completion": 2.0}}
    table = tmp_path / "prices.json"
    table.write_text(json.dumps(prices), "utf-8")
    code, res = run_cli(tmp_path / "out", "--task", "oolong", "--n", "3", "--length", "2000",
                        "--base-url", srv.base_url, "--model", "scripted-root",
                        "--sub-model", "scripted-sub", "--prices", str(table),
                        "--concurrency", "4", "--max-steps", "10")
    assert code == 0 and res["summary"]["score_mean"] == 1.0
    costs = [row["cost_usd"] for row in res["tasks"]]
    assert all(c > 0 for c in costs)
    assert res["summary"]["cost_p95_usd"] == max(costs)
    assert res["summary"]["cost_mean_usd"] == pytest.approx(sum(costs) / 3)
    assert res["base_url"] == srv.base_url and res["cost_note"].startswith("costs from")
    assert srv.model.stats.snapshot()["sub_requests"] >= 3  # the calls really went over HTTP


def test_one_task_through_a_real_kernel(tmp_path: Path) -> None:
    code, res = run_cli(tmp_path, "--task", "oolong-pairs", "--n", "1", "--length", "2000",
                        "--via", "kernel", "--prices",
                        '{"scripted-root": {"prompt": 1, "completion": 4}}')
    assert code == 0 and res["via"] == "kernel"
    row = res["tasks"][0]
    assert row["status"] == "final" and row["score"] == 1.0
    assert row["subcalls"] >= 1 and row["prompt_tokens"] > 0 and row["cost_usd"] > 0
    assert "scripted-sub" in res["cost_note"]  # priced the root only: the note says what is missing
    k = kinds(tmp_path / row["notebook"])
    # setup cells (%rlm config, %rlm load), then the trajectory the rlm.cells protocol built
    assert k[:3] == [None, None, "query"] and "step" in k and "llm" in k and k[-1] == "final"


def test_bad_arguments_fail_clearly(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--task", "sniah", "--n", "1", "--length", "100", "--prices", "{not json",
                 "--out", str(tmp_path)]) == 2
    assert "--prices" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--task", "ruler", "--n", "1", "--length", "100", "--out", str(tmp_path)])
    with pytest.raises(ValueError, match="not a known price"):
        load_prices('{"m": {"input": 1}}')


def test_p95_is_nearest_rank() -> None:
    assert p95([]) == 0.0
    assert p95([3.0, 1.0, 2.0]) == 3.0
    assert p95([float(i) for i in range(1, 101)]) == 95.0


def test_client_settings_are_flags_of_eval_too(tmp_path: Path) -> None:
    """call_timeout, the token bounds, stream... (issue 15): every CLI setting of rlm-kernel run."""
    code, results = run_cli(tmp_path, "--task", "sniah", "--n", "1", "--length", "2000",
                            "--call-timeout", "7", "--sub-max-tokens", "99", "--no-stream")
    assert code == 0 and results["summary"]["final"] == 1
    from rlm_kernel.notebook import runs_from_notebook

    nb = nbformat.read(str(tmp_path / results["tasks"][0]["notebook"]), as_version=4)
    (run,) = [r for r in runs_from_notebook(nb).values() if r.depth == 0]
    assert (run.settings["call_timeout"], run.settings["sub_max_tokens"],
            run.settings["stream"]) == (7.0, 99, False)
    assert main(["--task", "sniah", "--n", "1", "--length", "2000", "--out", str(tmp_path),
                 "--system-role", "assistant"]) == 2
def test_best_effort_answers_are_scored_and_counted_apart(tmp_path: Path) -> None:
    """Two steps are too few for the needle strategy (peek, regex, FINAL): the model is asked
    once for its best answer, which is right, scored, and counted apart from FINAL answers."""
    code, res = run_cli(tmp_path, "--task", "sniah", "--n", "2", "--length", "4000",
                        "--seed", "3", "--max-steps", "2")
    assert code == 0
    assert [row["best_effort"] for row in res["tasks"]] == [True, True]
    assert all(row["score"] == 1.0 and row["status"] == "final" for row in res["tasks"])
    assert res["summary"]["final"] == 0 and res["summary"]["best_effort"] == 2
    table = (tmp_path / "results.md").read_text("utf-8")
    assert "final (best-effort)" in table and "0/2 final, 2 best-effort (score 1.000)" in table
