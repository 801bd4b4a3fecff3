"""Graceful shutdown of real ``tenet serve`` processes (SIGTERM), embedded and in a cluster.

On SIGTERM a process refuses new runs (HTTP 503 ``unavailable``, error frame
``unavailable``, ``/healthz`` 503), lets running runs finish for
``TENET_SHUTDOWN_GRACE_S``, then stops the rest: embedded, with ``run_cancelled``
reason ``shutdown``; in a cluster, a run that has emitted nothing goes back to
the queue and any other ends the same way. Sockets close with 1001, every event
sent was stored, and queued runs run after a restart (or on another process).
"""

from __future__ import annotations

import asyncio
import json
import secrets
import signal
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from reliability_support import ServeProcess, serve_process
from sqlalchemy.engine import make_url
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

TERMINAL = {"agent_completed", "agent_error", "run_cancelled"}


def is_terminal(e: dict[str, Any]) -> bool:
    return e["type"] == "run_cancelled" or (e["type"] in TERMINAL and e.get("depth") == 0)


async def make_user(url: str, admin: str) -> str:
    async with httpx.AsyncClient(base_url=url) as http:
        r = await http.post(
            "/v1/users",
            json={"name": "u-" + secrets.token_hex(3)},
            headers={"Authorization": f"Bearer {admin}"},
        )
        r.raise_for_status()
        return str(r.json()["token"])


async def run_frame(ws: Any, ref: str, input: str, thread_id: str | None = None) -> None:
    frame = {"type": "run", "agent": "benchmark", "input": input, "ref": ref}
    if thread_id:
        frame["thread_id"] = thread_id
    await ws.send(json.dumps(frame))


async def read_until_closed(ws: Any, frames: list[dict[str, Any]], timeout: float) -> int | None:
    try:
        async with asyncio.timeout(timeout):
            async for raw in ws:
                frames.append(json.loads(raw))
    except ConnectionClosed:
        pass
    return ws.close_code


async def stored(url: str, token: str, thread_id: str) -> list[dict[str, Any]]:
    async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {token}"}) as h:
        r = await h.get(f"/v1/threads/{thread_id}/events")
        assert r.status_code == 200
        return list(r.json())


async def run_status(url: str, token: str, run_id: str) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {token}"}) as h:
        return dict((await h.get(f"/v1/runs/{run_id}")).json())


async def wait_status(url: str, token: str, run_id: str, want: set[str], timeout: float = 20):
    async with asyncio.timeout(timeout):
        while True:
            run = await run_status(url, token, run_id)
            if run["status"] in want:
                return run
            await asyncio.sleep(0.1)


def assert_thread_whole(events: list[dict[str, Any]]) -> None:
    """Seq 1..n with no gap, and each run ends with exactly one terminal event, last."""
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    by_run: dict[str, list[dict[str, Any]]] = {}
    for e in events:
        by_run.setdefault(e["run_id"], []).append(e)
    for run_events in by_run.values():
        assert sum(1 for e in run_events if is_terminal(e)) == 1, run_events
        assert is_terminal(run_events[-1])


async def test_sigterm_drains_embedded_server_and_restart_loses_nothing(tmp_path: Path) -> None:
    admin = secrets.token_urlsafe(16)
    env = {
        "TENET_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'tenet.db'}",
        "TENET_ADMIN_TOKEN": admin,
        "TENET_SHUTDOWN_GRACE_S": "2",
        "TENET_LOG_LEVEL": "WARNING",
    }
    log = tmp_path / "serve.log"
    frames: list[dict[str, Any]] = []
    async with serve_process(env, log) as proc:
        token = await make_user(proc.url, admin)
        headers = {"Authorization": f"Bearer {token}"}
        ws = await connect(proc.ws_url, additional_headers=headers)
        assert json.loads(await ws.recv())["type"] == "ready"
        await run_frame(ws, "short", "latency_ms=400 events=8")  # ends within the grace
        await run_frame(ws, "long", "latency_ms=20000 events=8")  # outlives it
        accepted: dict[str, dict[str, Any]] = {}
        started: set[str] = set()
        async with asyncio.timeout(10):
            while len(started) < 2 or len(accepted) < 2:
                frame = json.loads(await ws.recv())
                frames.append(frame)
                if frame["type"] == "run_accepted":
                    accepted[frame["ref"]] = frame
                elif frame["type"] == "agent_started":
                    started.add(frame["run_id"])
        long_thread = accepted["long"]["thread_id"]
        await run_frame(ws, "queued", "latency_ms=0 events=6", long_thread)  # waits for "long"

        proc.signal(signal.SIGTERM)
        await asyncio.sleep(0.5)
        async with httpx.AsyncClient(base_url=proc.url, headers=headers) as http:
            refused = await http.post(
                f"/v1/threads/{long_thread}/runs", json={"agent": "benchmark", "input": "x"}
            )
            health = await http.get("/healthz")
        assert refused.status_code == 503
        assert refused.json()["error"]["code"] == "unavailable"
        assert health.status_code == 503
        await run_frame(ws, "late", "events=5")
        code = await read_until_closed(ws, frames, timeout=15)
        assert code == 1001
        assert await proc.wait_exit() in (0, -signal.SIGTERM)

    by_ref = {f["ref"]: f for f in frames if f["type"] == "run_accepted"}
    errors = [f for f in frames if f["type"] == "error"]
    assert [(e.get("ref"), e["code"]) for e in errors] == [("late", "unavailable")]
    ends = {f["run_id"]: f for f in frames if f["type"] in TERMINAL and is_terminal(f)}
    assert ends[by_ref["short"]["run_id"]]["type"] == "agent_completed"  # the grace was honoured
    long_end = ends[by_ref["long"]["run_id"]]
    assert (long_end["type"], long_end["reason"]) == ("run_cancelled", "shutdown")
    assert by_ref["queued"]["run_id"] not in ends  # it never started

    # A restart picks up the queued run; every event sent before the stop was stored.
    async with serve_process(env, log) as proc:
        queued = await wait_status(proc.url, token, by_ref["queued"]["run_id"], {"completed"})
        assert queued["status"] == "completed"
        assert (await run_status(proc.url, token, by_ref["long"]["run_id"]))["status"] == (
            "cancelled"
        )
        received = [f for f in frames if "seq" in f]
        for thread_id in {f["thread_id"] for f in received}:
            events = await stored(proc.url, token, thread_id)
            assert_thread_whole(events)
            by_seq = {e["seq"]: e for e in events}
            for f in received:
                if f["thread_id"] == thread_id:
                    assert by_seq[f["seq"]] == f  # sent means stored, byte for byte


