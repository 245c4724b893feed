"""The benchmark runs end to end on a tiny configuration and writes results that parse."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_quick_benchmark_runs_and_reports(tmp_path: Path) -> None:
    """`python -m bench --quick` measures both servers in every scenario and writes JSON and markdown."""
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--out", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (result,) = tmp_path.glob("*.json")
    report = json.loads(result.read_text())
    scenarios = report["scenarios"]
    assert set(scenarios) == {"1", "2", "3", "4", "5", "frame", "6"}
    for key in ("1", "2"):
        for kind in ("naive", "stockpush"):
            steps = scenarios[key][kind]["steps"]
            assert steps
            assert all(step["events_per_s"] > 0 for step in steps)
            assert all(step["gaps"] == 0 for step in steps)
    assert scenarios["4"]["stockpush"]["20"]["clients"] == 20
    assert scenarios["6"]["stockpush"]["best_connects_per_s"] > 0
    assert report["machine"]["commit"]
    table = result.with_suffix(".md").read_text()
    assert "| 1. 100 clients" in table
    assert "ratio" in table
