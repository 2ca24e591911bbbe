"""Each bench script runs with minimal sizes and prints its figure lines (no timing asserted).

The figures themselves come from ``bash bench/run.sh``; this only keeps the scripts working.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"
sys.path.insert(0, str(BENCH))


@pytest.fixture(autouse=True)
def _out_dir(tmp_path, monkeypatch):
    import _common

    monkeypatch.setattr(_common, "OUT", tmp_path)
    for mod in ("scale", "overhead"):
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


def test_side_by_side_ours_only(capsys) -> None:
    import side_by_side

    rows = side_by_side.main(["--n", "4", "--latency", "0", "--lines", "300", "--ours-c", "8"])
    ours = [r for r in rows if r["runtime"] == "rlm-kernel"]
    assert ours and all(r["correct"] and r["sub_requests"] == 4 for r in ours)
    _figures(capsys.readouterr().out, "side_by_side")


def test_scale_and_overhead(capsys, tmp_path, monkeypatch) -> None:
    import overhead
    import scale

    monkeypatch.setattr(scale, "OUT", tmp_path)
    monkeypatch.setattr(overhead, "OUT", tmp_path)
    rows = scale.main(["--tokens", "5000", "--tasks", "needle"])
    assert rows[0]["correct"]
    out = overhead.main(["--repeat", "1", "--chars", "20000", "--count-chars", "0"])
    assert out["prefix"]["pairs"] >= 1
    text = capsys.readouterr().out
    _figures(text, "scale")
    _figures(text, "overhead")
    _figures(text, "prefix")


def test_step_slope(capsys, tmp_path, monkeypatch) -> None:
    import step_slope

    monkeypatch.setattr(step_slope, "save", lambda name, data: None)
    assert step_slope.main(["--repeat", "1", "--steps", "3"]) == 0
    lines = _figures(capsys.readouterr().out, "slope")
    assert any("marginal root step" in ln for ln in lines)
