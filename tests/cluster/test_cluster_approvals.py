"""A cluster: the process a run waited on is killed, and an answer resumes the run elsewhere.

Two real ``tenet serve`` processes on one Postgres and one Redis, serving the
approval test agents. The waiting run holds no process: its requests and state
are in the store, the sweeper leaves it alone (it is not running), and the
answer given to the surviving process queues it for whichever process claims it.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import asyncpg
import orjson
import pytest
from cluster_support import cluster
from sqlalchemy.engine import make_url

from tenet.client import Client

SERVER_TESTS = Path(__file__).resolve().parent.parent / "server"


async def _worker_pid(database_url: str, run_id: str) -> int:
    dsn = make_url(database_url).set(drivername="postgresql").render_as_string(hide_password=False)
    conn = await asyncpg.connect(dsn)
    try:
        worker = await conn.fetchval("SELECT worker_id FROM runs WHERE id = $1", run_id)
    finally:
        await conn.close()
    return int(str(worker).split(":")[1])


async def _until(events: Any, stop: Any) -> list[dict[str, Any]]:
    out = []
    async with asyncio.timeout(30):
        async for event in events:
            out.append(event)
            if stop(event):
                return out
    return out


async def test_a_waiting_run_outlives_its_process(
    postgres_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    effects = tmp_path / "effects.txt"
    monkeypatch.setenv("PYTHONPATH", str(SERVER_TESTS))  # where the served agents are
    async with cluster(
        postgres_url,
        tmp_path,
        nodes=2,
        app="approval_agents:registry",
        test_effects=str(effects),
    ) as c:
        _, token = await c.user("alice")
        clients = [Client(n.url, token) for n in c.nodes]
        try:
            input = orjson.dumps([["delete", {"path": "a"}]]).decode()
            run = await clients[0].run("guarded", input)
            asked = await _until(run.events(), lambda e: e["type"] == "approval_requested")
            run_id, thread_id = run.id, run.thread_id
            pid = await _worker_pid(postgres_url, run_id)
            dead = next(n for n in c.nodes if n.process.pid == pid)
            alive = next(n for n in c.nodes if n is not dead)
            dead.kill()
            survivor = clients[alive.index]
            # Well past the sweeper's dead-worker limit, the run still waits.
            for _ in range(30):
                assert (await survivor.get_run(run_id))["status"] == "requires_action"
                await asyncio.sleep(0.1)
            waiting = await survivor.runs("requires_action")
            assert [r["id"] for r in waiting] == [run_id]
            answered = await survivor.approve(run_id, "call_0", True)
            assert answered["id"] == run_id
            after = await _until(
                survivor.subscribe(thread_id, after=asked[-1]["seq"]),
                lambda e: e["type"] in ("agent_completed", "agent_error", "run_cancelled"),
            )
            kinds = [e["type"] for e in after]
            assert kinds[0] == "approval_resolved", kinds
            assert kinds.index("approval_resolved") < kinds.index("tool_executing")
            assert after[-1]["type"] == "agent_completed", after[-1]
            assert after[-1]["final_response"] == 'results: "deleted a"'
            assert (await survivor.get_run(run_id))["status"] == "completed"
        finally:
            for client in clients:
                await client.close()
    assert effects.read_text().splitlines() == ["deleted a"]
