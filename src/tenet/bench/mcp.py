"""``tenet bench --mcp``: what calling a tool through tenet's per-user MCP sessions adds.

A real MCP server (the SDK's server side, :func:`serve`) runs in a process of its
own over streamable HTTP. ``users`` users each hold two sessions to it at once:
one of tenet's (:class:`~tenet.mcp_tools.UserMCPSessions`, with the user's own
credential substituted) and one opened with the SDK directly. Every user
alternates calls on the two, all users at once, so both see the same server
load; the difference of the medians is what tenet adds beyond the server's own
time (goal: under 2 ms p50 with 100 users). Memory: the Python heap taken by
opening the users' tenet sessions, per session (tracemalloc, client side).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import statistics
import subprocess
import sys
import time
import tracemalloc
from typing import Any

from ..mcp_tools import MCPHub, UserMCPSessions, mcp_server

#: The p50 an MCP call through tenet may add over the SDK alone (ms).
ADDED_P50_GOAL_MS = 2.0


def serve(port: int) -> None:
    """The measured server: one tool answering at once (``python -m tenet.bench.mcp PORT``)."""
    import uvicorn
    from mcp.server.mcpserver import MCPServer

    server = MCPServer("bench")

    @server.tool()
    def echo(text: str) -> str:
        """Answer the text."""
        return text

    uvicorn.run(server.streamable_http_app(), host="127.0.0.1", port=port, log_level="warning")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _wait_up(url: str, proc: subprocess.Popen[bytes]) -> None:
    import httpx

    async with httpx.AsyncClient() as client:
        for _ in range(400):
            if proc.poll() is not None:
                raise RuntimeError("the MCP server exited")
            with contextlib.suppress(httpx.HTTPError):
                await client.get(url)
                return
            await asyncio.sleep(0.05)
    raise RuntimeError("the MCP server did not start")


def _ms(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "p50_ms": statistics.median(ordered) * 1000,
        "p90_ms": ordered[int(len(ordered) * 0.9)] * 1000,
    }


async def _measure(url: str, users: int, calls: int) -> dict[str, Any]:
    import httpx2
    from mcp import ClientSession
    from mcp.client.streamable_http import streamable_http_client

    server = mcp_server(
        "bench", url=url, headers={"Authorization": "Bearer {secret:token}"}, timeout=120
    )
    await server.refresh()
    hub = MCPHub(connect_timeout_s=120.0)
    tenet_sessions = []
    for i in range(users):

        async def secret(name: str, i: int = i) -> str | None:
            return f"token-{i}"

        tenet_sessions.append(UserMCPSessions(hub, secret))
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    await asyncio.gather(*(s.connection(server) for s in tenet_sessions))
    heap_per_session = (tracemalloc.get_traced_memory()[0] - before) / users
    tracemalloc.stop()

    raw: list[float] = []
    through: list[float] = []
    ready = 0
    go = asyncio.Event()

    async def user(i: int) -> None:
        nonlocal ready
        headers = {"Authorization": f"Bearer token-{i}"}
        async with (
            httpx2.AsyncClient(headers=headers) as client,
            streamable_http_client(url, http_client=client) as (read, write),
            ClientSession(read, write) as session,
        ):
            await session.initialize()
            ready += 1
            if ready == users:
                go.set()
            await go.wait()
            for n in range(calls):
                started = time.perf_counter()
                await session.call_tool("echo", {"text": str(n)})
                raw.append(time.perf_counter() - started)
                started = time.perf_counter()
                await tenet_sessions[i].call(server, "echo", {"text": str(n)}, 120.0)
                through.append(time.perf_counter() - started)

    try:
        await asyncio.gather(*(user(i) for i in range(users)))
    finally:
        for s in tenet_sessions:
            await s.aclose()
    sdk, tenet = _ms(raw), _ms(through)
    return {
        "users": users,
        "calls_per_user": calls,
        "sdk": sdk,
        "tenet": tenet,
        "added_p50_ms": tenet["p50_ms"] - sdk["p50_ms"],
        "goal_added_p50_ms": ADDED_P50_GOAL_MS,
        "heap_per_session_kib": heap_per_session / 1024,
    }


def run_mcp_bench(users: int = 100, calls: int = 20) -> dict[str, Any]:
    """Start the server, measure, stop it; the report (see the module docstring)."""
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "tenet.bench.mcp", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"

    async def main() -> dict[str, Any]:
        await _wait_up(base + "/", proc)
        return await _measure(base + "/mcp", users, calls)

    try:
        return asyncio.run(main())
    finally:
        proc.kill()
        proc.wait()


if __name__ == "__main__":
    serve(int(sys.argv[1]))
