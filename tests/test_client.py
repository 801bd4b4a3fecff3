"""tenet.client against a real server: a real uvicorn on a free loopback port.

The drops are real too: the server closes a socket through its own connection
registry (the code path a slow client's 4008 takes), or a TCP relay between
client and server cuts the connection with no close frame at all (1006). Every
check compares what the client yielded with what the server stored.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from tenet import Settings
from tenet.client import Client, ClientError
from tenet.events import is_terminal
from tenet.testing import ServerHandle, running_server

#: Many words, streamed with a pause between them: a run long enough to drop mid-way.
LONG_INPUT = " ".join(f"word{i}" for i in range(120))


@pytest.fixture
def settings(tmp_path: Path) -> Callable[..., Settings]:
    def make(**overrides: Any) -> Settings:
        overrides.setdefault("database_url", f"sqlite+aiosqlite:///{tmp_path / 'tenet.db'}")
        return Settings(**overrides)

    return make


@pytest.fixture
async def server(settings: Callable[..., Settings]) -> AsyncIterator[ServerHandle]:
    # Every word its own event (never joined): a run of well over 100 events.
    async with running_server(settings(scripted_token_latency_ms=3, delta_interval_ms=0)) as handle:
        yield handle


def drop_sockets(handle: ServerHandle, user_id: str, code: int = 4008) -> int:
    """Close the user's open sockets from the server side, as a queue overflow does."""
    conns = [c for c in handle.app.state.tenet.live.of_user(user_id) if c.close_code is None]
    for conn in conns:
        conn.request_close(code)
    return len(conns)


class Relay:
    """A TCP relay in front of the server whose connections can be cut without a close frame."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self._pairs: list[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = []
        self._server: asyncio.Server | None = None

    async def start(self) -> Relay:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        self._pairs.append((writer, up_writer))

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    def cut(self) -> int:
        """Abort every relayed connection: the client sees the socket die (1006)."""
        pairs, self._pairs = self._pairs, []
        for a, b in pairs:
            a.transport.abort()
            b.transport.abort()
        return len(pairs)

    async def stop(self) -> None:
        self.cut()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()


def assert_one_run(events: list[dict[str, Any]], run_id: str) -> None:
    """PROTOCOL.md's shape of a run: agent_started first, exactly one terminal, last."""
    assert events, "no events"
    assert all(e["run_id"] == run_id for e in events)
    assert events[0]["type"] == "agent_started" and events[0]["depth"] == 0
    assert is_terminal(events[-1])
    assert sum(is_terminal(e) for e in events) == 1


# Runs and events ---------------------------------------------------------------------------------


async def test_a_run_yields_its_events_in_order_from_agent_started_to_one_terminal(
    server: ServerHandle,
) -> None:
    _, token = await server.create_user("alice")
    async with Client(server.url, token) as c:
        run = await c.run("assistant", "what is 6*7?")
        events = [e async for e in run.events()]
        result = await run.result()
        stored = await c.events(run.thread_id)
        again = [e async for e in run.events()]  # a second reading replays, not re-waits

    assert_one_run(events, run.id)
    assert [e["type"] for e in events] == [
        "agent_started",
        "agent_thinking",
        "tool_executing",
        "tool_completed",
        "agent_thinking",
        "message_delta",
        "message_delta",
        "message_delta",
        "message_delta",
        "agent_completed",
    ]
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert events == stored
    assert again == events
    assert result["id"] == run.id and result["status"] == "completed"
    assert result["output"] == "The answer is 42."


async def test_a_second_run_on_a_thread_yields_only_its_own_events(server: ServerHandle) -> None:
    _, token = await server.create_user("alice")
    async with Client(server.url, token) as c:
        first = await c.run("assistant", "what is 2+2?")
        await first.result()
        second = await c.run("assistant", "what is 3+3?", thread_id=first.thread_id)
        events = [e async for e in second.events()]
        stored = await c.events(first.thread_id)

    assert second.thread_id == first.thread_id
    assert_one_run(events, second.id)
    assert events == [e for e in stored if e["run_id"] == second.id]
    assert events[-1]["final_response"] == "The answer is 6."


async def test_cancel_ends_the_run_with_run_cancelled(server: ServerHandle) -> None:
    _, token = await server.create_user("alice")
    async with Client(server.url, token) as c:
        run = await c.run("benchmark", "latency_ms=30000")
        events = []
        async for event in run.events():
            events.append(event)
            if event["type"] == "agent_started":
                await run.cancel()
        result = await run.result()

    assert_one_run(events, run.id)
    assert events[-1]["type"] == "run_cancelled"
    assert result["status"] == "cancelled"


