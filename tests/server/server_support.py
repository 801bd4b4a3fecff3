"""Helpers for the server tests.

Clients are real: ``httpx.AsyncClient`` for HTTP and the ``websockets``
package for sockets. Helpers here read frames with a timeout, so a missing frame
fails the test instead of hanging it.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any

import httpx
from websockets.asyncio.client import ClientConnection, connect

from tenet.testing import ServerHandle

TERMINAL = {"agent_completed", "agent_error", "run_cancelled"}


@dataclass
class User:
    user_id: str
    token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


ServerFactory = Callable[..., AbstractAsyncContextManager[ServerHandle]]


async def new_user(server: ServerHandle, name: str | None = None) -> User:
    user_id, token = await server.create_user(name)
    return User(user_id, token)


def http(server: ServerHandle, user: User | None = None) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=server.url, headers=user.headers if user else {}, timeout=10.0
    )


def ws_connect(server: ServerHandle, user: User | None = None, **kwargs: Any) -> Any:
    headers = user.headers if user else None
    return connect(server.ws_url, additional_headers=headers, open_timeout=5, **kwargs)


async def recv(ws: ClientConnection, timeout: float = 5.0) -> dict[str, Any]:
    frame = await asyncio.wait_for(ws.recv(), timeout)
    data = json.loads(frame)
    assert isinstance(data, dict)
    return data


async def ready(ws: ClientConnection) -> dict[str, Any]:
    frame = await recv(ws)
    assert frame["type"] == "ready", frame
    return frame


async def send(ws: ClientConnection, frame: dict[str, Any]) -> None:
    await ws.send(json.dumps(frame))


async def until_terminal(
    ws: ClientConnection, run_id: str, timeout: float = 20.0
) -> list[dict[str, Any]]:
    """Every frame up to and including the run's terminal event."""
    frames = []
    async with asyncio.timeout(timeout):
        while True:
            frame = await recv(ws, timeout)
            frames.append(frame)
            if frame.get("run_id") == run_id and frame.get("type") in TERMINAL:
                return frames


async def close_code(ws: ClientConnection, timeout: float = 10.0) -> int | None:
    """Read (and drop) frames until the server closes; returns the close code."""
    from websockets.exceptions import ConnectionClosed

    async with asyncio.timeout(timeout):
        try:
            while True:
                await ws.recv()
        except ConnectionClosed as exc:
            return exc.rcvd.code if exc.rcvd else None


async def wait_run(server: ServerHandle, run_id: str) -> None:
    await asyncio.wait_for(server.service.engine.wait(run_id), 20)


async def stored_events(server: ServerHandle, user: User, thread_id: str) -> list[dict[str, Any]]:
    async with http(server, user) as c:
        r = await c.get(f"/v1/threads/{thread_id}/events")
        assert r.status_code == 200
        return r.json()


async def sse_events(
    server: ServerHandle,
    user: User,
    thread_id: str,
    *,
    count: int,
    params: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = 20.0,
) -> list[tuple[str, str, dict[str, Any]]]:
    """Read ``count`` SSE messages as ``(id, event, data)``, then hang up."""
    out: list[tuple[str, str, dict[str, Any]]] = []
    async with http(server, user) as c, asyncio.timeout(timeout):
        async with c.stream(
            "GET", f"/v1/threads/{thread_id}/stream", params=params, headers=headers
        ) as r:
            assert r.status_code == 200
            assert r.headers["content-type"].startswith("text/event-stream")
            fields: dict[str, str] = {}
            async for line in r.aiter_lines():
                if line.startswith(":"):
                    continue
                if line == "":
                    if fields:
                        out.append((fields["id"], fields["event"], json.loads(fields["data"])))
                        fields = {}
                        if len(out) == count:
                            return out
                    continue
                name, _, value = line.partition(": ")
                fields[name] = value
    return out
