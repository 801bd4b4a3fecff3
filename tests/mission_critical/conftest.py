"""Fixtures of the mission-critical suite: a real server, real sockets, many users."""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from mc_support import Deployment

from tenet import Settings
from tenet.registry import AgentRegistry
from tenet.testing import running_server


@pytest.fixture
def deploy(
    database_url: str,
) -> Callable[..., Any]:
    """``async with deploy(registry=..., **settings) as d:`` a real server on a fresh database."""

    @contextlib.asynccontextmanager
    async def start(
        registry: AgentRegistry | None = None, **overrides: Any
    ) -> AsyncIterator[Deployment]:
        overrides.setdefault("admin_token", secrets.token_urlsafe(16))
        settings = Settings(database_url=database_url, **overrides)
        async with running_server(settings, registry) as server:
            yield Deployment(server)

    return start
