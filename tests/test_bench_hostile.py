"""``tenet bench --hostile`` at a tiny scale: both phases run in one run, the server survives
the worst inputs, and the report has every figure. No figure is asserted (shared machines
are noisy); the measured numbers live in docs/benchmarks."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.mark.timeout(180)
@pytest.mark.parametrize("inputs", ["worst", "ordinary"])
def test_bench_hostile_reports_both_phases_and_the_server_survives(
    tmp_path: Path, inputs: str
) -> None:
    """``ordinary`` is the control: the extra user floods with the normal users' input."""
    report_file = tmp_path / "hostile.json"
    args = [
        "bench",
        "--hostile",
        "--hostile-users",
        "3",
        "--hostile-seconds",
        "3",
        "--hostile-rounds",
        "2",
        "--hostile-inputs",
        inputs,
    ]
    done = subprocess.run(
        [sys.executable, "-m", "tenet.cli", *args, "--json", str(report_file)],
        capture_output=True,
        text=True,
        timeout=170,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(report_file.read_text())
    assert report["server_survived"] is True
    assert report["inputs"] == inputs
    for phase in ("baseline", "hostile"):
        figures = report[phase]
        assert figures["runs"] > 0 and figures["probes"] > 0, figures
        assert figures["run_p99_ms"] is not None and figures["me_p99_ms"] is not None
    assert report["hostile"]["hostile_actions"] > 0
    assert set(report["added_ms"]) == {"run_p99_ms", "me_p99_ms"}
    assert report["rounds"] == 2
    assert report["baseline"]["server_cpu_per_s"] > 0 < report["hostile"]["server_cpu_per_s"]
    for phase in ("baseline", "hostile"):  # each round's p99, so the spread can be read
        assert len(report[phase]["round_run_p99_ms"]) == 2
        assert report[phase]["server_cpu_wait_per_s"] is not None
    for key in ("run_p99_ms", "me_p99_ms"):
        spread = report["rounds_ms"][key]
        assert set(spread) == {"baseline_spread", "added_median", "added_min", "added_max"}
    assert "GET /v1/me p99" in done.stdout