# Surviving drops -----------------------------------------------------------------------------------


async def test_events_survive_a_server_side_close_mid_run_exactly_once(
    server: ServerHandle,
) -> None:
    user_id, token = await server.create_user("alice")
    async with Client(server.url, token) as c:
        run = await c.run("assistant", LONG_INPUT)
        events = []
        dropped_mid_run = False
        async with asyncio.timeout(30):  # a client that does not resume would wait forever
            async for event in run.events():
                events.append(event)
                if len(events) in (10, 60):
                    assert drop_sockets(server, user_id) == 1
                    dropped_mid_run = (await c.get_run(run.id))["status"] == "running"
        stored = await c.events(run.thread_id)
        reconnects = c.reconnects

    assert dropped_mid_run, "the run ended before the drop: make it longer"
    assert reconnects == 2
    assert_one_run(events, run.id)
    assert len(events) > 100
    assert [e["event_id"] for e in events] == [e["event_id"] for e in stored]
    assert events == stored


async def test_events_survive_a_connection_cut_without_a_close_frame(
    server: ServerHandle,
) -> None:
    _, token = await server.create_user("alice")
    relay = await Relay(int(server.url.rsplit(":", 1)[1])).start()
    try:
        async with Client(f"http://127.0.0.1:{relay.port}", token) as c:
            run = await c.run("assistant", LONG_INPUT)
            events = []
            async with asyncio.timeout(30):
                async for event in run.events():
                    events.append(event)
                    if len(events) == 20:
                        assert relay.cut() >= 1
            stored = await c.events(run.thread_id)
            reconnects = c.reconnects
    finally:
        await relay.stop()

    assert reconnects == 1
    assert_one_run(events, run.id)
    assert [e["seq"] for e in events] == list(range(1, len(stored) + 1))
    assert events == stored


async def test_subscribe_replays_then_follows_across_drops(server: ServerHandle) -> None:
    user_id, token = await server.create_user("alice")
    async with Client(server.url, token) as c:
        thread = await c.create_thread({"topic": "drops"})
        first = await c.create_run(thread["id"], "assistant", "what is 1+1?")
        second = await c.create_run(thread["id"], "assistant", LONG_INPUT)
        seen: list[dict[str, Any]] = []
        drops = 0
        async with asyncio.timeout(30):
            async for event in c.subscribe(thread["id"], after=0):
                seen.append(event)
                # The second drop waits for the client's new socket: frames still buffered
                # from the first one may carry it well past 40 events.
                if (drops == 0 and len(seen) >= 5) or (
                    drops == 1 and len(seen) >= 40 and c.reconnects == 1
                ):
                    drops += drop_sockets(server, user_id) > 0
                if is_terminal(event) and event["run_id"] == second["id"]:
                    break
        stored = await c.events(thread["id"])
        reconnects = c.reconnects

    assert reconnects == 2
    assert seen == stored
    assert_one_run([e for e in seen if e["run_id"] == first["id"]], first["id"])
    assert_one_run([e for e in seen if e["run_id"] == second["id"]], second["id"])


async def test_subscribe_after_skips_what_the_caller_has(server: ServerHandle) -> None:
    _, token = await server.create_user("alice")
    async with Client(server.url, token) as c:
        run = await c.run("assistant", "what is 5*5?")
        await run.result()
        stored = await c.events(run.thread_id)
        tail: list[dict[str, Any]] = []
        async for event in c.subscribe(run.thread_id, after=4):
            tail.append(event)
            if is_terminal(event):
                break

    assert tail == stored[4:]


# What is not retried -------------------------------------------------------------------------------


async def test_a_revoked_token_ends_the_socket_with_client_error_and_no_retry(
    server: ServerHandle,
) -> None:
    _, token = await server.create_user("alice")
    async with Client(server.url, token) as c:
        thread = await c.create_thread()

        async def follow() -> None:
            async for _ in c.subscribe(thread["id"]):
                pass

        follower = asyncio.create_task(follow())
        await c.ping()
        await c.revoke_current_token()
        with pytest.raises(ClientError) as caught:
            await asyncio.wait_for(follower, 10)
        with pytest.raises(ClientError) as again:
            await c.run("assistant", "hi")
        with pytest.raises(ClientError) as http:
            await c.me()

    assert (caught.value.status, caught.value.code) == (401, "unauthorized")
    assert again.value.code == "unauthorized"
    assert (http.value.status, http.value.code) == (401, "unauthorized")
    assert c.reconnects == 0


