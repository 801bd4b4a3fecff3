"""A refused run stores nothing, whichever way it is asked for and whatever refuses it.

A run refused (queue full, quota used up, a bad request) leaves no thread, no run,
no event and no AG-UI mapping behind, gives up none of the socket's followed
threads, and the socket goes on answering. Tried here the ways a careless or
hostile client would: on new and existing threads, over WebSocket, AG-UI and
HTTP, alone and racing, embedded and in a cluster.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
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
    stored_events,
    until_terminal,
    ws_connect,
)
from test_ag_ui import run_input

from tenet.errors import RateLimited
from tenet.store.ag_ui_threads import AgUiThreads
from tenet.store.db import Store
from tenet.store.migrate import upgrade
from tenet.testing import ServerHandle

SLOW = {"type": "run", "agent": "benchmark", "input": "latency_ms=3000"}


def _cluster(postgres_url: str) -> dict[str, Any]:
    redis_url = os.environ.get("TENET_TEST_REDIS_URL")
    if not redis_url:
        pytest.skip("set TENET_TEST_REDIS_URL to run the cluster tests")
    return {"database_url": postgres_url, "redis_url": redis_url}


async def _answer(ws: Any, ref: str, seen: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """The frame answering ``ref``; every frame before it goes to ``seen``."""
    while True:
        frame = await recv(ws, timeout=10)
        if seen is not None:
            seen.append(frame)
        if frame.get("ref") == ref:
            return frame


async def _started(ws: Any, run_id: str) -> None:
    while True:
        frame = await recv(ws, timeout=10)
        if frame.get("run_id") == run_id and frame.get("type") == "agent_started":
            return


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
            if ref == "running":
                await _started(ws, answer["run_id"])  # a cluster counts it queued until claimed
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
            body = run_input("hello", client_id)
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


async def test_in_a_cluster_an_ag_ui_run_refused_on_a_known_thread_id_keeps_its_thread(
    server_factory: ServerFactory, postgres_url: str
) -> None:
    """The refusal removes only a thread made for the refused run, never one already
    mapped (with its runs)."""
    settings = _cluster(postgres_url)
    async with server_factory(user_max_queued=1, user_max_runs=1, **settings) as s:
        alice = await new_user(s)
        async with http(s, alice) as c:
            r = await c.post("/v1/agents/benchmark/ag-ui", json=run_input("hi", "known"))
            assert r.status_code == 200
        threads = AgUiThreads(s.service.store)
        known = await threads.find(alice.user_id, "known")
        accepted = await _fill_queue(s, alice)
        async with http(s, alice) as c:
            r = await c.post("/v1/agents/assistant/ag-ui", json=run_input("hi", "known"))
            assert r.status_code == 429, r.text
        assert await threads.find(alice.user_id, "known") == known
        assert known in await _thread_ids(s, alice)
        events = await stored_events(s, alice, known)
        assert [e["type"] for e in events][-1] == "agent_completed"
        await _cancel(s, alice, accepted)


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
        await _ag_ui_runs_racing(s)


async def test_in_a_cluster_ag_ui_runs_racing_for_the_last_queue_place_leave_one_thread(
    server_factory: ServerFactory, postgres_url: str
) -> None:
    settings = _cluster(postgres_url)
    async with server_factory(user_max_queued=1, user_max_runs=1, **settings) as s:
        await _ag_ui_runs_racing(s)


async def _ag_ui_runs_racing(s: ServerHandle) -> None:
    alice = await new_user(s)
    async with ws_connect(s, alice) as ws:
        await ready(ws)
        await send(ws, {**SLOW, "ref": "running"})
        running = await _answer(ws, "running")
        await _started(ws, running["run_id"])  # a cluster counts it queued until claimed
    client_ids = [f"race-{i}" for i in range(6)]
    async with http(s, alice) as c:

        async def post(client_id: str) -> int:
            body = run_input("latency_ms=3000", client_id)
            async with c.stream("POST", "/v1/agents/benchmark/ag-ui", json=body) as r:
                return r.status_code  # hang up: the run goes on

        codes = await asyncio.gather(*(post(i) for i in client_ids))
    assert sorted(codes) == [200] + [429] * 5, codes
    threads = AgUiThreads(s.service.store)
    mapped = [i for i in client_ids if await threads._find(alice.user_id, i) is not None]
    assert len(mapped) == 1, mapped
    assert len(await _thread_ids(s, alice)) == 2  # the running run's, the queued one's
    await _cancel(s, alice, [running])


async def test_an_ag_ui_run_over_the_daily_quota_leaves_no_thread(
    server_factory: ServerFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with server_factory(user_tokens_per_day=10) as s:
        alice = await new_user(s)

        async def used_up(user_id: str) -> int:
            return 10

        monkeypatch.setattr(s.service.engine.quota, "used_today", used_up)
        async with http(s, alice) as c:
            r = await c.post("/v1/agents/assistant/ag-ui", json=run_input("hi", "q"))
        assert r.status_code == 429 and r.json()["error"]["code"] == "quota_exceeded", r.text
        assert await _thread_ids(s, alice) == []
        assert await AgUiThreads(s.service.store)._find(alice.user_id, "q") is None


# WebSocket --------------------------------------------------------------------------------------


async def _ws_refusals_on_an_existing_thread_keep_it(server: ServerHandle) -> None:
    """A run refused on a thread that has runs: the thread, its runs and events stay."""
    alice = await new_user(server)
    async with ws_connect(server, alice) as ws:
        await ready(ws)
        await send(ws, {**SLOW, "ref": "running"})
        running = await _answer(ws, "running")
        thread_id = running["thread_id"]
        await _started(ws, running["run_id"])  # a cluster counts it queued until claimed
        await send(ws, {**SLOW, "thread_id": thread_id, "ref": "queued"})
        queued = await _answer(ws, "queued")
        assert queued["type"] == "run_accepted", queued
        async with ws_connect(server, alice) as other:  # not following the thread
            await ready(other)
            for i in range(3):
                await send(other, {**SLOW, "thread_id": thread_id, "ref": f"over{i}"})
                refused = await _answer(other, f"over{i}")
                assert (refused["type"], refused.get("code")) == ("error", "rate_limited")
            await send(other, {"type": "ping", "ref": "p"})
            assert (await _answer(other, "p"))["type"] == "pong"
        assert await _thread_ids(server, alice) == [thread_id]
        async with http(server, alice) as c:
            runs = [running["run_id"], queued["run_id"]]
            for run_id in runs:
                assert (await c.get(f"/v1/runs/{run_id}")).status_code == 200
        await _cancel(server, alice, [running, queued])
        await until_terminal(ws, queued["run_id"])
    assert await _thread_ids(server, alice) == [thread_id]


async def test_a_run_refused_on_an_existing_thread_keeps_that_thread(
    server_factory: ServerFactory,
) -> None:
    async with server_factory(user_max_queued=1, user_max_runs=1) as s:
        await _ws_refusals_on_an_existing_thread_keep_it(s)


async def test_in_a_cluster_a_run_refused_on_an_existing_thread_keeps_that_thread(
    server_factory: ServerFactory, postgres_url: str
) -> None:
    settings = _cluster(postgres_url)
    async with server_factory(user_max_queued=1, user_max_runs=1, **settings) as s:
        await _ws_refusals_on_an_existing_thread_keep_it(s)


async def _sockets_racing_leave_one_thread(server: ServerHandle) -> None:
    """Six sockets of one user ask for a run on a new thread at once, one place left."""
    alice = await new_user(server)
    async with ws_connect(server, alice) as ws:
        await ready(ws)
        await send(ws, {**SLOW, "ref": "running"})
        running = await _answer(ws, "running")
        assert running["type"] == "run_accepted", running
        await _started(ws, running["run_id"])

        async with contextlib.AsyncExitStack() as stack:
            socks = [await stack.enter_async_context(ws_connect(server, alice)) for _ in range(6)]
            for sock in socks:
                await ready(sock)
            # All sent before any is read: the six run frames are handled at once.
            await asyncio.gather(*(send(sock, {**SLOW, "ref": "r"}) for sock in socks))
            answers = [await _answer(sock, "r") for sock in socks]
            for sock in socks:
                await send(sock, {"type": "ping", "ref": "p"})
                assert (await _answer(sock, "p"))["type"] == "pong"
        won = [a for a in answers if a["type"] == "run_accepted"]
        assert len(won) == 1, answers
        assert {a.get("code") for a in answers if a not in won} == {"rate_limited"}
        expected = sorted([running["thread_id"], won[0]["thread_id"]])
        assert await _thread_ids(server, alice) == expected
        await _cancel(server, alice, [running, won[0]])


async def test_sockets_racing_for_the_last_queue_place_leave_no_refused_thread(
    server_factory: ServerFactory,
) -> None:
    async with server_factory(user_max_queued=1, user_max_runs=1) as s:
        await _sockets_racing_leave_one_thread(s)


async def test_in_a_cluster_sockets_racing_for_the_last_queue_place_leave_no_refused_thread(
    server_factory: ServerFactory, postgres_url: str
) -> None:
    settings = _cluster(postgres_url)
    async with server_factory(user_max_queued=1, user_max_runs=1, **settings) as s:
        await _sockets_racing_leave_one_thread(s)


async def test_concurrent_runs_of_one_user_on_many_threads_keep_the_stored_queue_limit(
    postgres_url: str,
) -> None:
    """The store's queue limit (a cluster's only one) as processes reach it: at once,
    each storing a run on its own thread. At most ``max_queued`` may be stored.

    fails: each statement counted the queued runs without those being stored beside it
    (READ COMMITTED): 8 of 8 stored with a limit of 1, and a user's many sockets or
    AG-UI requests queued past the limit.
    """
    store = Store(postgres_url)
    await upgrade(store.engine)
    try:
        user, _ = await store.create_user("racer")
        threads = [(await store.create_thread(user.id)).id for _ in range(8)]
        # Each on its own pooled connection, as separate requests (and processes) are.
        await asyncio.gather(*(store.get_thread(user.id, t) for t in threads))

        async def one(thread_id: str) -> bool:
            try:
                await store.create_run(user.id, thread_id, "benchmark", "hi", max_queued=1)
            except RateLimited:
                return False
            return True

        stored = await asyncio.gather(*(one(t) for t in threads))
    finally:
        await store.close()
    assert sum(stored) == 1, stored


async def test_bad_run_frames_store_nothing_and_the_socket_goes_on(
    server_factory: ServerFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with server_factory(max_input_chars=100, user_tokens_per_day=10) as s:
        alice = await new_user(s)
        bad: list[tuple[dict[str, Any], str]] = [
            ({"type": "run", "agent": "nobody", "input": "hi"}, "invalid"),
            ({"type": "run", "agent": "assistant", "input": "x" * 101}, "too_large"),
            ({"type": "run", "agent": "assistant", "input": 7}, "invalid"),
            ({"type": "run", "agent": "assistant", "input": "hi", "metadata": [1]}, "invalid"),
            (
                {
                    "type": "run",
                    "agent": "assistant",
                    "input": "hi",
                    "metadata": {"k": "x" * 17000},
                },
                "too_large",
            ),
            ({"type": "run", "agent": "assistant", "input": "hi", "thread_id": 5}, "not_found"),
            (
                {"type": "run", "agent": "assistant", "input": "hi", "thread_id": "thr_x"},
                "not_found",
            ),
        ]
        async with ws_connect(s, alice) as ws:
            await ready(ws)
            for i, (frame, code) in enumerate(bad):
                await send(ws, {**frame, "ref": f"b{i}"})
                answer = await _answer(ws, f"b{i}")
                assert (answer["type"], answer.get("code")) == ("error", code), (frame, answer)

            async def used_up(user_id: str) -> int:
                return 10

            with monkeypatch.context() as m:
                m.setattr(s.service.engine.quota, "used_today", used_up)
                await send(ws, {"type": "run", "agent": "assistant", "input": "hi", "ref": "q"})
                answer = await _answer(ws, "q")
                assert answer.get("code") == "quota_exceeded", answer
            assert await _thread_ids(s, alice) == []
            await send(ws, {"type": "run", "agent": "assistant", "input": "hi", "ref": "ok"})
            ok = await _answer(ws, "ok")
            assert ok["type"] == "run_accepted", ok
            await until_terminal(ws, ok["run_id"])
        assert await _thread_ids(s, alice) == [ok["thread_id"]]


async def test_the_subscription_limit_at_its_boundary(server_factory: ServerFactory) -> None:
    """Following as many threads as allowed: a refused run on a new thread drops none, a run
    on a followed thread drops none, an accepted run on a new thread drops the oldest."""
    async with server_factory(ws_max_subscriptions=2, user_max_queued=1, user_max_runs=1) as s:
        alice = await new_user(s)
        async with http(s, alice) as c:
            t1, t2 = [(await c.post("/v1/threads", json={})).json()["id"] for _ in range(2)]
        async with ws_connect(s, alice) as ws:
            await ready(ws)
            seen: list[dict[str, Any]] = []
            for t in (t1, t2):
                await send(ws, {"type": "subscribe", "thread_id": t, "ref": t})
                assert (await _answer(ws, t, seen))["type"] == "subscribed"
            # Busy: one running, one queued, on t2 (followed: nothing dropped).
            await send(ws, {**SLOW, "thread_id": t2, "ref": "running"})
            running = await _answer(ws, "running", seen)
            await send(ws, {**SLOW, "thread_id": t2, "ref": "queued"})
            queued = await _answer(ws, "queued", seen)
            assert running["type"] == queued["type"] == "run_accepted"
            # Refused: on a new thread, on a followed one, on an unfollowed existing one.
            async with http(s, alice) as c:
                t3 = (await c.post("/v1/threads", json={})).json()["id"]
            for ref, extra in (
                ("new", {}),
                ("followed", {"thread_id": t1}),
                ("t3", {"thread_id": t3}),
            ):
                await send(ws, {**SLOW, **extra, "ref": ref})
                answer = await _answer(ws, ref, seen)
                assert answer.get("code") == "rate_limited", answer
            # A fourth subscription is refused outright (subscribe does not make room).
            await send(ws, {"type": "subscribe", "thread_id": t3, "ref": "sub3"})
            assert (await _answer(ws, "sub3", seen)).get("code") == "rate_limited"
            assert [f for f in seen if f["type"] == "unsubscribed"] == []
            await _cancel(s, alice, [queued])
            await until_terminal(ws, queued["run_id"])  # still followed
            # Now accepted on t3: t1, the oldest, makes room, and only it.
            await send(
                ws,
                {"type": "run", "agent": "benchmark", "input": "hi", "thread_id": t3, "ref": "acc"},
            )
            seen.clear()
            accepted = await _answer(ws, "acc", seen)
            assert accepted["type"] == "run_accepted", accepted
            assert [f["thread_id"] for f in seen if f["type"] == "unsubscribed"] == [t1]
            await _cancel(s, alice, [running])
            await until_terminal(ws, running["run_id"])  # t2 still followed
            await until_terminal(ws, accepted["run_id"])  # and t3


async def test_an_http_run_refused_stores_no_run(server_factory: ServerFactory) -> None:
    async with server_factory(user_max_queued=1, user_max_runs=1) as s:
        alice = await new_user(s)
        accepted = await _fill_queue(s, alice)
        thread_id = accepted[0]["thread_id"]
        async with http(s, alice) as c:
            for _ in range(3):
                r = await c.post(
                    f"/v1/threads/{thread_id}/runs", json={"agent": "benchmark", "input": "over"}
                )
                assert r.status_code == 429 and r.json()["error"]["code"] == "rate_limited"
            messages = (await c.get(f"/v1/threads/{thread_id}/messages")).json()
        assert [m["content"] for m in messages if m["role"] == "user"] == [SLOW["input"]]
        await _cancel(s, alice, accepted)


async def test_a_run_refused_by_admission_never_makes_a_thread(
    server_factory: ServerFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not made and removed: never made (no write, and no thread another request could
    see meanwhile). The other tests here see only that none is left."""
    async with server_factory(user_max_queued=1, user_max_runs=1) as s:
        alice = await new_user(s)
        accepted = await _fill_queue(s, alice)
        store = s.service.store
        made: list[str] = []
        create_thread = store.create_thread

        async def counted(user_id: str, *args: Any, **kwargs: Any) -> Any:
            thread = await create_thread(user_id, *args, **kwargs)
            made.append(thread.id)
            return thread

        monkeypatch.setattr(store, "create_thread", counted)
        async with ws_connect(s, alice) as ws:
            await ready(ws)
            await send(ws, {**SLOW, "ref": "over"})
            assert (await _answer(ws, "over")).get("code") == "rate_limited"
        async with http(s, alice) as c:
            r = await c.post("/v1/agents/assistant/ag-ui", json=run_input("hi", "new"))
            assert r.status_code == 429
        assert made == []
        await _cancel(s, alice, accepted)


