"""``tenet bench --url``: a running server's CPU per run is reported, not left out.

A real ``tenet serve`` runs in a process of its own on this machine; the bench is
pointed at it and must find its CPU (by the PID listening on its port, or read from
its ``/metrics``), as it does for the servers it starts itself.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tenet.bench.procs import ServerMeter, ServerProcess, cpu_seconds, listening_pid


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
    report_file = tmp_path / "bench.json"
    args = [
        sys.executable, "-m", "tenet.cli", "bench", "--url", served.url,
        "--admin-token", served.admin_token, "--users", "1,4", "--runs", "3",
        "--latency-check-ms", "0", "--idle", "0", "--churn", "0", "--json", str(report_file),
    ]  # fmt: skip
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
    assert [p["users"] for p in report["phases"]] == [1, 4]
    for phase in report["phases"]:
        assert phase["errors"] == 0, phase["error_samples"]
        assert phase["runs_completed"] == phase["users"] * 3
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