async def test_a_bad_token_is_a_client_error_not_a_retry_loop(server: ServerHandle) -> None:
    async with Client(server.url, "tnt_not-a-token") as c:
        with pytest.raises(ClientError) as caught:
            await asyncio.wait_for(c.ping(), 10)
    assert (caught.value.status, caught.value.code) == (401, "unauthorized")
    assert c.reconnects == 0


async def test_too_many_connections_is_a_client_error_not_a_retry_loop(
    settings: Callable[..., Settings],
) -> None:
    async with running_server(settings(ws_max_connections=1)) as server:
        _, token = await server.create_user("alice")
        async with Client(server.url, token) as first, Client(server.url, token) as second:
            await first.ping()
            with pytest.raises(ClientError) as caught:
                await second.ping()
            await first.ping()  # the first one is untouched
    assert (caught.value.status, caught.value.code) == (429, "rate_limited")


# HTTP ------------------------------------------------------------------------------------------------


async def test_http_methods_and_error_bodies(server: ServerHandle) -> None:
    user_id, token = await server.create_user("alice")
    async with Client(server.url, token) as c:
        assert await c.me() == {"user_id": user_id, "name": "alice"}
        assert "assistant" in {a["name"] for a in await c.agents()}

        thread = await c.create_thread({"k": "v"})
        assert thread["metadata"] == {"k": "v"}
        assert await c.thread(thread["id"]) == thread
        assert [t["id"] for t in await c.threads(limit=10)] == [thread["id"]]

        run = await c.create_run(thread["id"], "assistant", "what is 2*21?")
        assert run["status"] in ("queued", "running", "completed")
        async for event in c.subscribe(thread["id"]):
            if is_terminal(event):
                break
        assert (await c.get_run(run["id"]))["output"] == "The answer is 42."
        assert (await c.cancel_run(run["id"]))["status"] == "completed"
        assert [m["role"] for m in await c.messages(thread["id"])] == ["user", "assistant"]
        assert [e["seq"] for e in await c.events(thread["id"], after=2, limit=3)] == [3, 4, 5]

        token2 = await c.create_token()
        async with Client(server.url, token2) as other:
            assert (await other.me())["user_id"] == user_id

        with pytest.raises(ClientError) as bad_agent:
            await c.run("nobody", "hi")
        await c.delete_thread(thread["id"])
        with pytest.raises(ClientError) as missing:
            await c.thread(thread["id"])
        with pytest.raises(ClientError) as missing_ws:
            await c.run("assistant", "hi", thread_id=thread["id"])

    assert (bad_agent.value.status, bad_agent.value.code) == (422, "invalid")
    assert (missing.value.status, missing.value.code) == (404, "not_found")
    assert (missing_ws.value.status, missing_ws.value.code) == (404, "not_found")


async def test_create_user_needs_the_admin_token(server: ServerHandle) -> None:
    made = await Client.create_user(server.url, server.admin_token, "bob")
    assert made["name"] == "bob" and made["token"]
    async with Client(server.url, made["token"]) as c:
        assert (await c.me())["user_id"] == made["user_id"]
    with pytest.raises(ClientError) as caught:
        await Client.create_user(server.url, made["token"], "mallory")
    assert caught.value.status == 401


async def test_two_iterators_on_one_thread_each_get_every_event_once(server: ServerHandle) -> None:
    # One socket carries both: the second subscribe makes the server replay the
    # thread again, which the first iterator must not see twice.
    _, token = await server.create_user("alice")
    async with Client(server.url, token) as c:
        run = await c.run("assistant", "what is 7*6?")
        await run.result()
        stored = await c.events(run.thread_id)
        first = c.subscribe(run.thread_id)
        seen_first = [await anext(first) for _ in range(len(stored))]
        seen_second: list[dict[str, Any]] = []
        async for event in c.subscribe(run.thread_id, after=0):
            seen_second.append(event)
            if is_terminal(event):
                break
        follow_up = await c.run("assistant", "what is 1+2?", thread_id=run.thread_id)
        await follow_up.result()
        seen_first.append(await asyncio.wait_for(anext(first), 5))
        await first.aclose()

    assert seen_second == stored
    assert seen_first[:-1] == stored
    # The next thing the first iterator sees is the next run's start, not a replayed event.
    assert seen_first[-1]["run_id"] == follow_up.id
    assert seen_first[-1]["seq"] == len(stored) + 1
