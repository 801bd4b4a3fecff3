"""Fixtures of the server tests: a real uvicorn server on a free loopback port, and users."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from server_support import ServerFactory, User, new_user

from tenet.registry import AgentRegistry
from tenet.settings import Settings
from tenet.testing import ServerHandle, running_server


@pytest.fixture
def server_factory(tmp_path: Path) -> ServerFactory:
    """``async with server_factory(ws_queue=20) as srv:`` a server with those settings
    (and the example agents, or ``registry=``)."""
    counter = 0

    def make(registry: AgentRegistry | None = None, **overrides: Any) -> Any:
        nonlocal counter
        counter += 1
        overrides.setdefault("database_url", f"sqlite+aiosqlite:///{tmp_path / f'db{counter}.db'}")
        overrides.setdefault("admin_token", "admin-secret-token")
        return running_server(Settings(**overrides), registry)

    return make


@pytest.fixture
async def server(server_factory: ServerFactory) -> AsyncIterator[ServerHandle]:
    async with server_factory() as srv:
        yield srv


@pytest.fixture
async def alice(server: ServerHandle) -> User:
    return await new_user(server, "alice")


@pytest.fixture
async def bob(server: ServerHandle) -> User:
    return await new_user(server, "bob")
