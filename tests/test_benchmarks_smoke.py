"""The benchmarks are not timed tests: CI runs them in smoke mode (tiny models and sizes, a few steps),
which checks that every one of them runs end to end and writes its table and JSON."""

import json
import math
import os
import subprocess
import sys

import pytest

from benchmarks.common import Row, Skipped, table
from bincount.paths import PROJECT_ROOT


@pytest.mark.slow  # ~55 s: every benchmark, each training or timing for a few steps
def test_every_benchmark_runs_in_smoke_mode(abid, tmp_path):
    out = tmp_path / "results.json"
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--smoke", "--threads", "1", "--json", str(out), "--abid", str(abid)],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "BINCOUNT_NO_PROGRESS": "1"},
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    result = json.loads(out.read_text())
    assert result["smoke"] is True and result["machine"]["cores"] >= 1
    rows = result["rows"]
    names = {r["benchmark"] for r in rows}
    assert {
        "loader 32px",
        "quickstart data wait",
        "trainer overhead",
        "CPU precision, quick start's model",
        "weight averaging, quick start's model",
        "memory layout, quick start's model",
        "inference batch 1 p50",
        "inference batch 1 p99",
    } <= names
    assert any(n.startswith("gpu") for n in names)  # run on the CPU in smoke mode when there is no GPU
    for r in rows:
        if "skipped" in r:
            continue
        assert r["baseline_value"] > 0 and r["candidate_value"] > 0 and math.isfinite(r["ratio"]), r
    assert "| benchmark | metric | baseline | candidate | ratio | target | met |" in proc.stdout
    assert sum(line.startswith("| ") for line in proc.stdout.splitlines()) == len(rows) + 1


def test_unknown_benchmark_is_refused():
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--only", "loader,speed"],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2 and "unknown benchmark(s) speed" in proc.stderr


@pytest.mark.parametrize(
    "targets, candidate, met",
    [
        (["ratio >= 5"], 600.0, True),
        (["ratio >= 5"], 400.0, False),
        (["ratio <= 0.6"], 50.0, True),
        (["ratio >= 0.9", "candidate >= 3000"], 95.0, False),
        ([], 1.0, None),
    ],
)
def test_targets_read_against_the_ratio_or_the_candidate(targets, candidate, met):
    row = Row("b", "m", "base", 100.0, "cand", candidate, targets)
    assert row.met is met
    assert row.to_dict()["ratio"] == pytest.approx(candidate / 100)
    assert ("**no**" in table([row])) == (met is False)
    assert "skipped: no GPU" in table([row, Skipped("gpu", "no GPU")])
