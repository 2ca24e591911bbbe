"""Merge bench/out/*.json into bench/out/results.json and print the figures as one table."""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import OUT  # noqa: E402


def main() -> None:
    results = {}
    for name in ("subcalls", "side_by_side", "overhead", "scale"):
        f = OUT / f"{name}.json"
        if f.exists():
            results[name] = json.loads(f.read_text())
    (OUT / "results.json").write_text(json.dumps(results, indent=1))
    print("| bench | configuration | figure |\n|---|---|---|")
    for r in results.get("subcalls", {}).get("rows", []):
        print(f"| sub-calls | {r.get('client', 'current')} n={r['n']} c={r['c']} | wall "
              f"{r['wall_s']:.2f} s / limit {r['limit_s']:.2f} s = {r['ratio']:.2f}x; client CPU "
              f"{r['cpu_ms_per_call']:.2f} ms/call (load {r.get('loadavg_1min', 0):.1f}) |")
    for r in results.get("side_by_side", {}).get("rows", []):
        print(f"| side by side | {r['runtime']} c={r['c']} n={r['n']} | wall {r['wall_s']:.2f} s; "
              f"sub-call phase {r['subcall_phase_s']:.2f} s = {r['phase_ratio']:.2f}x limit; "
              f"requests {r['root_requests']} root + {r['sub_requests']} sub; "
              f"correct={r['correct']} |")
    o = results.get("overhead", {})
    if "overhead" in o:
        v = o["overhead"]
        print(f"| kernel overhead | {v['steps']} steps, zero latency | rlm "
              f"{1000 * v['rlm_step_s']:.1f} ms/step vs ipykernel {1000 * v['plain_step_s']:.1f} "
              f"ms/step = {v['ratio']:.2f}x (goal {1000 * v['goal_s']:.1f} ms, met={v['met']}) |")
    if "prefix" in o:
        v = o["prefix"]
        print(f"| prefix stability | {v['pairs']} consecutive root requests | "
              f"{v['exact']}/{v['pairs']} exact prefixes, mean share {v['mean_share']:.4f} |")
    for r in results.get("scale", {}).get("rows", []):
        print(f"| scale | {r['task']} {r['tokens']:.0e} tokens ({r['context_bytes'] / 1e6:.0f} MB)"
              f" | run {r['run_s']:.2f} s (load {r['load_s']:.2f} s); peak RSS "
              f"{r['peak_rss_mb']:.0f} MB, (peak-base)/context {r['rss_over_context']:.2f}; "
              f"notebook {r['notebook_bytes'] / 1024:.0f} KB; correct={r['correct']} |")


if __name__ == "__main__":
    main()
