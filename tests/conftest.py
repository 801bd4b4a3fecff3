"""Shared fixtures: a fresh database per test (SQLite, and Postgres when configured)."""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from tenet import Service, Settings
from tenet.registry import AgentRegistry

POSTGRES_URL = os.environ.get("TENET_TEST_POSTGRES_URL")
REDIS_URL = os.environ.get("TENET_TEST_REDIS_URL")

needs_postgres = pytest.mark.skipif(
    not POSTGRES_URL, reason="set TENET_TEST_POSTGRES_URL to run the Postgres tests"
)
needs_redis = pytest.mark.skipif(
    not REDIS_URL, reason="set TENET_TEST_REDIS_URL to run the Redis tests"
)


async def _fresh_postgres_database() -> tuple[str, Callable[[], Any]]:
    """A new, empty database on the test server; returns its URL and a dropper."""
    import asyncpg
    from sqlalchemy.engine import make_url

    assert POSTGRES_URL
    base = make_url(POSTGRES_URL)
    name = "tenet_t_" + secrets.token_hex(6)
    dsn = base.set(drivername="postgresql").render_as_string(hide_password=False)
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()

    async def drop() -> None:
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()

    return base.set(database=name).render_as_string(hide_password=False), drop


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=needs_postgres)])
async def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """A fresh database: SQLite, and the same test again on Postgres when configured."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'tenet.db'}"
        return
    url, drop = await _fresh_postgres_database()
    try:
        yield url
    finally:
        await drop()


@pytest.fixture
async def postgres_url() -> AsyncIterator[str]:
    """A fresh Postgres database (skips when TENET_TEST_POSTGRES_URL is unset)."""
    if not POSTGRES_URL:
        pytest.skip("set TENET_TEST_POSTGRES_URL to run the Postgres tests")
    url, drop = await _fresh_postgres_database()
    try:
        yield url
    finally:
        await drop()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite+aiosqlite:///{tmp_path / 'tenet.db'}"


@pytest.fixture
def make_settings(sqlite_url: str) -> Callable[..., Settings]:
    """Settings on a fresh SQLite file, with overrides: ``make_settings(user_max_runs=2)``."""

    def make(**overrides: Any) -> Settings:
        overrides.setdefault("database_url", sqlite_url)
        return Settings(**overrides)

    return make


@pytest.fixture
async def service(make_settings: Callable[..., Settings]) -> AsyncIterator[Service]:
    """A started service on a fresh SQLite database with the example agents."""
    async with Service(make_settings()) as svc:
        yield svc


def make_service(settings: Settings, registry: AgentRegistry | None = None) -> Service:
    return Service(settings, registry)
