"""The naive reference design: every run behind one process-wide lock.

This is how a server built around a shared singleton (one agent object, one
"current user", one conversation state) has to behave to stay correct: it can
only serve one run at a time. ``tenet serve --app tenet.bench.naive:registry``
serves the same ``benchmark`` agent, same store, same server, except that each
run holds one lock for its whole duration. The lock lives inside the agent
object the registry is built with; no module-level state is added.
"""

from __future__ import annotations

import asyncio

from ..context import RunContext
from ..examples.benchmark import BenchmarkAgent
from ..registry import AgentRegistry
from ..settings import Settings


class SerializedBenchmarkAgent(BenchmarkAgent):
    """The benchmark agent, with every run taking one shared lock first."""

    def __init__(self, *, latency_ms: float = 0.0, events: int = 25) -> None:
        super().__init__(latency_ms=latency_ms, events=events)
        self._lock = asyncio.Lock()

    async def run(self, ctx: RunContext, input: str) -> str:
        async with self._lock:
            return await super().run(ctx, input)


def registry() -> AgentRegistry:
    """What ``--app tenet.bench.naive:registry`` serves: only the serialized benchmark agent."""
    settings = Settings()
    return AgentRegistry(
        [
            SerializedBenchmarkAgent(
                latency_ms=settings.bench_latency_ms, events=settings.bench_events
            )
        ]
    )
