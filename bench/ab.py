"""A/B: stockpush at a git revision against the working tree, on one load step, in one run.

    python -m bench.ab HEAD~1 --clients 1000 --rate 16000 --repeat 3

On a shared, noisy host, two benchmark runs minutes apart can differ by more than the change
being measured. This runs both servers on the same step (clients x 10 of 100 symbols, the
synthetic feed at `rate` trades/s), alternating A, B, A, B... so both sides share the
host's mood, and reports each run and the medians: delivered events/s, latency and the
server's CPU over the measurement window. The revision is checked out into a temporary
git worktree, removed afterwards. Results also go to bench/results/ab-*.json.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import statistics
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench.__main__ import RESULTS, ROOT, run_stream, server


@contextlib.contextmanager
def checkout(rev: str) -> Iterator[Path]:
    """The tree of `rev` in a temporary worktree (this repository's history, no network)."""
    with tempfile.TemporaryDirectory(prefix="stockpush-ab-") as tmp:
        tree = Path(tmp) / "tree"
        subprocess.run(["git", "worktree", "add", "--detach", str(tree), rev], cwd=ROOT, check=True,
                       capture_output=True)  # fmt: skip
        try:
            yield tree
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=ROOT, capture_output=True)


def summary(run: dict[str, Any]) -> dict[str, Any]:
    lat = run["latency_ms"]
    return {"events_per_s": run["events_per_s"], "p50": lat["p50"], "p99": lat["p99"], "p999": lat["p999"],
            "server_cpu": run["server_cpu"], "loadgen_cpu": run["loadgen_cpu"], "gaps": run["gaps"]}  # fmt: skip


def medians(runs: list[dict[str, Any]]) -> dict[str, float]:
    keys = ("events_per_s", "p50", "p99", "p999", "server_cpu", "loadgen_cpu")
    return {key: statistics.median(r[key] for r in runs if r[key] is not None) for key in keys}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("rev", help="the A side: a git revision (the B side is the working tree)")
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=16_000, help="feed trades/s (delivered: x clients/10)")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each side, alternating")
    parser.add_argument("--duration", type=float, default=6.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--check-fraction", type=float, default=0.05)
    parser.add_argument("--stream", default="", help="extra stream settings for both, e.g. 'pace_ms: 20'")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    sides: dict[str, list[dict[str, Any]]] = {"A": [], "B": []}
    with checkout(args.rev) as tree:
        roots = {"A": tree, "B": ROOT}
        for i in range(args.repeat):
            for side in ("A", "B"):
                with server("stockpush", args.rate, 100, root=roots[side], stream=args.stream) as srv:
                    run = run_stream(srv, "stockpush", clients=args.clients, per_client=10, symbols=100,
                                     duration=args.duration, warmup=args.warmup,
                                     check_fraction=args.check_fraction)  # fmt: skip
                result = summary(run)
                sides[side].append(result)
                print(f"  {side} run {i + 1}: {result['events_per_s']:>12,.0f} events/s  p50 {result['p50']:7.1f}"
                      f"  p99 {result['p99']:7.1f}  p99.9 {result['p999']:7.1f} ms  server cpu"
                      f" {result['server_cpu']:4.0%}  loadgen cpu {result['loadgen_cpu']:4.0%}  gaps {result['gaps']}",
                      flush=True)  # fmt: skip
    report = {
        "started": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H%M%SZ"),
        "a": args.rev,
        "b": "working tree",
        "step": {"clients": args.clients, "rate": args.rate, "stream": args.stream},
        "runs": sides,
        "medians": {side: medians(runs) for side, runs in sides.items()},
    }
    a, b = report["medians"]["A"], report["medians"]["B"]
    print(f"\nmedians (B / A): events/s {_ratio(b, a, 'events_per_s')}, p99 {_ratio(b, a, 'p99')},"
          f" server cpu {_ratio(b, a, 'server_cpu')}")  # fmt: skip
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"ab-{report['started']}.json"
    path.write_text(json.dumps(report, indent=1))
    print(f"Results: {path}")
    return 0


def _ratio(b: dict[str, Any], a: dict[str, Any], key: str) -> str:
    """B / A, or "-" where A measured nothing (a tiny smoke run can read no CPU time at all)."""
    return f"{b[key] / a[key]:.3f}" if a[key] else "-"


if __name__ == "__main__":
    raise SystemExit(main())
