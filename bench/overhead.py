"""Root prompt prefix stability: does each root request extend the one before it?

A needle query over a 1 MB context and a counting query (16 sub-calls, 5,000 log lines) run through ``rlm-kernel run``
against a server answering at once; the server logs every root request. For each root request but
the last of its conversation: the share of its serialized messages that is an exact prefix of the
next request's (goal 100%: a provider's prompt cache then serves every earlier step).

The per-step overhead figure that used to live here (a whole ``%%rlm`` cell divided by its steps)
is replaced by ``step_slope.py``: one definition of a step's cost for every runtime.

    python bench/overhead.py [--chars 1000000] [--count-lines 5000]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _procs  # noqa: E402
from _common import Server, count_query, figure, save, write_log  # noqa: E402
from scale import write_needle  # noqa: E402


def prefix_shares(roots: list[list[dict]]) -> list[float]:
    """For consecutive root requests of one conversation (same first two messages): the share of
    request k's serialized message list that request k+1's starts with."""
    def ser(msgs: list[dict]) -> str:
        return json.dumps(msgs, sort_keys=True, ensure_ascii=False)[:-1]  # open list: a prefix

    shares = []
    for a, b in zip(roots, roots[1:], strict=False):
        if a[:2] != b[:2]:
            continue  # a new conversation begins
        sa, sb = ser(a), ser(b)
        common = 0
        for x, y in zip(sa, sb, strict=False):
            if x != y:
                break
            common += 1
        shares.append(common / len(sa))
    return shares


def root_requests(server: Server, ctx: Path, query: str, tmp: Path) -> list[list[dict]]:
    """The root requests of one ``rlm-kernel run`` of ``query`` over ``ctx``."""
    server.log()
    _procs.kernel_run(server.base_url, ctx, query, tmp / "prefix.ipynb", concurrency=None,
                      max_steps=8, timeout=300).check()
    return server.log()["root"]


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--chars", type=int, default=1_000_000)
    p.add_argument("--count-lines", type=int, default=5_000,
                   help="lines of the counting run's log (0: skip it)")
    a = p.parse_args(argv)
    with Server(0.0) as server, tempfile.TemporaryDirectory() as tmp:
        ctx = Path(tmp) / "needle.txt"
        query, _ = write_needle(ctx, a.chars)
        shares = prefix_shares(root_requests(server, ctx, query, Path(tmp)))
        if a.count_lines:
            log_ctx = Path(tmp) / "log.txt"
            write_log(log_ctx, a.count_lines)
            shares += prefix_shares(root_requests(server, log_ctx, count_query(16), Path(tmp)))
    exact = sum(s == 1.0 for s in shares)
    out = {"prefix": {"pairs": len(shares), "exact": exact,
                      "min_share": min(shares) if shares else None,
                      "mean_share": statistics.mean(shares) if shares else None}}
    figure(f"prefix pairs={len(shares)} exact_prefix={exact}/{len(shares)} "
           f"mean_share={out['prefix']['mean_share']:.4f} "
           f"min_share={out['prefix']['min_share']:.4f}")
    save("overhead", out)
    return out


if __name__ == "__main__":
    main()
