"""``kill -9`` while a delegated agent is inside a tool, then a restart: the stream is closed.

A real ``tenet serve`` process (SQLite) is killed with SIGKILL while the run's
delegated agent waits in a tool call. The restarted process closes the open tool
call (``tool_completed``, ok false, code ``interrupted``) and the open delegated
execution (``agent_error``, code ``interrupted``, depth 1) before the run's own
``agent_error`` (code ``interrupted``, depth 0).
"""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
from protocol_checks import assert_run_well_formed

#: Where ``crash_agents`` is, for the served process's import path.
HERE = str(Path(__file__).resolve().parent)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _serve(env: dict[str, str], port: int, log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tenet.cli",
            "serve",
            "--port",
            str(port),
            "--app",
            "crash_agents:registry",
        ],
        env=env,
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
    )


async def _healthy(url: str) -> None:
    async with httpx.AsyncClient(base_url=url, timeout=2) as http:
        for _ in range(300):  # bounded: 30 s
            try:
                if (await http.get("/healthz")).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.1)
    raise AssertionError(f"{url} did not start")


async def _events(http: httpx.AsyncClient, thread: str) -> list[dict[str, Any]]:
    r = await http.get(f"/v1/threads/{thread}/events")
    assert r.status_code == 200, r.text
    return r.json()


async def test_kill_9_inside_a_delegated_tool_then_restart_closes_the_stream(
    tmp_path: Path,
) -> None:
    admin = secrets.token_urlsafe(16)
    here = HERE
    env = {
        **os.environ,
        "TENET_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'tenet.db'}",
        "TENET_ADMIN_TOKEN": admin,
        "TENET_LOG_LEVEL": "WARNING",
        "PYTHONPATH": os.pathsep.join([here, os.environ.get("PYTHONPATH", "")]),
    }
    env.pop("TENET_REDIS_URL", None)
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp_path / "serve.log"
    proc = _serve(env, port, log)
    try:
        await _healthy(url)
        async with httpx.AsyncClient(base_url=url, timeout=10) as http:
            r = await http.post(
                "/v1/users", json={"name": "crash"}, headers={"Authorization": f"Bearer {admin}"}
            )
            http.headers["Authorization"] = f"Bearer {r.json()['token']}"
            thread = (await http.post("/v1/threads")).json()["id"]
            r = await http.post(
                f"/v1/threads/{thread}/runs", json={"agent": "parent", "input": "x"}
            )
            run_id = r.json()["id"]
            for _ in range(300):  # bounded: until the child's tool call is stored
                if any(e["type"] == "tool_executing" for e in await _events(http, thread)):
                    break
                await asyncio.sleep(0.1)
            before = await _events(http, thread)
        assert [e["type"] for e in before] == ["agent_started", "agent_started", "tool_executing"]
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)

        proc = _serve(env, port, log)
        await _healthy(url)
        async with httpx.AsyncClient(base_url=url, timeout=10) as http:
            http.headers["Authorization"] = r.request.headers["Authorization"]
            run = (await http.get(f"/v1/runs/{run_id}")).json()
            events = await _events(http, thread)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
    added = events[len(before) :]
    assert [(e["type"], e.get("depth")) for e in added] == [
        ("tool_completed", None),
        ("agent_error", 1),
        ("agent_error", 0),
    ], added
    assert all((e.get("error") or {}).get("code") == "interrupted" for e in added), added
    assert added[0]["execution_id"] == before[1]["execution_id"] == added[1]["execution_id"]
    assert run["status"] == "failed" and run["error"]["code"] == "interrupted"
    assert_run_well_formed(events)
