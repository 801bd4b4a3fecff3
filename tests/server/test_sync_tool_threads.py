"""One user's hung synchronous tools cost only that user's threads.

A synchronous tool runs on a thread, and a thread cannot be stopped: a call that
timed out keeps its thread until the function returns. One user hanging many
such calls must not leave other users' synchronous tools without a thread.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator

import pytest
from server_support import new_user, ready, recv, send, until_terminal, ws_connect

from tenet.agents import Agent
from tenet.context import RunContext
from tenet.registry import AgentRegistry
from tenet.tools import ToolFailed, tool

#: More hung calls than any default thread pool has threads (asyncio's: at most 32).
HUNG_CALLS = 40
_release = threading.Event()


@tool
def stuck(n: int) -> int:
    """Blocks until the test lets it go (a tool that hangs)."""
    _release.wait(60)
    return n


@tool
def quick() -> str:
    """Answers at once."""
    return "ok"


class Hanger(Agent):
    """Calls the hanging tool many times at once, each call timing out."""

    def __init__(self) -> None:
        super().__init__(name="hanger", tools=[stuck])

    async def run(self, ctx: RunContext, input: str) -> str:
        async def one(n: int) -> str:
            try:
                await ctx.call_tool("stuck", n=n)
            except ToolFailed as exc:
                return exc.code
            return "returned"

        codes = await asyncio.gather(*(one(n) for n in range(HUNG_CALLS)))
        return ",".join(sorted(set(codes)))


class Quick(Agent):
    def __init__(self) -> None:
        super().__init__(name="quick", tools=[quick])

    async def run(self, ctx: RunContext, input: str) -> str:
        try:
            return str(await ctx.call_tool("quick"))
        except ToolFailed as exc:
            return exc.code


@pytest.fixture
def released() -> Iterator[None]:
    _release.clear()
    try:
        yield
    finally:
        _release.set()


async def _final(srv, user, agent: str) -> str:  # type: ignore[no-untyped-def]
    async with ws_connect(srv, user) as ws:
        await ready(ws)
        await send(ws, {"type": "run", "agent": agent, "input": "go"})
        accepted = await recv(ws)
        frames = await until_terminal(ws, accepted["run_id"], timeout=30)
    assert frames[-1]["type"] == "agent_completed", frames[-1]
    return str(frames[-1]["final_response"])


async def test_one_users_hung_sync_tools_do_not_starve_another_user(
    server_factory, released: None
) -> None:
    registry = AgentRegistry([Hanger(), Quick()])
    async with server_factory(registry=registry, tool_timeout_s=2.0) as srv:
        alice, bob = await new_user(srv, "alice"), await new_user(srv, "bob")
        # Every one of alice's calls times out; their threads stay busy (they cannot be killed).
        assert await _final(srv, alice, "hanger") == "timeout"
        # alice has no run left, but her functions still hold threads: bob's tool gets one.
        assert await _final(srv, bob, "quick") == "ok"
        threads = srv.service.engine.tool_threads
        assert threads.held(alice.user_id) == srv.service.settings.tool_threads_per_user
        assert threads.held(bob.user_id) == 0
        # Alice's own synchronous tools wait for her threads: that is her cost alone.
        assert await _final(srv, alice, "quick") == "timeout"
        _release.set()
        async with asyncio.timeout(10):
            while threads.held(alice.user_id):
                await asyncio.sleep(0.01)
        assert await _final(srv, alice, "quick") == "ok"
