"""The isolation guard stops, logs and counts a frame of another user at the wire.

Routing never produces such a frame, so these tests forge one: a bus event under
a thread the receiver is subscribed to but stamped with another user, and a
direct call of the connection's last sending step.
"""

from __future__ import annotations

import asyncio
import logging

import orjson
import pytest
from server_support import User, http, ready, recv, send, sse_events, ws_connect

from tenet.events import Event
from tenet.ids import new_id
from tenet.testing import ServerHandle


def _forged(victim: User, thread_id: str, seq: int) -> Event:
    """An event of ``victim`` published on a thread that is not theirs (a routing bug)."""
    data = {
        "type": "message_delta",
        "event_id": new_id("evt"),
        "seq": seq,
        "user_id": victim.user_id,
        "thread_id": thread_id,
        "run_id": new_id("run"),
        "execution_id": new_id("exe"),
        "agent_name": "assistant",
        "timestamp": "2026-11-29T06:00:00.000Z",
        "text": "victim's secret",
    }
    return Event(
        data=data,
        user_id=victim.user_id,
        thread_id=thread_id,
        run_id=data["run_id"],
        seq=seq,
        json=orjson.dumps(data).decode(),
    )


def _violations(server: ServerHandle) -> float:
    return server.app.state.tenet.metrics.isolation_violations._value.get()


async def test_websocket_never_sends_another_users_event(
    server: ServerHandle, alice: User, bob: User, caplog: pytest.LogCaptureFixture
) -> None:
    async with http(server, alice) as c:
        thread = (await c.post("/v1/threads", json={})).json()["id"]
    async with ws_connect(server, alice) as ws:
        await ready(ws)
        await send(ws, {"type": "subscribe", "thread_id": thread})
        assert (await recv(ws))["type"] == "subscribed"
        with caplog.at_level(logging.CRITICAL, logger="tenet.isolation"):
            server.service.bus.publish(thread, _forged(bob, thread, seq=1))
            await send(ws, {"type": "ping"})
            assert await recv(ws) == {"type": "pong"}  # the forged event was not sent
            assert _violations(server) == 1
            # The last sending step itself refuses it too.
            (conn,) = server.app.state.tenet.live.of_user(alice.user_id)
            assert conn.send_event(_forged(bob, thread, seq=2).json) is False
            assert _violations(server) == 2
            assert conn.send_event('{"not": "an event"}') is False
        assert any(r.levelno == logging.CRITICAL for r in caplog.records)
        await send(ws, {"type": "ping"})
        assert await recv(ws) == {"type": "pong"}
    async with http(server) as c:
        r = await c.get("/metrics", headers={"Authorization": f"Bearer {server.admin_token}"})
    assert "tenet_isolation_violations_total 3.0" in r.text


async def test_sse_never_sends_another_users_event(
    server: ServerHandle, alice: User, bob: User
) -> None:
    async with http(server, alice) as c:
        thread = (await c.post("/v1/threads", json={})).json()["id"]

    async def forge_then_run() -> None:
        async with asyncio.timeout(10):  # until the stream follows the thread (a loaded
            while not server.service.bus.has_subscribers(thread):  # machine can take long)
                await asyncio.sleep(0.01)
        server.service.bus.publish(thread, _forged(bob, thread, seq=1))
        await asyncio.sleep(0.1)
        # A real event follows; its seq 1 was "taken" by the forgery, so the stream backfills it.
        async with http(server, alice) as c:
            await c.post(
                f"/v1/threads/{thread}/runs", json={"agent": "benchmark", "input": "events=5"}
            )

    task = asyncio.create_task(forge_then_run())
    got = await sse_events(server, alice, thread, count=4)
    await task
    assert all(d["user_id"] == alice.user_id for _, _, d in got)
    assert _violations(server) == 1
