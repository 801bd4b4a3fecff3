"""The agents tenet serves out of the box: ``assistant``, ``researcher`` and ``benchmark``.

``registry`` is what ``tenet serve --app tenet.examples:registry`` serves (the
default); ``default_registry(settings)`` builds the same with the benchmark
agent's latencies taken from settings.
"""

from __future__ import annotations

from ..registry import AgentRegistry
from ..settings import Settings
from .assistant import assistant
from .benchmark import BenchmarkAgent
from .researcher import research_agents


def default_registry(settings: Settings | None = None) -> AgentRegistry:
    settings = settings or Settings()
    return AgentRegistry(
        [
            assistant(),
            *research_agents(),
            BenchmarkAgent(latency_ms=settings.bench_latency_ms, events=settings.bench_events),
        ]
    )


def __getattr__(name: str) -> AgentRegistry:
    # Built on access, so importing the package creates no shared state.
    if name == "registry":
        return default_registry()
    raise AttributeError(name)


__all__ = ["default_registry"]
