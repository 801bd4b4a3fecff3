"""Limits at the socket's edge: frame size at the transport, unauthenticated sockets per
address, threads followed per socket."""

from __future__ import annotations

import json
import logging
import os

import pytest
from server_support import (
    ServerFactory,
    close_code,
    http,
    new_user,
    ready,
    recv,
    send,
    until_terminal,
    ws_connect,
)

from tenet.testing import ServerHandle


async def test_an_oversized_frame_closes_with_1009_before_and_after_auth(
    server_factory: ServerFactory,
) -> None:
    async with server_factory(ws_max_frame_bytes=4096) as server:
        transport = server.service.settings.ws_transport_max_bytes
        alice = await new_user(server)
        # Unauthenticated: the transport refuses it from its header, not after buffering it.
        async with ws_connect(server) as ws:
            await ws.send(
                json.dumps({"type": "auth", "token": alice.token, "pad": "x" * transport})
            )
            assert await close_code(ws) == 1009
        async with ws_connect(server, alice) as ws:
            await ready(ws)
            # Over the frame limit: the protocol's too_large answer, and the socket stays open.
            await send(ws, {"type": "ping", "ref": "big", "pad": "y" * 4096})
            answer = await recv(ws)
            assert answer["type"] == "error" and answer["code"] == "too_large", answer
            await send(ws, {"type": "ping", "pad": "y" * transport})
            assert await close_code(ws) == 1009
        async with ws_connect(server, alice) as ws:  # a frame within the limit is served
            await ready(ws)
            await send(ws, {"type": "ping", "pad": "z" * 4000})
            assert (await recv(ws))["type"] == "pong"


async def test_unauthenticated_sockets_are_bounded_per_address(
    server_factory: ServerFactory,
) -> None:
    async with server_factory(ws_max_unauthenticated=2, ws_auth_timeout_s=30) as server:
        alice = await new_user(server)
        async with ws_connect(server) as first, ws_connect(server) as second:
            async with ws_connect(server) as third:
                assert await close_code(third) == 4429
            # A socket with a header authenticates at once: it is never counted as waiting.
            async with ws_connect(server, alice) as with_header:
                await ready(with_header)
            # Once one of them authenticates, its place is free again.
            await send(first, {"type": "auth", "token": alice.token})
            await ready(first)
            async with ws_connect(server) as fourth:
                await send(fourth, {"type": "auth", "token": alice.token})
                await ready(fourth)
            await send(second, {"type": "ping"})
            assert await close_code(second) == 4401  # not an auth frame


