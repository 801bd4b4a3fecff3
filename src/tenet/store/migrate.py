"""Alembic migrations, run programmatically (``tenet db upgrade`` and at start-up).

The migration scripts ship inside the package (``tenet/migrations``) so that an
installed tenet can migrate its database without a checkout. A step that takes
long on a big database (copying the events table) reports its progress through
:func:`report_progress`: to a progress bar under ``tenet db upgrade``, to the log
when the server migrates at start-up.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from alembic import command, context
from alembic.config import Config
from sqlalchemy import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

MIGRATIONS = Path(__file__).resolve().parent.parent / "migrations"
#: Rows a migration copies per statement between two progress reports.
COPY_CHUNK_ROWS = 50_000

#: ``(what, done, total)``: how far a long migration step has got.
Progress = Callable[[str, int, int], None]

log = logging.getLogger("tenet.store")


def _log_progress(what: str, done: int, total: int) -> None:
    log.info("migrating: %s, %d of %d", what, done, total)


def report_progress(what: str, done: int, total: int) -> None:
    """Called by a migration script during a long step; reaches the caller of :func:`upgrade`.

    A step with nothing to do (``total`` 0, as on a brand-new database) is not
    reported: it is not long, and "0 of 0" only puzzles whoever reads the log.
    """
    if total <= 0:
        return
    progress: Progress = context.config.attributes.get("progress", _log_progress)
    progress(what, done, total)


def alembic_config(url: str | None = None, connection: Connection | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    if url is not None:
        cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


async def upgrade(
    engine: AsyncEngine, revision: str = "head", progress: Progress | None = None
) -> None:
    """Upgrade the database behind ``engine`` to ``revision``, reporting long steps to
    ``progress`` (default: the log)."""

    def run(connection: Connection) -> None:
        cfg = alembic_config(connection=connection)
        cfg.attributes["progress"] = progress or _log_progress
        command.upgrade(cfg, revision)

    async with engine.begin() as conn:
        await conn.run_sync(run)
