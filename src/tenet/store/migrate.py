"""Alembic migrations, run programmatically (``tenet db upgrade`` and at start-up).

The migration scripts ship inside the package (``tenet/migrations``) so that an
installed tenet can migrate its database without a checkout.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

MIGRATIONS = Path(__file__).resolve().parent.parent / "migrations"


def alembic_config(url: str | None = None, connection: Connection | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    if url is not None:
        cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


async def upgrade(engine: AsyncEngine, revision: str = "head") -> None:
    """Upgrade the database behind ``engine`` to ``revision``."""

    def run(connection: Connection) -> None:
        command.upgrade(alembic_config(connection=connection), revision)

    async with engine.begin() as conn:
        await conn.run_sync(run)