async def test_many_refused_sockets_log_a_bounded_number_of_lines_and_count_them_all(
    server_factory: ServerFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """A line per refused socket let anyone write the log as fast as they connect: the
    refusals of one reason within an interval are one line, then one line counting them."""
    caplog.set_level(logging.INFO, logger="tenet.server.ws")
    refused = 40
    async with server_factory(ws_max_unauthenticated=1, ws_auth_timeout_s=30) as server:
        async with ws_connect(server):  # waits for its auth frame: the address's one place
            for _ in range(refused):
                async with ws_connect(server) as extra:
                    assert await close_code(extra) == 4429
    lines = [r.getMessage() for r in caplog.records if "4429" in r.getMessage()]
    assert len(lines) <= 2, lines
    # The first refusal's own line, then "(N more in 10 s)": every refusal is counted once.
    counted = sum(int(ln.rsplit("(", 1)[1].split()[0]) if "more in" in ln else 1 for ln in lines)
    assert counted == refused, lines


async def test_a_socket_follows_a_bounded_number_of_threads(
    server_factory: ServerFactory,
) -> None:
    async with server_factory(ws_max_subscriptions=3) as server:
        alice = await new_user(server)
        async with http(server, alice) as c:
            threads = [(await c.post("/v1/threads")).json()["id"] for _ in range(4)]
        async with ws_connect(server, alice) as ws:
            await ready(ws)
            for thread in threads[:3]:
                await send(ws, {"type": "subscribe", "thread_id": thread})
                assert (await recv(ws))["type"] == "subscribed"
            await send(ws, {"type": "subscribe", "thread_id": threads[3], "ref": "4th"})
            refused = await recv(ws)
            assert (refused["type"], refused["code"], refused["ref"]) == (
                "error",
                "rate_limited",
                "4th",
            )
            # Subscribing again to a followed thread takes no new place (and keeps its age).
            await send(ws, {"type": "subscribe", "thread_id": threads[0], "after": 0})
            assert (await recv(ws))["type"] == "subscribed"
            # A run on a new thread makes room: the oldest subscription is dropped, and said so.
            await send(ws, {"type": "run", "agent": "assistant", "input": "2 + 2"})
            dropped = await recv(ws)
            assert dropped == {"type": "unsubscribed", "thread_id": threads[0]}
            accepted = await recv(ws)
            assert accepted["type"] == "run_accepted"
            frames = await until_terminal(ws, accepted["run_id"])
            assert frames[-1]["type"] == "agent_completed"
            await send(ws, {"type": "unsubscribe", "thread_id": threads[2]})
            assert (await recv(ws))["type"] == "unsubscribed"
            await send(ws, {"type": "subscribe", "thread_id": threads[3]})
            assert (await recv(ws))["type"] == "subscribed"


async def test_a_large_frame_costs_more_of_the_users_rate(server_factory: ServerFactory) -> None:
    async with server_factory(user_rate=0.001, user_burst=20) as server:
        alice, bob = await new_user(server), await new_user(server)
        async with ws_connect(server, alice) as ws:
            await ready(ws)
            big = {"type": "ping", "pad": "p" * 60_000}  # 15 of 20: one more of these is too much
            await send(ws, {**big, "ref": "1"})
            assert await recv(ws) == {"type": "pong", "ref": "1"}
            await send(ws, {**big, "ref": "2"})
            refused = await recv(ws)
            # With its ref: the client knows which request to send again.
            assert (refused["type"], refused["code"], refused.get("ref")) == (
                "error",
                "rate_limited",
                "2",
            )
            for i in range(4):  # small frames still fit in what is left
                await send(ws, {"type": "ping", "ref": f"s{i}"})
                assert (await recv(ws))["type"] == "pong"
        async with ws_connect(server, bob) as ws:  # another user's bucket is whole
            await ready(ws)
            await send(ws, {**big, "ref": "b"})
            assert (await recv(ws))["type"] == "pong"


async def test_a_run_refused_on_a_new_thread_leaves_no_thread_and_follows_nothing(
    server_factory: ServerFactory,
) -> None:
    """A refusal costs nothing: no stored thread, no subscription given up for it.

    fails: the thread was stored before the queue refused the run, so every refused
    run left an empty thread, and made the socket drop the oldest thread it followed.
    """
    async with server_factory(user_max_queued=1, user_max_runs=1, ws_max_subscriptions=2) as s:
        await _refused_runs_leave_nothing(s)


async def test_in_a_cluster_a_run_refused_on_a_new_thread_leaves_no_thread(
    server_factory: ServerFactory, postgres_url: str
) -> None:
    """Only the store counts a cluster's queue, as it stores the run: the thread made for
    the refused run is removed with the refusal."""
    redis_url = os.environ.get("TENET_TEST_REDIS_URL")
    if not redis_url:
        pytest.skip("set TENET_TEST_REDIS_URL to run the cluster tests")
    async with server_factory(
        user_max_queued=1,
        user_max_runs=1,
        ws_max_subscriptions=2,
        database_url=postgres_url,
        redis_url=redis_url,
    ) as s:
        await _refused_runs_leave_nothing(s)


async def _refused_runs_leave_nothing(server: ServerHandle) -> None:
    alice = await new_user(server)
    async with ws_connect(server, alice) as ws:
        await ready(ws)
        dropped: list[dict] = []

        async def answer(ref: str) -> dict:
            while True:
                frame = await recv(ws)
                if frame.get("type") == "unsubscribed":
                    dropped.append(frame)
                if frame.get("ref") == ref:
                    return frame

        body = {"type": "run", "agent": "benchmark", "input": "latency_ms=2000"}
        accepted = []
        for ref in ("running", "queued"):
            await send(ws, {**body, "ref": ref})
            accepted.append(await answer(ref))
        assert [a["type"] for a in accepted] == ["run_accepted", "run_accepted"]
        for i in range(5):
            await send(ws, {**body, "ref": f"over{i}"})
            refused = await answer(f"over{i}")
            assert (refused["type"], refused["code"]) == ("error", "rate_limited"), refused
        assert dropped == []
        async with http(server, alice) as c:
            threads = (await c.get("/v1/threads")).json()
            assert sorted(t["id"] for t in threads) == sorted(a["thread_id"] for a in accepted)
            for a in accepted:
                await c.post(f"/v1/runs/{a['run_id']}/cancel")
        # Still following both accepted runs' threads: the queued run's end arrives.
        await until_terminal(ws, accepted[1]["run_id"])
