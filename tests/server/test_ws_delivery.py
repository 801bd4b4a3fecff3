"""Delivery under stress: a client too slow to read, and a client that drops mid-run."""

from __future__ import annotations

import asyncio
import socket

from server_support import (
    close_code,
    http,
    new_user,
    ready,
    recv,
    send,
    stored_events,
    until_terminal,
    ws_connect,
)
from websockets.asyncio.client import connect

from tenet.agents import Agent
from tenet.context import RunContext
from tenet.examples import default_registry
from tenet.registry import AgentRegistry
from tenet.testing import ServerHandle


class Flood(Agent):
    """Streams large pieces of answer: megabytes that a socket which is not read cannot absorb.

    (Loopback kernel buffers grow to several MB, so small events would all fit in them.)
    """

    def __init__(self) -> None:
        super().__init__(name="flood", description="Streams `count` pieces of 32 KiB.")

    async def run(self, ctx: RunContext, input: str) -> str:
        count = int(input)
        for i in range(count):
            await ctx.say(f"{i:06d}" + "x" * 32_768)
        return f"flooded {count}"


def _registry() -> AgentRegistry:
    return AgentRegistry([*default_registry(), Flood()])


def _tiny_receive_socket(server: ServerHandle) -> socket.socket:
    """A client socket with a tiny receive window, so a client that does not read blocks the server."""
    host, port = server.url.removeprefix("http://").split(":")
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect((host, int(port)))
    sock.setblocking(False)
    return sock


async def test_a_client_that_never_reads_gets_4008_while_20_others_finish(server_factory) -> None:
    async with server_factory(registry=_registry(), ws_queue=32) as srv:
        slow_user = await new_user(srv, "slow")
        slow = await connect(
            srv.ws_url,
            sock=_tiny_receive_socket(srv),
            additional_headers=slow_user.headers,
            max_queue=1,
            compression=None,
        )
        try:
            await ready(slow)
            await send(slow, {"type": "run", "agent": "flood", "input": "400"})
            # From here on, the slow client reads nothing until the server gave up on it.

            async def normal_user(i: int) -> list[int]:
                user = await new_user(srv, f"normal-{i}")
                async with ws_connect(srv, user) as ws:
                    await ready(ws)
                    await send(ws, {"type": "run", "agent": "benchmark", "input": "events=150"})
                    accepted = await recv(ws)
                    frames = await until_terminal(ws, accepted["run_id"], timeout=60)
                    assert frames[-1]["type"] == "agent_completed"
                    assert all(f["user_id"] == user.user_id for f in frames)
                    return [f["seq"] for f in frames]

            results = await asyncio.gather(*(normal_user(i) for i in range(20)))
            assert all(seqs == list(range(1, 151)) for seqs in results)

            metrics = srv.app.state.tenet.metrics
            async with asyncio.timeout(30):
                while metrics.queue_overflows._value.get() < 1:
                    await asyncio.sleep(0.05)
            assert metrics.queue_overflows._value.get() == 1  # only the slow socket
            # Once it reads again it finds what was sent, then the close code.
            assert await close_code(slow, timeout=30) == 4008
        finally:
            await slow.close()
        # Its run was not hurt: it completes and every event is stored, to resume with after=.
        async with http(srv, slow_user) as c:
            thread_id = (await c.get("/v1/threads")).json()[0]["id"]
            async with asyncio.timeout(30):
                while True:
                    events = (
                        await c.get(f"/v1/threads/{thread_id}/events", params={"after": 398})
                    ).json()
                    if events and events[-1]["type"] == "agent_completed":
                        break
                    await asyncio.sleep(0.05)
            assert [e["seq"] for e in events] == [399, 400, 401, 402]


async def test_dropped_mid_run_and_resumed_with_after_loses_and_repeats_nothing(
    server: ServerHandle,
) -> None:
    user = await new_user(server, "dropper")
    async with ws_connect(server, user) as ws:
        await ready(ws)
        await send(ws, {"type": "run", "agent": "benchmark", "input": "events=3000"})
        accepted = await recv(ws)
        run_id, thread_id = accepted["run_id"], accepted["thread_id"]
        before = [await recv(ws) for _ in range(100)]
    # Dropped mid-run as the client sees it: 2,900 of the run's events, its end
    # included, were not received. (The server may finish the run meanwhile: on this
    # stack 3,000 events take a fraction of a second; the resume must not care.)
    assert before[-1]["seq"] == 100 and before[-1]["type"] == "message_delta"
    last_seq = before[-1]["seq"]
    async with ws_connect(server, user) as ws:
        await ready(ws)
        await send(ws, {"type": "subscribe", "thread_id": thread_id, "after": last_seq})
        subscribed = await recv(ws)
        assert subscribed["type"] == "subscribed" and subscribed["last_seq"] >= last_seq
        after = await until_terminal(ws, run_id, timeout=60)
    received = before + after
    assert [f["seq"] for f in received] == list(range(1, 3001))
    stored = await stored_events(server, user, thread_id)
    stored += await _rest(server, user, thread_id, after=1000)
    assert received == stored


async def _rest(server: ServerHandle, user, thread_id: str, *, after: int) -> list[dict]:
    out: list[dict] = []
    async with http(server, user) as c:
        while True:
            page = (
                await c.get(
                    f"/v1/threads/{thread_id}/events", params={"after": after, "limit": 1000}
                )
            ).json()
            if not page:
                return out
            out += page
            after = page[-1]["seq"]
