"""Support for the web console tests: a real server on a background thread, a signed-in page.

The server is :func:`tenet.testing.running_server` (real uvicorn on a free loopback port)
running in its own event loop on a daemon thread, so that the sync Playwright API can
drive the browser from the test thread, and so that the server keeps serving while the
test thread waits on the browser. ``call`` runs a coroutine in the server's loop.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Awaitable
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from tenet.agents import Agent
from tenet.context import RunContext
from tenet.errors import ToolFailed
from tenet.examples import default_registry
from tenet.registry import AgentRegistry
from tenet.settings import Settings
from tenet.testing import ServerHandle, running_server
from tenet.tools import tool

T = TypeVar("T")

CHROMIUM = os.environ.get("TENET_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts"


class Broken(Agent):
    """An agent that thinks once and then fails: the page must show the error as an error."""

    async def run(self, ctx: RunContext, input: str) -> str:
        await ctx.think("about to fail")
        raise RuntimeError("the <b>broken</b> agent failed on purpose")


@tool(requires_approval=True)
async def send_note(to: str, text: str) -> str:
    """Send a note to someone (needs the user's yes)."""
    return f"sent to {to}: {text}"


class Courier(Agent):
    """Asks who a note is for, then sends it once the user approves the call."""

    async def run(self, ctx: RunContext, input: str) -> str:
        to = await ctx.ask("Who is the note for?", schema={"type": "string", "minLength": 1})
        try:
            return await ctx.call_tool("send_note", to=to, text=input)
        except ToolFailed as exc:
            return f"not sent ({exc.code})"


def web_registry(settings: Settings) -> AgentRegistry:
    registry = default_registry(settings)
    registry.register(Broken(name="broken", description="Fails on purpose (tests only)."))
    registry.register(
        Courier(name="courier", description="Sends a note (tests only).", tools=[send_note])
    )
    return registry


class BackgroundServer:
    """A tenet server in its own event loop on a daemon thread."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(
            target=self.loop.run_forever, name="tenet-web-server", daemon=True
        )
        self._cm: Any = None
        self.handle: ServerHandle

    def call(self, coro: Awaitable[T], timeout: float = 30) -> T:
        """Run ``coro`` in the server's loop and wait for its result."""

        async def wrapper() -> T:
            return await coro

        future: Future[T] = asyncio.run_coroutine_threadsafe(wrapper(), self.loop)
        return future.result(timeout)

    def start(self) -> ServerHandle:
        self.thread.start()
        self._cm = running_server(self.settings, web_registry(self.settings))
        self.handle = self.call(self._cm.__aenter__())
        return self.handle

    def stop(self) -> None:
        try:
            self.call(self._cm.__aexit__(None, None, None), timeout=30)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(timeout=10)

    @property
    def url(self) -> str:
        return self.handle.url

    def new_user(self, name: str) -> tuple[str, str]:
        return self.call(self.handle.create_user(name))

    def drop_sockets(self, user_id: str, code: int = 4008) -> int:
        """Close every open WebSocket of the user from the server's side; returns how many."""

        async def drop() -> int:
            conns = self.handle.app.state.tenet.live.of_user(user_id)
            for conn in conns:
                conn.request_close(code)
            return len(conns)

        return self.call(drop())

    def drop_sockets_at(
        self, user_id: str, thread_id: str, seq: int, code: int = 4008
    ) -> Future[int]:
        """Close the user's sockets as soon as the thread's event ``seq`` is stored.

        Returns at once; the future holds how many sockets were closed. Timed on the server,
        this lands mid-run however slowly the browser side is polled.
        """

        async def watch() -> int:
            store = self.handle.service.store
            async with asyncio.timeout(20):
                while await store.last_seq(user_id, thread_id) < seq:
                    await asyncio.sleep(0.002)
            conns = self.handle.app.state.tenet.live.of_user(user_id)
            for conn in conns:
                conn.request_close(code)
            return len(conns)

        return asyncio.run_coroutine_threadsafe(watch(), self.loop)


@dataclass
class Console:
    """One browser context signed in as one user, with what its page reported."""

    page: Any
    user_id: str
    token: str
    errors: list[str] = field(default_factory=list)

    @property
    def timeline(self) -> Any:
        return self.page.locator("#timeline")
