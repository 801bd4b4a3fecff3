"""The composition root: one object that owns the store, bus, writer, sessions, queue and engine.

The server, the CLI and the tests all build a :class:`Service` from settings and
an agent registry, ``start()`` it, use its parts, and ``close()`` it. Nothing
else in the package creates these parts, so there is exactly one of each per
process, none of them held at module level.
"""

from __future__ import annotations

import logging
from typing import Any

from .bus import Bus, MemoryBus
from .engine import Engine
from .local_queue import LocalQueue
from .loop_watch import LoopWatch
from .mcp_tools import MCPHub, list_mcp_tools
from .models.base import ChatModel
from .models.scripted import ScriptedModel
from .queue import RunQueue
from .registry import AgentRegistry
from .secret_changes import SecretChanges
from .sessions import UserSessions
from .settings import Settings
from .store.db import Store
from .store.migrate import upgrade
from .store.secrets import SecretBox
from .store.writer import EventWriter

log = logging.getLogger("tenet")


def build_model(settings: Settings) -> ChatModel:
    """The default model agents use when they name none: scripted, or OpenAI-compatible."""
    if settings.model == "openai":
        from .models.openai import OpenAIModel

        return OpenAIModel(
            base_url=settings.model_base_url,
            api_key=settings.model_api_key,
            model=settings.model_name,
            timeout_s=settings.model_timeout_s,
            max_retries=settings.model_max_retries,
        )
    return ScriptedModel(
        latency_s=settings.scripted_latency_ms / 1000,
        token_latency_s=settings.scripted_token_latency_ms / 1000,
    )


def describe_model(settings: Settings, model: ChatModel) -> str:
    """The default model in one line for the start-up log: which model, at which endpoint.

    The API key is never shown, only whether one is set.
    """
    endpoint = getattr(model, "endpoint", None)
    if endpoint is None:
        return f"{settings.model} ({type(model).__name__}, offline)"
    key = "set, not shown" if settings.model_api_key else "not set"
    return f"{settings.model} {settings.model_name!r} at {endpoint} (API key {key})"


def build_bus(settings: Settings) -> Bus:
    if settings.redis_url:
        from .bus.namespace import redis_prefix
        from .bus.redis import RedisBus

        return RedisBus(
            settings.redis_url, prefix=redis_prefix(settings), queue_size=settings.ws_queue
        )
    return MemoryBus(queue_size=settings.ws_queue)


class Service:
    """Everything one tenet process runs, wired together."""

    def __init__(
        self,
        settings: Settings | None = None,
        registry: AgentRegistry | None = None,
        *,
        model: ChatModel | None = None,
    ) -> None:
        self.settings = settings or Settings()
        if registry is None:
            from .examples import default_registry

            registry = default_registry(self.settings)
        self.registry = registry.freeze()
        self.store = Store(self.settings.database_url)
        self.bus: Bus = build_bus(self.settings)
        self.writer = EventWriter(
            self.store,
            self.bus,
            batch_max=self.settings.event_batch_max,
            backlog_max=self.settings.event_backlog_max,
        )
        self.sessions = UserSessions(idle_s=self.settings.session_idle_s)
        self.mcp = MCPHub(
            max_processes=self.settings.mcp_max_processes,
            connect_timeout_s=self.settings.mcp_connect_timeout_s,
        )
        self.secrets = SecretBox(self.store, self.settings.secret_key)
        #: A changed secret dropped from every process's sessions (:mod:`tenet.secret_changes`).
        self.secret_changes = SecretChanges(self.sessions, self.bus)
        if self.settings.cluster and self.settings.is_sqlite:
            raise ValueError("cluster mode (TENET_REDIS_URL) needs Postgres as TENET_DATABASE_URL")
        self.queue: RunQueue
        if self.settings.cluster:
            from .cluster import ClusterQueue

            self.queue = ClusterQueue(
                settings=self.settings,
                store=self.store,
                writer=self.writer,
                bus=self.bus,
                sessions=self.sessions,
            )
        else:
            self.queue = LocalQueue(
                settings=self.settings, store=self.store, sessions=self.sessions
            )
        self.engine = Engine(
            settings=self.settings,
            store=self.store,
            writer=self.writer,
            registry=self.registry,
            sessions=self.sessions,
            model=model or build_model(self.settings),
            queue=self.queue,
            mcp=self.mcp,
            secrets=self.secrets,
        )
        self._owns_model = model is None
        self.loop_watch = LoopWatch(self.settings.loop_stall_warn_ms)
        self.started = False

    async def start(self) -> Service:
        if self.settings.auto_migrate:
            await upgrade(self.store.engine)
        self.secret_changes.start()
        await self.bus.start()
        self.writer.start()
        self.sessions.start()
        await list_mcp_tools(self.registry, self.mcp, relist_s=self.settings.mcp_relist_s)
        await self.engine.start()
        self.loop_watch.start()
        self.started = True
        return self

    async def close(self, *, grace_s: float = 0.0) -> None:
        if not self.started:
            await self.store.close()
            return
        self.started = False
        await self.loop_watch.close()
        await self.engine.close(grace_s=grace_s)
        await self.writer.close()
        await self.secret_changes.close()
        await self.sessions.close()
        await self.mcp.aclose()
        await self.bus.close()
        await self.store.close()
        aclose = getattr(self.engine.model, "aclose", None)
        if self._owns_model and aclose is not None:
            await aclose()

    async def __aenter__(self) -> Service:
        return await self.start()

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()
