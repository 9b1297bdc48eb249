"""A tiny run of the benchmark, so that it keeps working. No timing is asserted."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent.parent / "benchmarks" / "bench.py"


def run_bench(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    """benchmarks/bench.py on trees below tmp_path, with this environment's efspurge first."""
    env = {**os.environ, "PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"]}
    return subprocess.run(
        [sys.executable, str(BENCH), "--root-base", str(tmp_path / "bench"), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )


def test_benchmark_runs_and_verifies_every_tool(tmp_path):
    out = tmp_path / "results.json"
    result = run_bench(
        tmp_path,
        "--scenarios", "flat:300 balanced:2x2x5 deep:50x1 mixed:400@0.9",
        "--rounds", "2",
        "--tools", "efspurge,find,find-xargs",
        "--json", str(out),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    data = json.loads(out.read_text())
    assert len(data["runs"]) == 4 * 2 * 3
    assert all(run["ok"] for run in data["runs"])
    by_key = {(r["scenario"], r["tool"]): r for r in data["summary"]}
    assert by_key[("flat:300", "find")]["ratio_to_find"] == 1.0
    # The same deterministic tree each time: every tool deleted the same number of files.
    for scenario in ("flat:300", "mixed:400@0.9"):
        deleted = {r["deleted"] for r in data["runs"] if r["scenario"] == scenario}
        assert len(deleted) == 1 and deleted.pop() > 0
    assert "| flat:300 | efspurge |" in result.stdout


def test_benchmark_reports_a_tool_that_deletes_too_much(tmp_path):
    result = run_bench(
        tmp_path,
        "--scenarios", "flat:50",
        "--rounds", "1",
        "--tool", "greedy=find {root} -type f -delete",
        "--tools", "find,greedy",
    )  # fmt: skip
    assert result.returncode == 1
    assert "greedy" in result.stderr and "FAILED" in result.stderr
