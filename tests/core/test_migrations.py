"""The Alembic migrations build exactly the schema the code declares."""

from __future__ import annotations

from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from tenet.store.migrate import upgrade
from tenet.store.tables import Base


async def test_upgrading_an_empty_database_yields_the_declared_schema(database_url: str) -> None:
    engine = create_async_engine(database_url)
    try:
        await upgrade(engine)
        await upgrade(engine)  # a second upgrade is a no-op

        def diff(conn: Connection) -> list[Any]:
            context = MigrationContext.configure(conn, opts={"compare_type": True})
            return compare_metadata(context, Base.metadata)

        async with engine.connect() as conn:
            differences = await conn.run_sync(diff)
    finally:
        await engine.dispose()
    assert differences == []
