"""Helpers for the core suite: users, threads, runs and their stored events, on a real Service."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Callable
from typing import Any

import orjson

from tenet import Agent, AgentRegistry, RunContext, Service, Settings
from tenet.examples import default_registry


async def new_user(svc: Service, name: str | None = None) -> str:
    user, _token = await svc.store.create_user(name or f"user-{secrets.token_hex(4)}")
    return user.id


async def new_thread(svc: Service, user_id: str) -> str:
    return (await svc.store.create_thread(user_id)).id


async def thread_events(svc: Service, user_id: str, thread_id: str) -> list[dict[str, Any]]:
    bodies = await svc.store.list_events(user_id, thread_id, limit=100_000)
    return [orjson.loads(b) for b in bodies]


async def run_events(svc: Service, user_id: str, thread_id: str, run_id: str) -> list[dict]:
    return [e for e in await thread_events(svc, user_id, thread_id) if e["run_id"] == run_id]


async def run_to_end(
    svc: Service, user_id: str, thread_id: str, agent: str, input: str, *, timeout: float = 20
) -> tuple[Any, list[dict[str, Any]]]:
    """Submit, wait for the end; the stored run and its events."""
    run = await svc.engine.submit(user_id, thread_id, agent, input)
    await asyncio.wait_for(svc.engine.wait(run.id), timeout)
    stored = await svc.store.get_run(user_id, run.id)
    return stored, await run_events(svc, user_id, thread_id, run.id)


def registry_with(settings: Settings, *agents: Agent) -> AgentRegistry:
    """The example agents plus test agents, not yet frozen."""
    registry = default_registry(settings)
    for agent in agents:
        registry.register(agent)
    return registry


class FuncAgent(Agent):
    """A custom agent whose flow is a test's coroutine function ``flow(ctx, input)``."""

    def __init__(self, name: str, flow: Callable[[RunContext, str], Any], **kw: Any) -> None:
        super().__init__(name=name, **kw)
        self._flow = flow

    async def run(self, ctx: RunContext, input: str) -> str:
        return await self._flow(ctx, input)


class Concurrency:
    """Counts executions in flight, overall and per user, and keeps the maxima."""

    def __init__(self) -> None:
        self.now = 0
        self.peak = 0
        self.per_user: dict[str, int] = {}
        self.peak_user: dict[str, int] = {}

    def enter(self, user_id: str) -> None:
        self.now += 1
        self.peak = max(self.peak, self.now)
        n = self.per_user.get(user_id, 0) + 1
        self.per_user[user_id] = n
        self.peak_user[user_id] = max(self.peak_user.get(user_id, 0), n)

    def leave(self, user_id: str) -> None:
        self.now -= 1
        self.per_user[user_id] -= 1


async def wait_until(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.005)