async def test_sigterm_in_a_cluster_hands_queued_work_to_another_process(
    postgres_url: str, tmp_path: Path
) -> None:
    import os
    import shutil

    if not os.environ.get("TENET_TEST_REDIS_URL") or shutil.which("redis-server") is None:
        pytest.skip("set TENET_TEST_REDIS_URL (and install redis-server) for the cluster test")
    from cluster_support import cluster

    async with cluster(postgres_url, tmp_path, nodes=2, shutdown_grace_s="1") as c:
        _user_id, token = await c.user("alice")
        headers = {"Authorization": f"Bearer {token}"}
        async with httpx.AsyncClient(base_url=c.nodes[0].url, headers=headers) as http:
            thread = (await http.post("/v1/threads")).json()["id"]
            long = (
                await http.post(
                    f"/v1/threads/{thread}/runs",
                    json={"agent": "benchmark", "input": "latency_ms=20000 events=8"},
                )
            ).json()["id"]
            after = (
                await http.post(
                    f"/v1/threads/{thread}/runs",
                    json={"agent": "benchmark", "input": "latency_ms=0 events=6"},
                )
            ).json()["id"]
        await wait_status(c.nodes[0].url, token, long, {"running"})
        dsn = make_url(postgres_url).set(drivername="postgresql")
        conn = await asyncpg.connect(dsn.render_as_string(hide_password=False))
        try:
            worker = await conn.fetchval("SELECT worker_id FROM runs WHERE id = $1", long)
        finally:
            await conn.close()
        pid = int(worker.split(":")[1])
        executing = next(n for n in c.nodes if n.process.pid == pid)
        other = next(n for n in c.nodes if n is not executing)

        # Watch the thread from the process that stays, and hold a socket on the one that goes.
        watcher = await connect(
            other.url.replace("http", "ws") + "/v1/ws", additional_headers=headers
        )
        leaving = await connect(
            executing.url.replace("http", "ws") + "/v1/ws", additional_headers=headers
        )
        for ws in (watcher, leaving):
            assert json.loads(await ws.recv())["type"] == "ready"
        await watcher.send(json.dumps({"type": "subscribe", "thread_id": thread}))

        executing.process.send_signal(signal.SIGTERM)
        await asyncio.sleep(0.3)
        async with httpx.AsyncClient(base_url=executing.url, headers=headers) as http:
            refused = await http.post(
                f"/v1/threads/{thread}/runs", json={"agent": "benchmark", "input": "x"}
            )
        assert (refused.status_code, refused.json()["error"]["code"]) == (503, "unavailable")
        leaving_frames: list[dict[str, Any]] = []
        assert await read_until_closed(leaving, leaving_frames, timeout=15) == 1001

        # The run that had streamed ends with run_cancelled(shutdown); the queued one runs
        # on the other process.
        seen: list[dict[str, Any]] = []
        async with asyncio.timeout(20):
            while not any(f.get("run_id") == after and is_terminal(f) for f in seen if "seq" in f):
                seen.append(json.loads(await watcher.recv()))
        await watcher.close()
        events = [f for f in seen if "seq" in f]
        ends = {e["run_id"]: e for e in events if is_terminal(e)}
        assert (ends[long]["type"], ends[long]["reason"]) == ("run_cancelled", "shutdown")
        assert ends[after]["type"] == "agent_completed"
        started = [e for e in events if e["type"] == "agent_started" and e["depth"] == 0]
        assert sorted(e["run_id"] for e in started) == sorted([long, after])  # once each
        stored_events = await stored(other.url, token, thread)
        assert_thread_whole(stored_events)
        assert stored_events == events
        assert executing.process.wait(20) in (0, -signal.SIGTERM)


__all__ = ["ServeProcess"]
