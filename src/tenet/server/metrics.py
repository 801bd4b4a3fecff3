"""Prometheus metrics of one app, in the app's own ``CollectorRegistry``.

Counters that the server itself increments (queue overflows, isolation
violations) are ordinary prometheus counters. Everything else (open
connections, runs by status, events published, live user sessions) is read
from the live objects at scrape time, so there is nothing to keep in step.
The process's own CPU seconds and memory (prometheus's ``process_*``) are
exported too: a deployment's CPU per run is read from them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, ProcessCollector, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from ..heap import frozen_objects

if TYPE_CHECKING:
    from ..service import Service

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class _LiveCollector(Collector):
    def __init__(self, service: Service, open_connections: Callable[[], int]) -> None:
        self._service = service
        self._open = open_connections

    def collect(self) -> Iterator[Metric]:
        yield GaugeMetricFamily(
            "tenet_connections_open", "Open WebSocket and SSE connections.", value=self._open()
        )
        runs = GaugeMetricFamily(
            "tenet_runs",
            "Runs in memory by status (queued, running, cancelling) and finished runs "
            "since start by terminal status.",
            labels=["status"],
        )
        for status, count in sorted(self._service.engine.counts().items()):
            runs.add_metric([status], count)
        yield runs
        yield CounterMetricFamily(
            "tenet_events_published",
            "Events stored and published by this process.",
            value=self._service.writer.events_written,
        )
        yield GaugeMetricFamily(
            "tenet_user_sessions", "Live per-user sessions.", value=len(self._service.sessions)
        )
        yield GaugeMetricFamily(
            "tenet_gc_frozen_objects",
            "Objects of the start-up heap kept out of full garbage collections.",
            value=frozen_objects(),
        )
        yield GaugeMetricFamily(
            "tenet_event_loop_lag_seconds",
            "The longest the event loop ran late in the last 10 s (seconds).",
            value=self._service.loop_watch.lag_s,
        )
        mcp = self._service.mcp
        yield GaugeMetricFamily(
            "tenet_mcp_sessions",
            "Open MCP sessions (one per user and server).",
            value=mcp.open_sessions,
        )
        yield GaugeMetricFamily(
            "tenet_mcp_processes",
            "Running stdio MCP server processes (at most TENET_MCP_MAX_PROCESSES).",
            value=mcp.processes,
        )
        yield from _usage_metrics(self._service.engine.usage_meter.snapshot())


def _usage_metrics(counts: dict[tuple[str, str], tuple[int, int, int]]) -> Iterator[Metric]:
    """Tokens and model calls by agent and model (never by user: one series per user is
    unbounded cardinality, and per-user usage is in the store, ``GET /v1/me/usage``)."""
    tokens = CounterMetricFamily(
        "tenet_model_tokens",
        "Tokens of model calls made by this process, by agent, model and kind (input, output).",
        labels=["agent", "model", "kind"],
    )
    calls = CounterMetricFamily(
        "tenet_model_calls", "Model calls made by this process.", labels=["agent", "model"]
    )
    for (agent, model), (input_tokens, output_tokens, n) in sorted(counts.items()):
        tokens.add_metric([agent, model, "input"], input_tokens)
        tokens.add_metric([agent, model, "output"], output_tokens)
        calls.add_metric([agent, model], n)
    yield tokens
    yield calls


class Metrics:
    """The app's registry, its counters, and the text exposition."""

    def __init__(self, service: Service, open_connections: Callable[[], int]) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.queue_overflows = Counter(
            "tenet_queue_overflows",
            "Connections closed because their send queue overflowed (4008).",
            registry=self.registry,
        )
        self.bus_resumes = Counter(
            "tenet_bus_resumes",
            "Connections closed with 4008 to resume from the store because live delivery "
            "broke (a Redis outage), not because the client was slow.",
            registry=self.registry,
        )
        self.isolation_violations = Counter(
            "tenet_isolation_violations",
            "Event frames of another user stopped by the isolation guard; should stay 0.",
            registry=self.registry,
        )
        self.registry.register(_LiveCollector(service, open_connections))
        # process_cpu_seconds_total, process_resident_memory_bytes, ...: what
        # ``tenet bench --url`` reads to give a deployment's server CPU per run.
        ProcessCollector(registry=self.registry)

    def render(self) -> bytes:
        return generate_latest(self.registry)
