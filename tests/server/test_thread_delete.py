"""Deleting a thread whose run is slow to stop: truthful answers, and no run slips in.

A delete waits for the thread's running run to write its last event. If that
takes longer than the delete's wait, the answer is 409 ``conflict`` (retryable),
never 503 "the store is unreachable". While the delete is in progress, the thread
accepts no new run (404), and no tool of the deleted thread ever runs.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
from server_support import User, http, new_user

from tenet.agents import Agent
from tenet.context import RunContext
from tenet.registry import AgentRegistry
from tenet.server import routes
from tenet.testing import ServerHandle
from tenet.tools import tool


@dataclass
class Gates:
    """What the test controls in the slow-stopping tool, and what it saw."""

    started: asyncio.Event = field(default_factory=asyncio.Event)
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    tool_runs: list[str] = field(default_factory=list)


GATES: list[Gates] = []


@tool
async def slow_stop(ctx: RunContext) -> str:
    """Runs until cancelled, then takes until the test lets it finish stopping."""
    gates = GATES[-1]
    gates.tool_runs.append(ctx.run_id)
    gates.started.set()
    try:
        await asyncio.Event().wait()
    except asyncio.CancelledError:
        await gates.stop.wait()
        raise
    return "never"


class SlowStop(Agent):
    def __init__(self) -> None:
        super().__init__(name="slow_stop", tools=[slow_stop])

    async def run(self, ctx: RunContext, input: str) -> str:
        return str(await ctx.call_tool("slow_stop"))


@pytest.fixture
async def slow(server_factory) -> AsyncIterator[tuple[ServerHandle, User, Gates]]:
    GATES.append(Gates())
    try:
        async with server_factory(registry=AgentRegistry([SlowStop()])) as srv:
            yield srv, await new_user(srv), GATES[-1]
    finally:
        GATES[-1].stop.set()
        GATES.pop()


async def _start_slow_run(srv: ServerHandle, user: User, gates: Gates) -> tuple[str, str]:
    async with http(srv, user) as c:
        thread_id = (await c.post("/v1/threads")).json()["id"]
        r = await c.post(f"/v1/threads/{thread_id}/runs", json={"agent": "slow_stop", "input": "x"})
        assert r.status_code == 202
    await asyncio.wait_for(gates.started.wait(), 10)
    return thread_id, r.json()["id"]


async def test_a_delete_that_outwaits_a_run_is_a_retryable_conflict_not_an_outage(
    slow: tuple[ServerHandle, User, Gates], monkeypatch: pytest.MonkeyPatch
) -> None:
    srv, user, gates = slow
    monkeypatch.setattr(routes, "DELETE_WAIT_S", 0.2)
    thread_id, run_id = await _start_slow_run(srv, user, gates)
    async with http(srv, user) as c:
        r = await c.delete(f"/v1/threads/{thread_id}")
        assert r.status_code == 409, r.text
        assert r.json()["error"]["code"] == "conflict"
        assert "store" not in r.json()["error"]["message"]
        assert (await c.get("/healthz")).status_code == 200
        assert (await c.get(f"/v1/threads/{thread_id}")).status_code == 200
        # The delete gave up: the thread accepts runs again (its delete mark is cleared).
        r = await c.post(f"/v1/threads/{thread_id}/runs", json={"agent": "slow_stop", "input": "z"})
        assert r.status_code == 202, r.text
        gates.stop.set()  # the run finishes stopping; the retried delete succeeds
        monkeypatch.setattr(routes, "DELETE_WAIT_S", 10.0)
        r = await c.delete(f"/v1/threads/{thread_id}")
        assert r.status_code == 204, r.text
        assert (await c.get(f"/v1/threads/{thread_id}")).status_code == 404
        assert (await c.get(f"/v1/runs/{run_id}")).status_code == 404


async def test_a_thread_being_deleted_accepts_no_run_and_runs_no_tool(
    slow: tuple[ServerHandle, User, Gates],
) -> None:
    srv, user, gates = slow
    thread_id, first = await _start_slow_run(srv, user, gates)
    engine = srv.service.engine
    async with http(srv, user) as c:
        delete = asyncio.create_task(c.delete(f"/v1/threads/{thread_id}"))
        # The delete is waiting for the first run to stop (its cancel was asked for).
        async with asyncio.timeout(10):
            while (await c.get(f"/v1/runs/{first}")).json()["status"] != "cancelling":
                await asyncio.sleep(0.01)
        r = await c.post(f"/v1/threads/{thread_id}/runs", json={"agent": "slow_stop", "input": "y"})
        assert r.status_code == 404, r.text
        assert r.json()["error"]["code"] == "not_found"
        gates.stop.set()
        assert (await delete).status_code == 204
        # Whatever was accepted has ended; no tool ran but the first run's.
        async with asyncio.timeout(10):
            while engine.counts()["queued"] or engine.running_count:
                await asyncio.sleep(0.01)
        assert gates.tool_runs == [first]
        assert (await c.get(f"/v1/threads/{thread_id}")).status_code == 404
