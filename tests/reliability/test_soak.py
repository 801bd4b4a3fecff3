"""A one-minute soak at small scale: ``tenet bench --soak 1`` must lose and duplicate nothing.

Timings are not asserted (CI machines vary); what is asserted is the promise:
every event a user's runs stored reached that user exactly once, in order,
through disconnects, resumes, cancels, slow reading, failing tools and timeouts.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

#: The keys of a soak report that must all be 0.
FAULTS = ("lost", "duplicated", "gaps", "mismatched", "phantom", "unfinished_runs")


def _soak(out: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "tenet.cli",
            "bench",
            "--soak",
            "1",
            "--soak-users",
            "6",
            "--json",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=240,
    )


@pytest.mark.timeout(300)  # a minute of load, then every user's events are checked
def test_one_minute_soak_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    out = tmp_path / "soak.json"
    proc = _soak(out)
    assert out.exists(), proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads(out.read_text())
    # A fault names its thread, the events missing and how the user followed the thread.
    assert report["faults"] == [], json.dumps(report["faults"], indent=1)[:20_000]
    assert report["runs_started"] > 50  # a real workload ran
    assert report["events_stored"] > 1000
    assert report["reconnects"] > 0 and sum(report["outcomes"].values()) == report["runs_started"]
    for kind in ("agent_error:timeout", "agent_error:agent_error"):  # the faults happened
        assert report["outcomes"].get(kind, 0) > 0, report["outcomes"]
    for key in FAULTS:
        assert report[key] == 0, (key, report)
    assert report["events_received"] == report["events_stored"]
    assert "error_frame:internal" not in report["errors"]
    assert report["rss_slope_mib_per_min"] is not None
    assert proc.returncode == 0, proc.stdout[-3000:]