async def test_runs_asked_for_while_shutting_down_store_nothing(
    server_factory: ServerFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with server_factory() as s:
        alice = await new_user(s)
        async with http(s, alice) as c:
            thread_id = (await c.post("/v1/threads", json={})).json()["id"]
            async with ws_connect(s, alice) as ws:
                await ready(ws)
                with monkeypatch.context() as m:
                    m.setattr(s.service.engine, "_closing", True)
                    await send(ws, {**SLOW, "ref": "new"})
                    assert (await _answer(ws, "new")).get("code") == "unavailable"
                    await send(ws, {**SLOW, "thread_id": thread_id, "ref": "old"})
                    assert (await _answer(ws, "old")).get("code") == "unavailable"
                    r = await c.post("/v1/agents/assistant/ag-ui", json=run_input("hi", "s"))
                    assert r.status_code == 503, r.text
                    body = {"agent": "benchmark", "input": "hi"}
                    r = await c.post(f"/v1/threads/{thread_id}/runs", json=body)
                    assert r.status_code == 503, r.text
                await send(ws, {"type": "ping", "ref": "p"})
                assert (await _answer(ws, "p"))["type"] == "pong"
            assert (await c.get(f"/v1/threads/{thread_id}/messages")).json() == []
        assert await _thread_ids(s, alice) == [thread_id]
        assert await AgUiThreads(s.service.store)._find(alice.user_id, "s") is None


# The start-up heap --------------------------------------------------------------------------------


async def test_the_history_bench_freezes_only_while_it_measures() -> None:
    """It runs inside another process (``tenet bench``): frozen while it measures, as a
    served process is, and the process's heap collected normally again after, even
    when it fails part-way."""
    from tenet.bench.history import measure

    before = gc.get_freeze_count()
    seen: list[int] = []

    def progress(_what: str, _done: int, _total: int | None) -> None:
        seen.append(gc.get_freeze_count())

    report = await measure(1, 1, progress)
    assert report["turns"] == 1
    assert seen and min(seen) > before + 10_000, seen
    assert gc.get_freeze_count() == before

    def fails(_what: str, _done: int, _total: int | None) -> None:
        raise RuntimeError("stop")

    with pytest.raises(RuntimeError):
        await measure(1, 1, fails)
    assert gc.get_freeze_count() == before
