"""``tenet bench`` at a tiny scale: it runs end to end and its report has every field.

No figure is asserted (the machines are shared and noisy); only that each one was
measured and that the report is complete. Pointed at a running server (``--url``),
the bench must still report its CPU per run.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tenet.bench.procs import ServerMeter, ServerProcess, cpu_seconds, listening_pid

PHASE_FIELDS = {
    "target", "users", "connected", "runs_per_user", "latency_ms", "events_per_run",
    "runs_completed", "events_received", "errors", "error_samples", "stopped_early", "wall_s",
    "runs_per_s", "events_per_s", "time_to_first_event_ms", "event_latency_ms",
    "run_latency_ms", "fairness", "server_cpu_s", "server_cpu_ms_per_run",
    "server_rss_before_mib", "server_rss_connected_mib", "server_peak_rss_mib",
    "rss_per_connected_user_kib", "driver_processes", "driver_cpu_s", "driver_cpu_us_per_event",
}  # fmt: skip


def bench_report(args: list[str], cwd: Path, timeout: float = 560) -> dict[str, Any]:
    """``tenet bench ARGS --json FILE`` in a process of its own; the report it wrote."""
    report_file = cwd / "bench.json"
    result = subprocess.run(
        [sys.executable, "-m", "tenet.cli", "bench", *args, "--json", str(report_file)],
        cwd=cwd,
        env={**os.environ, "COLUMNS": "200"},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    report: dict[str, Any] = json.loads(report_file.read_text())
    return report


@pytest.mark.timeout(600)
def test_bench_at_tiny_scale_writes_a_complete_report(tmp_path: Path) -> None:
    args = [
        "--users", "1,3", "--runs", "2", "--latency-check-ms", "10",
        "--latency-check-runs", "1", "--idle", "6", "--churn", "4", "--churn-wave", "2",
        "--history-check", "2", "--history-check-runs", "2",
    ]  # fmt: skip
    plot_file = tmp_path / "bench.png"
    try:
        import matplotlib  # noqa: F401

        args += ["--plot", str(plot_file)]
    except ImportError:
        plot_file = None  # type: ignore[assignment]
    report = bench_report(args, tmp_path)

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
    assert report["history"]["turns"] == 2 and report["history"]["runs"] == 2
    # Each target of the table, measured here (U=100 and 1,000 are not: no figure).
    rows = {t["target"].split(" (")[0].split(",")[0]: t for t in report["targets"]}
    assert len(report["targets"]) == 7
    for row in report["targets"]:
        assert row["met"] is None if row["measured"] is None else isinstance(row["met"], bool)
    assert rows["server CPU per 25-event run"]["floor"] is not None
    assert rows["history: its CPU per run"]["measured"] is not None
    assert rows["RSS per idle connected user"]["floor"] is not None
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
    report = bench_report(["--history", "3", "--runs", "2"], tmp_path, timeout=280)
    assert report["turns"] == 3 and report["runs"] == 2
    assert report["cpu_ms_per_run_empty_thread"] > 0
    assert report["cpu_ms_per_run_history_not_read"] > 0
    assert report["history_cpu_ms_per_run"] == round(
        report["cpu_ms_per_run"]["3"] - report["cpu_ms_per_run_history_not_read"], 3
    )
    sizes = {"3", "60", "120"}
    assert set(report["cpu_ms_per_run"]) == set(report["extra_cpu_ms_per_run"]) == sizes
    assert all(v > 0 for v in report["history_read_cpu_ms"].values())
    assert set(report["history_read_cold_cpu_ms"]) == sizes
    # The longest thread holds 120 turns and the 2 measured on it, all within the default
    # budget: each is sent.
    assert report["turns_sent_from_longest_thread"] == 122


# --url: a running server's CPU per run is reported, not left out -------------------------


@pytest.fixture
def served(tmp_path: Path) -> Iterator[ServerProcess]:
    server = ServerProcess("tenet", admin_token=secrets.token_urlsafe(16), workdir=tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.mark.timeout(300)
def test_bench_url_reports_the_running_servers_cpu_per_run(
    served: ServerProcess, tmp_path: Path
) -> None:
    args = [
        "--url", served.url, "--admin-token", served.admin_token, "--users", "5",
        "--runs", "10", "--latency-check-ms", "0", "--idle", "0", "--churn", "0",
    ]  # fmt: skip
    report = bench_report(args, tmp_path, timeout=280)
    # 50 runs: tens of milliseconds of server CPU, several of the kernel's 10 ms ticks.
    assert [p["users"] for p in report["phases"]] == [5]
    for phase in report["phases"]:
        assert phase["errors"] == 0, phase["error_samples"]
        assert phase["runs_completed"] == phase["users"] * 10
        assert phase["server_cpu_source"] == "pid"
        assert phase["server_cpu_ms_per_run"] is not None and phase["server_cpu_ms_per_run"] > 0
        assert phase["server_rss_connected_mib"] > 0
    cpu_row = next(t for t in report["targets"] if t["target"].startswith("server CPU"))
    assert cpu_row["measured"] is not None and cpu_row["measured"] > 0


def test_the_server_is_found_by_its_port_and_metrics_give_the_same_cpu(
    served: ServerProcess,
) -> None:
    assert listening_pid(served.port) == served.pid
    by_pid = ServerMeter.for_url(served.url, served.admin_token)
    assert by_pid.source == "pid" and by_pid.pid == served.pid
    # A server on another machine: its own /metrics (process_cpu_seconds_total).
    remote = ServerMeter("metrics", url=served.url, admin_token=served.admin_token)
    before = cpu_seconds(served.pid)
    from_metrics = remote.cpu_seconds()
    after = cpu_seconds(served.pid)
    assert from_metrics is not None and before - 0.02 <= from_metrics <= after + 0.02
    assert from_metrics > 0
    rss = remote.rss_bytes()
    assert rss is not None and rss > 10 * 1024 * 1024


@pytest.mark.timeout(300)
def test_bench_paused_case_measures_waiting_runs(tmp_path: Path) -> None:
    full = bench_report(["--paused", "60", "--paused-sample", "5"], tmp_path, timeout=280)
    report = full["paused"]
    # 60 runs over 50-run users: two users, and every run paused before it was measured.
    assert report["paused_runs"] == 60 and report["users"] == 2
    assert report["rss_before_mib"] > 0 and report["rss_paused_mib"] > 0
    assert report["rss_per_paused_run_kib"] is not None
    assert report["server_cpu_waiting_ms_per_s"] >= 0 and report["server_cpu_idle_ms_per_s"] >= 0
    # Each sampled run was resumed: its resolution came before its next event.
    resume, resolved = report["resume_to_next_event_ms"], report["answer_to_resolved_ms"]
    assert resume["count"] == resolved["count"] == report["resume_sample"] == 5
    assert 0 < resolved["p50"] <= resume["p50"]
