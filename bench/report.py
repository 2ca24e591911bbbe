"""Merge bench/out/*.json into bench/out/results.json and print the figures as tables.

First the table of issue 13 (one row per figure; library, kernel path and peers side by side;
each cell says what was run), then the other benches' rows. A figure whose bench did not run, or
whose peer is not installed, shows "—".
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import OUT  # noqa: E402

NAMES = ("phase", "cpu", "step_slope", "startup", "big_batch", "replay", "side_by_side",
         "subcalls", "overhead", "scale")
NONE = "—"


def _by(rows: list[dict], key: str = "runtime") -> dict[str, dict]:
    return {r[key]: r for r in rows}


def _phase(r: dict | None, with_wall: bool = False) -> str:
    if r is None:
        return NONE
    if "error" in r:
        return f"{r['label']}: {r['error']}"
    text = f"{r['ratio']:.2f}x ({r['phase_s']:.2f} s / {r['limit_s']:.2f} s at c={r['c']})"
    return f"{r['label']}: {text}" if with_wall else text


def issue_table(res: dict[str, Any]) -> list[str]:
    out = ["| figure | library | kernel path (`rlm-kernel run`) | peers | goal |", "|---|---|---|---|---|"]
    ph = res.get("phase", {})
    if ph:
        rows = _by(ph["rows"])
        lib, ker = rows.get("library"), rows.get("kernel")
        rel = (f"; {ker['phase_s'] / lib['phase_s']:.2f}x the library"
               if lib and ker and "phase_s" in lib and "phase_s" in ker else "")
        peers = "; ".join(_phase(rows[k], True) for k in ("rlms", "rlms-cap", "dspy", "dspy-cap")
                          if k in rows) or NONE
        out.append(f"| sub-call phase / ceil(n/c)·L, n={ph['n']}, c={ph['c']}, "
                   f"L={ph['latency_s']} s (median of {ph['repeat']}) | {_phase(lib)} | "
                   f"{_phase(ker)}{rel} | {peers} | kernel ≤ 1.10x, ≤ 1.05x library |")
    cpu = res.get("cpu", {})
    if cpu:
        rows = _by(cpu["rows"])
        lib, ker = rows.get("library"), rows.get("kernel")
        peers = "; ".join(f"{name} {rows[k]['cpu_ms_per_call']:.2f} ms" for k, name in (
            ("rlms", "rlms 0.1.3"), ("openai", "raw AsyncOpenAI"),
            ("dspy", "dspy.RLM (Python + Deno)")) if k in rows) or NONE
        kcell = (f"{ker['kernel_ms_per_call']:.2f} ms kernel + {ker['frontend_ms_per_call']:.2f} ms "
                 "front-end process" if ker and "kernel_ms_per_call" in ker else NONE)
        lcell = f"{lib['cpu_ms_per_call']:.2f} ms" if lib else NONE
        out.append(f"| client CPU per sub-call (L=0, n={cpu['n']}, c={cpu['c']}) | {lcell} | {kcell} | "
                   f"{peers} | kernel ≤ 1.5 ms, front-end ≤ 0.5 ms |")
    st = res.get("step_slope", {})
    if st:
        rows = _by(st["rows"])

        def ms(k: str) -> str:
            return f"{rows[k]['step_ms']:.1f} ms" if k in rows else NONE
        goal = f" = {st['goal_ms']:.1f} ms" if "goal_ms" in st else ""
        peers = "; ".join(f"{name} {ms(k)}" for k, name in (("rlms", "rlms 0.1.3"),
                                                             ("dspy", "dspy.RLM")) if k in rows)
        out.append(f"| root step overhead, zero latency ({st['steps']} trivial steps, median gap) "
                   f"| {ms('library')} | {ms('kernel')} (bare ipykernel execute round trip: "
                   f"{st['bare_ipykernel_ms']:.1f} ms) | {peers or NONE} | ≤ bare + 3 ms"
                   f"{goal} |")
    su = res.get("startup", {})
    if su:
        rows = _by(su["rows"])

        def wall(k: str) -> str:
            return f"{rows[k]['wall_s']:.2f} s" if k in rows else NONE
        peers = "; ".join(f"{name} {wall(k)}" for k, name in (("rlms", "rlms 0.1.3"),
                                                              ("dspy", "dspy.RLM")) if k in rows)
        out.append(f"| trivial 1-step run, process wall (median of {su['repeat']}) | "
                   f"{wall('library')} | {wall('kernel')} | {peers or NONE} | kernel ≤ 1.5 s |")
    bb = res.get("big_batch", {})
    if bb:
        k, t = bb.get("kernel", {}), bb.get("threads", {})
        kc = k.get("error") or (f"{k['phase_s']:.2f} s" if "phase_s" in k else NONE)
        tc = t.get("error") or (f"{t['phase_s']:.2f} s" if "phase_s" in t else NONE)
        ratio = f"; ratio {bb['ratio']:.2f}" if "ratio" in bb else ""
        out.append(f"| one `llm_batch` of {bb['n']:,} at c={bb['c']}, L={bb['latency_s']} s "
                   f"(floor {bb['floor_s']:.1f} s), phase | — | {kc} (plain threads to the same "
                   f"server: {tc}){ratio} | — | ≤ 1.3x threads |")
    rp = res.get("replay", {})
    if rp:
        cells = []
        for r in rp["rows"]:
            cells.append(f"{r['n']:,}: " + (r["error"] if "error" in r else f"{r['replay_s']:.1f} s"))
        ratio = f"; ratio {rp['ratio']:.2f}" if "ratio" in rp else ""
        out.append(f"| `rlm-kernel replay` of a trajectory of N sub-calls | — | "
                   f"{', '.join(cells)}{ratio} | — | 10k completes, 10k/1k ≤ 11 |")
    sb = res.get("side_by_side", {})
    if sb:
        rows = sb["rows"]
        ours = [r for r in rows if r["runtime"] in ("kernel", "library")]
        peers = [r for r in rows if r["runtime"] not in ("kernel", "library")]

        def cell(rs: list[dict]) -> str:
            return "; ".join(f"{r['label']} {r['wall_s']:.2f} s" + (
                f" (rlms default / this = {r['rlms_default_over_this']:.2f}x)"
                if "rlms_default_over_this" in r else "") for r in rs) or NONE
        out.append(f"| end to end, {sb['n']}-sub-call counting task, L={sb['latency_s']} s, "
                   f"process wall | {cell([r for r in ours if r['runtime'] == 'library'])} | "
                   f"{cell([r for r in ours if r['runtime'] == 'kernel'])} | {cell(peers)} | "
                   "rlms (default) / ours ≥ 1.6 |")
    return out


def other_rows(res: dict[str, Any]) -> list[str]:
    out = ["| bench | configuration | figure |", "|---|---|---|"]
    for r in res.get("subcalls", {}).get("rows", []):
        out.append(f"| sub-calls (REPL level) | {r.get('client', 'current')} n={r['n']} c={r['c']} | "
                   f"wall {r['wall_s']:.2f} s / limit {r['limit_s']:.2f} s = {r['ratio']:.2f}x; "
                   f"client CPU {r['cpu_ms_per_call']:.2f} ms/call |")
    o = res.get("overhead", {}).get("prefix")
    if o:
        out.append(f"| prefix stability | {o['pairs']} consecutive root requests | {o['exact']}/"
                   f"{o['pairs']} exact prefixes, mean share {o['mean_share']:.4f} |")
    for r in res.get("scale", {}).get("rows", []):
        out.append(f"| scale | {r['task']} {r['tokens']:.0e} tokens ({r['context_bytes'] / 1e6:.0f} "
                   f"MB) | run {r['run_s']:.2f} s (load {r['load_s']:.2f} s); peak RSS "
                   f"{r['peak_rss_mb']:.0f} MB, (peak-base)/context {r['rss_over_context']:.2f}; "
                   f"notebook {r['notebook_bytes'] / 1024:.0f} KB; correct={r['correct']} |")
    return out


def main() -> dict:
    results = {}
    for name in NAMES:
        f = OUT / f"{name}.json"
        if f.exists():
            results[name] = json.loads(f.read_text())
    OUT.mkdir(exist_ok=True)
    (OUT / "results.json").write_text(json.dumps(results, indent=1))
    nodelay = results.get("phase", {}).get("nodelay")
    print("\n".join(issue_table(results)))
    if nodelay:
        print(f"\nTCP_NODELAY on the server's connections: {nodelay}")
    print()
    print("\n".join(other_rows(results)))
    return results


if __name__ == "__main__":
    main()
