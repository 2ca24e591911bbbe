"""Each bench script runs with minimal sizes and prints its figure lines (no timing asserted).

The figures themselves come from ``bash bench/run.sh``; this only keeps the scripts working.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from rlm_kernel.config import RLMConfig

BENCH = Path(__file__).resolve().parent.parent / "bench"
sys.path.insert(0, str(BENCH))


@pytest.fixture(autouse=True)
def _out_dir(tmp_path, monkeypatch):
    import _common

    monkeypatch.setattr(_common, "OUT", tmp_path)
    for mod in ("scale",):
        if mod in sys.modules:
            monkeypatch.setattr(sys.modules[mod], "OUT", tmp_path)


def _figures(out: str, name: str) -> list[str]:
    lines = [ln for ln in out.splitlines() if ln.startswith(f"FIGURE {name} ")]
    assert lines, out
    return lines


def test_subcalls(capsys) -> None:
    import subcalls

    rows = subcalls.main(["--n", "8", "--c", "4", "--latency", "0", "0.01", "--chunk-chars", "200"])
    assert rows[0]["requests"] == 8
    assert "ratio=" in _figures(capsys.readouterr().out, "subcalls")[0]


def test_scale_and_overhead(capsys, tmp_path, monkeypatch) -> None:
    import overhead
    import scale

    monkeypatch.setattr(scale, "OUT", tmp_path)
    rows = scale.main(["--tokens", "5000", "--tasks", "needle"])
    assert rows[0]["correct"]
    out = overhead.main(["--chars", "20000", "--count-lines", "200"])
    assert out["prefix"]["pairs"] >= 1
    text = capsys.readouterr().out
    _figures(text, "scale")
    _figures(text, "prefix")


def test_phase_kernel_and_library_and_a_peer_or_its_skip_line(capsys) -> None:
    import _procs
    import phase

    rows = phase.main(["--n", "4", "--c", "2", "--latency", "0.01", "--repeat", "1", "--lines",
                       "200", "--runtimes", "library", "kernel", "rlms"])
    ours = [r for r in rows if r["runtime"] in ("library", "kernel")]
    assert len(ours) == 2 and all(r["correct"] and r["sub_requests"] == 4 for r in ours), rows
    out = capsys.readouterr().out
    _figures(out, "phase")
    assert _procs.peer_python("rlms") is not None or _procs.skip_line("rlms") in out


def test_cpu_counts_the_kernel_and_the_front_end_apart(capsys) -> None:
    import cpu

    rows = cpu.main(["--n", "5", "--repeat", "1", "--lines", "200",
                     "--runtimes", "kernel", "openai"])
    kernel = next(r for r in rows if r["runtime"] == "kernel")
    assert "kernel_ms_per_call" in kernel and "frontend_ms_per_call" in kernel
    _figures(capsys.readouterr().out, "cpu")


def test_step_slope_sees_one_gap_per_step(capsys) -> None:
    import step_slope

    out = step_slope.main(["--steps", "2", "--repeat", "1", "--runtimes", "kernel", "library"])
    assert {r["runtime"] for r in out["rows"]} == {"kernel", "library"}
    assert out["bare_ipykernel_ms"] > 0
    _figures(capsys.readouterr().out, "step")


def test_startup_and_side_by_side(capsys) -> None:
    import side_by_side
    import startup

    rows = startup.main(["--repeat", "1", "--runtimes", "kernel"])
    assert rows[0]["wall_s"] > 0
    rows = side_by_side.main(["--n", "3", "--latency", "0", "--repeat", "1", "--lines", "200",
                              "--c", "4", "--runtimes", "kernel"])
    ours = RLMConfig.class_traits()["concurrency"].default_value
    assert [r["c"] for r in rows] == [ours, 4] and all(r["correct"] for r in rows)
    text = capsys.readouterr().out
    _figures(text, "startup")
    _figures(text, "side_by_side")


def test_big_batch_and_replay_and_the_report(capsys, tmp_path, monkeypatch) -> None:
    import big_batch
    import replay
    import report

    monkeypatch.setattr(report, "OUT", tmp_path)
    out = big_batch.main(["--n", "12", "--c", "4", "--latency", "0.01", "--lines", "200"])
    assert out["ratio"] > 0
    out = replay.main(["--sizes", "3", "6", "--lines", "200", "--timeout", "120"])
    assert all(r.get("correct") for r in out["rows"]), out
    assert "ratio" in out
    results = report.main()
    assert {"big_batch", "replay"} <= set(results)
    text = capsys.readouterr().out
    _figures(text, "big_batch")
    _figures(text, "replay")
    assert "| one `llm_batch` of 12" in text
