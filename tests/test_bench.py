"""The benchmark runs end to end on a tiny configuration and writes results that parse."""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def run_module(module: str, *args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    """`python -m module args` from the project root; it must exit 0."""
    proc = subprocess.run(
        [sys.executable, "-m", module, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def test_quick_benchmark_runs_and_reports(tmp_path: Path) -> None:
    """`python -m bench --quick` measures both servers in every scenario and writes JSON and markdown."""
    run_module("bench", "--quick", "--out", str(tmp_path), timeout=240)
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
    for kind in ("naive", "stockpush"):
        frame = scenarios["frame"][kind]
        # Measured over the load generator's window, the server pinned to one core.
        assert 0 < frame["server_cpu"] <= 1.1 and 0 < frame["server_cpu_run"] <= 1.1
        assert frame["cpu_us_per_event"] > 0
    slow = scenarios["5"]
    for side in ("slow_0", "slow_1"):
        assert slow["runs"][side] and all(run["gaps"] == 0 for run in slow["runs"][side])
        assert all(0 < run["server_rss_window_peak"] <= run["server_rss_peak"] for run in slow["runs"][side])
        assert slow[side]["p99"] == statistics.median(run["latency_ms"]["p99"] for run in slow["runs"][side])
    assert slow["p99_ratio"] == pytest.approx(slow["slow_1"]["p99"] / slow["slow_0"]["p99"])
    # The stalled client really connected (its handshake is checked) in every run with it.
    assert len(slow["slow_close_codes"]) == len(slow["runs"]["slow_1"])
    assert all(run["slow_close_codes"] == [] for run in slow["runs"]["slow_0"])
    assert scenarios["4"]["stockpush"]["20"]["clients"] == 20
    assert scenarios["6"]["stockpush"]["best_connects_per_s"] > 0
    assert report["machine"]["commit"]
    table = result.with_suffix(".md").read_text()
    assert "| 1. 100 clients" in table
    assert "| per-frame cost: server CPU per delivered event" in table
    assert "| 5. healthy p99 with one stalled client / without (medians)" in table
    assert "ratio" in table
    # Where Node.js is installed the reference server runs beside them, speaking the naive
    # protocol (a machine with Node.js but no npm registry cannot install `ws`: then the
    # report says why, and under CI that is a failure).
    if shutil.which("node") and shutil.which("npm") and (os.environ.get("CI") or report["node_reference"] is None):
        assert report["node_reference"] is None
        for key in ("1", "2"):
            steps = scenarios[key]["node"]["steps"]
            assert steps and all(step["events_per_s"] > 0 and step["gaps"] == 0 for step in steps)
        assert scenarios["3"]["node"]["latency_ms"]["p99"] > 0
        assert scenarios["4"]["node"]["20"]["clients"] == 20
        assert 0 < scenarios["frame"]["node"]["server_cpu"] <= 1.1
        assert "Node.js ws, batched" in table and "| stockpush / Node.js |" in table
        assert report["machine"]["versions"]["node"].startswith("v")


def test_server_cpu_is_read_over_the_load_generators_window() -> None:
    """CPU seconds between samples are interpolated; outside the samples the nearest one counts."""
    from bench.__main__ import cpu_at

    samples = [(10.0, 1.0), (10.1, 1.05), (10.2, 1.15)]
    assert cpu_at(samples, 10.05) == pytest.approx(1.025)
    assert cpu_at(samples, 10.15) == pytest.approx(1.10)
    assert cpu_at(samples, 9.0) == 1.0
    assert cpu_at(samples, 11.0) == 1.15


def test_ab_runs_a_revision_against_the_working_tree(tmp_path: Path) -> None:
    """`python -m bench.ab REV` measures both trees on one step, alternating, and writes JSON."""
    args = ["HEAD", "--clients", "4", "--rate", "200", "--duration", "0.5", "--warmup", "0.3", "--repeat", "1"]
    proc = run_module("bench.ab", *args, "--out", str(tmp_path), timeout=120)
    (result,) = tmp_path.glob("ab-*.json")
    report = json.loads(result.read_text())
    for side in ("A", "B"):
        (run,) = report["runs"][side]
        assert run["events_per_s"] > 0 and run["gaps"] == 0
        # A tiny server for half a second may use less than one clock tick (10 ms) of CPU.
        assert 0 <= run["server_cpu"] <= 1.1
    assert "medians (B / A)" in proc.stdout
    worktrees = subprocess.run(["git", "worktree", "list"], cwd=ROOT, capture_output=True, text=True).stdout
    assert "stockpush-ab-" not in worktrees  # the temporary checkout is gone


def test_the_stalled_client_reads_the_close_code_only_from_a_frame_that_ends_the_stream() -> None:
    """A 0x88 in a data frame's length is not a close frame; a close frame with no code is 1005."""
    from bench.loadgen import _close_code

    close = bytes([0x88, 15]) + (4100).to_bytes(2, "big") + b"slow consumer"
    data_with_0x88_length = bytes([0x81, 0x7E, 0x88, 0x00]) + b'{"seq":1}'
    assert _close_code(b'{"seq":1}]}' + close) == 4100
    assert _close_code(data_with_0x88_length) is None
    assert _close_code(data_with_0x88_length + close) == 4100
    assert _close_code(b"x" + bytes([0x88, 0])) == 1005
    assert _close_code(b"") is None
