"""What a connected user costs the server, and what is left once users have gone.

An idle authenticated socket is read by its own ASGI task and holds nothing else
that runs: its send queue and writer come with the first frame queued after
``ready``, its subscription and pump with the first thread it follows. Users
who came, ran and went leave no entry behind in the per-user and per-thread
structures (sessions, live connections, bus subscriptions, the writer's
cached ``seq``s).
"""

from __future__ import annotations

import asyncio

from server_support import (
    ServerFactory,
    new_user,
    ready,
    recv,
    send,
    until_terminal,
    ws_connect,
)

from tenet.server.ws import Connection


def _connection_tasks() -> list[asyncio.Task[object]]:
    """The running tasks whose coroutine is a method of a server-side connection."""
    methods = {
        getattr(Connection, name).__qualname__
        for name in dir(Connection)
        if callable(getattr(Connection, name, None))
    }
    return [t for t in asyncio.all_tasks() if t.get_coro().__qualname__ in methods]


async def test_an_idle_socket_runs_no_task_of_its_own(server_factory: ServerFactory) -> None:
    async with server_factory() as server:
        users = [await new_user(server) for _ in range(5)]
        sockets = [await ws_connect(server, u).__aenter__() for u in users]
        try:
            for ws in sockets:
                await ready(ws)
            assert len(server.app.state.tenet.live) == 5
            # Five idle, authenticated sockets: no writer, no pump, no reader task.
            assert _connection_tasks() == []
            # The first frame after ready brings the writer; a followed thread, the pump.
            first = sockets[0]
            await send(first, {"type": "ping", "ref": "p"})
            assert (await recv(first))["type"] == "pong"
            await send(first, {"type": "run", "agent": "benchmark", "input": "events=5"})
            accepted = await recv(first)
            assert accepted["type"] == "run_accepted", accepted
            frames = await until_terminal(first, accepted["run_id"])
            assert [f["seq"] for f in frames] == list(range(1, len(frames) + 1))
            assert len(_connection_tasks()) == 2  # that socket's writer and pump only
        finally:
            for ws in sockets:
                await ws.close()


async def test_users_who_ran_and_left_leave_nothing_behind(
    server_factory: ServerFactory,
) -> None:
    async with server_factory(session_idle_s=0.2) as server:
        service = server.service
        users = [await new_user(server) for _ in range(12)]

        async def come_run_go(index: int) -> None:
            async with ws_connect(server, users[index]) as ws:
                await ready(ws)
                await send(ws, {"type": "run", "agent": "benchmark", "input": "events=6"})
                accepted = await recv(ws)
                assert accepted["type"] == "run_accepted", accepted
                await until_terminal(ws, accepted["run_id"])

        await asyncio.gather(*(come_run_go(i) for i in range(len(users))))
        # Sessions go once idle for 0.2 s (the sweeper looks every 0.05 s).
        for _ in range(400):
            if len(service.sessions) == 0 and len(server.app.state.tenet.live) == 0:
                break
            await asyncio.sleep(0.05)
        assert len(service.sessions) == 0
        assert len(server.app.state.tenet.live) == 0
        assert service.bus.subscribed_threads == 0
        # Each thread's cached seq went with its run's end.
        assert service.writer.cached_threads == 0
