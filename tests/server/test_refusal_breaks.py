"""A refused run stores nothing, whichever way it is asked for and whatever refuses it.

A run refused (queue full, quota used up, a bad request) leaves no thread, no run,
no event and no AG-UI mapping behind, gives up none of the socket's followed
threads, and the socket goes on answering. Tried here the ways a careless or
hostile client would: on new and existing threads, over WebSocket, AG-UI and
HTTP, alone and racing, embedded and in a cluster.
"""

from __future__ import annotations

import asyncio
import os
import secrets
from typing import Any

import httpx
import pytest
from server_support import (
    ServerFactory,
    User,
    http,
    new_user,
    ready,
    recv,
    send,
    ws_connect,
)

from tenet.store.ag_ui_threads import AgUiThreads
from tenet.testing import ServerHandle

SLOW = {"type": "run", "agent": "benchmark", "input": "latency_ms=3000"}


def _cluster(postgres_url: str) -> dict[str, Any]:
    redis_url = os.environ.get("TENET_TEST_REDIS_URL")
    if not redis_url:
        pytest.skip("set TENET_TEST_REDIS_URL to run the cluster tests")
    return {"database_url": postgres_url, "redis_url": redis_url}


def _ag_ui_body(text: str, thread_id: str) -> dict[str, Any]:
    return {
        "threadId": thread_id,
        "runId": "r-" + secrets.token_hex(4),
        "messages": [{"id": "m-" + secrets.token_hex(4), "role": "user", "content": text}],
        "tools": [],
        "context": [],
        "state": {},
        "forwardedProps": {},
    }


async def _answer(ws: Any, ref: str, seen: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """The frame answering ``ref``; every frame before it goes to ``seen``."""
    while True:
        frame = await recv(ws, timeout=10)
        if seen is not None:
            seen.append(frame)
        if frame.get("ref") == ref:
            return frame


async def _thread_ids(server: ServerHandle, user: User) -> list[str]:
    async with http(server, user) as c:
        r = await c.get("/v1/threads")
        assert r.status_code == 200
        return sorted(t["id"] for t in r.json())


async def _fill_queue(server: ServerHandle, user: User) -> list[dict[str, Any]]:
    """One running and one queued slow run (user_max_runs=1, user_max_queued=1)."""
    accepted = []
    async with ws_connect(server, user) as ws:
        await ready(ws)
        for ref in ("running", "queued"):
            await send(ws, {**SLOW, "ref": ref})
            answer = await _answer(ws, ref)
            assert answer["type"] == "run_accepted", answer
            accepted.append(answer)
    return accepted


async def _cancel(server: ServerHandle, user: User, runs: list[dict[str, Any]]) -> None:
    async with http(server, user) as c:
        for run in runs:
            await c.post(f"/v1/runs/{run['run_id']}/cancel")


# AG-UI ------------------------------------------------------------------------------------------


async def _ag_ui_refusals_leave_nothing(server: ServerHandle, *, concurrent: bool) -> None:
    alice = await new_user(server)
    accepted = await _fill_queue(server, alice)
    before = await _thread_ids(server, alice)
    client_ids = [f"over-{i}" for i in range(6)]
    async with http(server, alice) as c:

        async def post(client_id: str) -> httpx.Response:
            body = _ag_ui_body("hello", client_id)
            return await c.post("/v1/agents/assistant/ag-ui", json=body)

        if concurrent:
            answers = await asyncio.gather(*(post(i) for i in client_ids))
        else:
            answers = [await post(i) for i in client_ids]
    assert [r.status_code for r in answers] == [429] * len(client_ids), [r.text for r in answers]
    assert {r.json()["error"]["code"] for r in answers} == {"rate_limited"}
    # No thread made for a refused run, and no client thread id mapped to one.
    assert await _thread_ids(server, alice) == before
    threads = AgUiThreads(server.service.store)
    mapped = [i for i in client_ids if await threads._find(alice.user_id, i) is not None]
    assert mapped == []
    await _cancel(server, alice, accepted)


async def test_in_a_cluster_an_ag_ui_run_refused_for_a_full_queue_leaves_no_thread(
    server_factory: ServerFactory, postgres_url: str
) -> None:
    """fails: AG-UI made and mapped the thread before ``submit``, and in a cluster only
    the store counts the queue: every refusal left a thread and a mapping behind."""
    settings = _cluster(postgres_url)
    async with server_factory(user_max_queued=1, user_max_runs=1, **settings) as s:
        await _ag_ui_refusals_leave_nothing(s, concurrent=False)


async def test_an_ag_ui_run_refused_for_a_full_queue_leaves_no_thread(
    server_factory: ServerFactory,
) -> None:
    async with server_factory(user_max_queued=1, user_max_runs=1) as s:
        await _ag_ui_refusals_leave_nothing(s, concurrent=False)


async def test_ag_ui_runs_racing_for_the_last_queue_place_leave_no_thread_when_refused(
    server_factory: ServerFactory,
) -> None:
    """Several AG-UI runs pass admission at once for one free place: the losers are
    refused by ``submit``, after their threads were made.

    fails: each loser's thread and mapping stayed (4 of 6 client ids mapped).
    """
    async with server_factory(user_max_queued=1, user_max_runs=1) as s:
        alice = await new_user(s)
        async with ws_connect(s, alice) as ws:
            await ready(ws)
            await send(ws, {**SLOW, "ref": "running"})
            running = await _answer(ws, "running")
        client_ids = [f"race-{i}" for i in range(6)]
        async with http(s, alice) as c:

            async def post(client_id: str) -> int:
                body = _ag_ui_body("latency_ms=3000", client_id)
                async with c.stream("POST", "/v1/agents/benchmark/ag-ui", json=body) as r:
                    return r.status_code  # hang up: the run goes on

            codes = await asyncio.gather(*(post(i) for i in client_ids))
        assert sorted(codes) == [200] + [429] * 5, codes
        threads = AgUiThreads(s.service.store)
        mapped = [i for i in client_ids if await threads._find(alice.user_id, i) is not None]
        assert len(mapped) == 1, mapped
        assert len(await _thread_ids(s, alice)) == 2  # the running run's, the queued one's
        await _cancel(s, alice, [running])
