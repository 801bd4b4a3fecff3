"""``tenet bench`` at a tiny scale: it runs end to end and its report has every field.

No figure is asserted (the machines are shared and noisy); only that each one was
measured and that the report is complete.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

PHASE_FIELDS = {
    "target", "users", "connected", "runs_per_user", "latency_ms", "events_per_run",
    "runs_completed", "events_received", "errors", "error_samples", "stopped_early", "wall_s",
    "runs_per_s", "events_per_s", "time_to_first_event_ms", "event_latency_ms",
    "run_latency_ms", "fairness", "server_cpu_s", "server_cpu_ms_per_run",
    "server_rss_before_mib", "server_rss_connected_mib", "server_peak_rss_mib",
    "rss_per_connected_user_kib", "driver_processes", "driver_cpu_s", "driver_cpu_us_per_event",
}  # fmt: skip


@pytest.mark.timeout(300)
def test_bench_at_tiny_scale_writes_a_complete_report(tmp_path: Path) -> None:
    report_file = tmp_path / "bench.json"
    args = [
        sys.executable, "-m", "tenet.cli", "bench", "--users", "1,3", "--runs", "2",
        "--latency-check-ms", "10", "--latency-check-runs", "1", "--idle", "6",
        "--churn", "4", "--churn-wave", "2", "--json", str(report_file),
    ]  # fmt: skip
    plot_file = tmp_path / "bench.png"
    try:
        import matplotlib  # noqa: F401

        args += ["--plot", str(plot_file)]
    except ImportError:
        plot_file = None  # type: ignore[assignment]
    result = subprocess.run(
        args,
        cwd=tmp_path,
        env={**os.environ, "COLUMNS": "200"},
        capture_output=True,
        text=True,
        timeout=280,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    report = json.loads(report_file.read_text())

    assert {"command", "machine", "config", "phases", "comparison", "latency_check"} <= set(report)
    assert report["machine"]["nproc"] >= 1 and report["machine"]["python"]
    kinds = {(p["target"], p["users"]) for p in report["phases"]}
    assert kinds == {(k, u) for k in ("tenet", "floor", "naive") for u in (1, 3)}
    for phase in report["phases"] + report["latency_check"]["phases"]:
        assert PHASE_FIELDS <= set(phase), PHASE_FIELDS - set(phase)
        assert phase["errors"] == 0, phase["error_samples"]
        assert phase["runs_completed"] == phase["users"] * phase["runs_per_user"]
        assert phase["events_received"] == phase["runs_completed"] * 25
        for key in ("p50", "p95", "p99"):
            assert phase["event_latency_ms"][key] is not None
        assert phase["time_to_first_event_ms"]["p50"] is not None
        assert phase["server_cpu_s"] is not None and phase["server_peak_rss_mib"] > 0
    for row in report["comparison"]:
        assert row["fraction_of_floor"] > 0 and row["multiple_of_naive"] > 0
    assert report["latency_check"]["ratio"] > 0
    assert report["latency_check"]["floor_ratio"] > 0  # the stack alone, same check
    assert {i["target"] for i in report["idle"]} == {"tenet", "floor"}
    assert all(i["connected"] == 6 for i in report["idle"])
    assert report["churn"]["users"] == 4 and report["churn"]["runs"] == 4
    assert {t["target"] for t in report["targets"]}
    if plot_file is not None:
        assert plot_file.stat().st_size > 0


def test_auth_bench_measures_jwt_verification_with_one_jwks_fetch() -> None:
    from tenet.bench.auth import run_auth_bench

    report = run_auth_bench(requests=40)
    assert report["verify"]["jwks_fetches"] == 1  # 80 tokens with cached keys: one fetch
    for alg in ("RS256", "ES256"):
        for what in ("verify", "signature", "verify_repeat"):
            row = report["verify"][alg][what]
            assert 0 < row["p50_us"] <= row["p90_us"] <= row["p99_us"]
        assert "overhead_us" in report["verify"][alg]
    assert report["ok"] == (report["worst_p50_us"] < report["goal_p50_us"])
    assert report["worst_p50_us"] == max(
        report["verify"][a]["verify"]["p50_us"] for a in ("RS256", "ES256")
    )
    assert set(report["sign_in"]) == {"token", "jwt_new", "jwt_repeat", "jwt_new_over_token"}


def test_protocol_bench_delivers_every_event_over_both_protocols(tmp_path: Path) -> None:
    out = tmp_path / "protocols.json"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "tenet.cli",
            "bench",
            "--protocol",
            "ag-ui",
            "--users",
            "3",
            "--runs",
            "2",
            "--events",
            "12",
            "--json",
            str(out),
        ],
        check=True,
        timeout=300,
        env={**os.environ, "TENET_LOG_LEVEL": "WARNING"},
    )
    report = json.loads(out.read_text())
    assert [p["protocol"] for p in report["phases"]] == ["tenet", "ag-ui", "ag-ui", "tenet"]
    for phase in report["phases"]:
        assert phase["tenet_events"] == 3 * 2 * 12, phase  # every event of every run, once
    assert report["ratio"] is not None and report["goal"] == 0.8


@pytest.mark.timeout(300)
def test_bench_history_case_reports_the_extra_cpu_per_run(tmp_path: Path) -> None:
    report_file = tmp_path / "history.json"
    args = [sys.executable, "-m", "tenet.cli", "bench", "--history", "3", "--runs", "2"]
    result = subprocess.run(
        [*args, "--json", str(report_file)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=280,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    report = json.loads(report_file.read_text())
    assert report["turns"] == 3 and report["runs"] == 2
    assert report["cpu_ms_per_run_empty_thread"] > 0
    assert set(report["cpu_ms_per_run"]) == set(report["extra_cpu_ms_per_run"]) == {"3", "60"}
    assert all(v > 0 for v in report["history_read_cpu_ms"].values())
    # The longest thread holds 60 turns and the 2 measured on it, all within the default
    # budget: each is sent.
    assert report["turns_sent_from_longest_thread"] == 62


@pytest.mark.timeout(300)
def test_bench_paused_case_measures_waiting_runs(tmp_path: Path) -> None:
    report_file = tmp_path / "paused.json"
    args = [sys.executable, "-m", "tenet.cli", "bench", "--paused", "60", "--paused-sample", "5"]
    result = subprocess.run(
        [*args, "--json", str(report_file)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=280,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    report = json.loads(report_file.read_text())["paused"]
    # 60 runs over 50-run users: two users, and every run paused before it was measured.
    assert report["paused_runs"] == 60 and report["users"] == 2
    assert report["rss_before_mib"] > 0 and report["rss_paused_mib"] > 0
    assert report["rss_per_paused_run_kib"] is not None
    assert report["server_cpu_waiting_ms_per_s"] >= 0 and report["server_cpu_idle_ms_per_s"] >= 0
    # Each sampled run was resumed: its resolution came before its next event.
    resume, resolved = report["resume_to_next_event_ms"], report["answer_to_resolved_ms"]
    assert resume["count"] == resolved["count"] == report["resume_sample"] == 5
    assert 0 < resolved["p50"] <= resume["p50"]
    assert "paused runs" in result.stdout
