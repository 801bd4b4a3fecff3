"""Every number a client sends is range-checked before it reaches a driver.

Cursors are 0 to 2**63 - 1 on every backend (stored counters are 64-bit): a
cursor in that range is an ordinary cursor (past the last event: nothing), one
beyond it is 422 ``invalid`` over HTTP and SSE and an ``invalid`` error frame
over WebSocket, and an out-of-range ``Last-Event-ID`` is ignored like any
invalid one. Never a 500, never a stream that delivers nothing.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from server_support import (
    User,
    http,
    new_user,
    ready,
    recv,
    send,
    sse_events,
    wait_run,
    ws_connect,
)

from tenet.settings import Settings
from tenet.testing import ServerHandle, running_server

SEQ_MAX = 2**63 - 1


@pytest.fixture
async def any_server(database_url: str) -> AsyncIterator[ServerHandle]:
    """A server on SQLite, and on Postgres when configured."""
    async with running_server(Settings(database_url=database_url)) as srv:
        yield srv


async def _thread_with_a_run(server: ServerHandle, user: User) -> str:
    async with http(server, user) as c:
        thread_id = (await c.post("/v1/threads")).json()["id"]
        r = await c.post(
            f"/v1/threads/{thread_id}/runs", json={"agent": "assistant", "input": "hi"}
        )
        assert r.status_code == 202
        await wait_run(server, r.json()["id"])
    return thread_id


@pytest.mark.parametrize("after", [2**31, 2**32 + 1, SEQ_MAX])
async def test_a_cursor_past_every_event_but_in_range_is_an_empty_answer(
    any_server: ServerHandle, after: int
) -> None:
    user = await new_user(any_server)
    thread_id = await _thread_with_a_run(any_server, user)
    async with http(any_server, user) as c:
        r = await c.get(f"/v1/threads/{thread_id}/events", params={"after": after})
    assert r.status_code == 200, r.text
    assert r.json() == []


@pytest.mark.parametrize(
    "params",
    [{"after": 2**63}, {"after": 2**64 + 5}, {"after": -1}, {"limit": 2**63}, {"limit": 0}],
)
async def test_an_out_of_range_events_query_is_invalid(
    any_server: ServerHandle, params: dict[str, int]
) -> None:
    user = await new_user(any_server)
    thread_id = await _thread_with_a_run(any_server, user)
    async with http(any_server, user) as c:
        r = await c.get(f"/v1/threads/{thread_id}/events", params=params)
        assert r.status_code == 422, r.text
        assert r.json()["error"]["code"] == "invalid"
        r = await c.get("/v1/threads", params={"limit": 2**70})
        assert r.status_code == 422


async def test_an_out_of_range_sse_cursor_is_invalid_before_the_stream(
    any_server: ServerHandle,
) -> None:
    user = await new_user(any_server)
    thread_id = await _thread_with_a_run(any_server, user)
    async with http(any_server, user) as c:
        r = await c.get(f"/v1/threads/{thread_id}/stream", params={"after": 2**63})
    assert r.status_code == 422
    assert r.json()["error"]["code"] == "invalid"


@pytest.mark.parametrize("header", [str(2**63), str(2**64), "99999999999999999999999", "-3"])
async def test_an_out_of_range_last_event_id_is_ignored(
    any_server: ServerHandle, header: str
) -> None:
    user = await new_user(any_server)
    thread_id = await _thread_with_a_run(any_server, user)
    got = await sse_events(
        any_server, user, thread_id, count=2, headers={"Last-Event-ID": header}, timeout=10
    )
    assert [int(seq) for seq, _, _ in got] == [1, 2]


async def test_a_large_in_range_last_event_id_is_a_cursor(any_server: ServerHandle) -> None:
    """2**31 overflowed Postgres's 32-bit seq: the stream then never delivered anything."""
    user = await new_user(any_server)
    thread_id = await _thread_with_a_run(any_server, user)
    # The header wins over after=0; a later run's events are past it, so nothing comes:
    # but the stream is open and healthy, which the ping-free open comment shows.
    async with http(any_server, user) as c:
        async with c.stream(
            "GET",
            f"/v1/threads/{thread_id}/stream",
            headers={"Last-Event-ID": str(2**31)},
        ) as r:
            assert r.status_code == 200
            async for line in r.aiter_lines():
                assert line == ": stream open"
                break
        # The follower behind the stream did not crash: the same cursor still answers.
        r = await c.get(f"/v1/threads/{thread_id}/events", params={"after": 2**31})
        assert r.status_code == 200 and r.json() == []


async def test_websocket_subscribe_range_checks_after(any_server: ServerHandle) -> None:
    user = await new_user(any_server)
    thread_id = await _thread_with_a_run(any_server, user)
    async with ws_connect(any_server, user) as ws:
        await ready(ws)
        for bad in (2**63, 2**80, -1):
            await send(ws, {"type": "subscribe", "thread_id": thread_id, "after": bad, "ref": "x"})
            frame = await recv(ws)
            assert frame["type"] == "error" and frame["code"] == "invalid", frame
        await send(ws, {"type": "subscribe", "thread_id": thread_id, "after": SEQ_MAX})
        frame = await recv(ws)
        assert frame["type"] == "subscribed", frame
        await send(ws, {"type": "subscribe", "thread_id": thread_id, "after": 2**31})
        frame = await recv(ws)
        assert frame["type"] == "subscribed", frame
        await send(ws, {"type": "ping"})
        assert (await recv(ws))["type"] == "pong"


async def test_a_number_beyond_64_bits_in_a_socket_frame_is_refused_as_over_http(
    any_server: ServerHandle,
) -> None:
    """fails: the frame's parser read such a number as a float, so the run was accepted
    with metadata that no longer held the number sent (HTTP answers 422 ``invalid``)."""
    user = await new_user(any_server)
    async with ws_connect(any_server, user) as ws:
        await ready(ws)
        for i, number in enumerate(("18446744073709551616", "-18446744073709551616", "9" * 300)):
            frame = (
                f'{{"type": "run", "agent": "assistant", "input": "hi", "ref": "w{i}", '
                f'"metadata": {{"n": {number}}}}}'
            )
            await ws.send(frame)
            answer = await recv(ws)
            assert (answer["type"], answer.get("code"), answer.get("ref")) == (
                "error",
                "invalid",
                f"w{i}",
            ), answer
        # Past a double's range the frame is not read at all: still an invalid frame.
        await ws.send('{"type": "run", "agent": "assistant", "input": "hi", "n": %s}' % ("9" * 400))
        assert (await recv(ws))["code"] == "invalid"
        # Long runs of digits elsewhere (a string, a number in range) change nothing.
        await send(
            ws,
            {
                "type": "run",
                "agent": "assistant",
                "input": "card 12345678901234567890123",
                "metadata": {"n": 2**64 - 1, "s": "1" * 40},
                "ref": "ok",
            },
        )
        accepted = await recv(ws)
        assert accepted["type"] == "run_accepted", accepted
    stored = await any_server.service.store.get_run(user.user_id, accepted["run_id"])
    assert stored.meta == {"n": 2**64 - 1, "s": "1" * 40}
