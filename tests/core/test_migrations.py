"""The Alembic migrations build exactly the schema the code declares."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Connection, event, text
from sqlalchemy.ext.asyncio import create_async_engine

from tenet.ids import new_id
from tenet.store import migrate, statements
from tenet.store.db import Store
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


async def test_events_stored_before_an_upgrade_are_kept(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """0002 re-keys the events table, showing its progress; every stored event survives it,
    readable as before."""
    monkeypatch.setattr(migrate, "COPY_CHUNK_ROWS", 7)  # 30 events: several chunks
    reports: list[tuple[str, int, int]] = []
    engine = create_async_engine(database_url)
    store = Store(database_url)
    try:
        await upgrade(engine, "0001")
        now = datetime(2026, 11, 29, 6, 0, tzinfo=UTC)
        user, thread = new_id("usr"), new_id("thr")
        bodies = [f'{{"seq": {seq}}}' for seq in range(1, 31)]
        async with engine.begin() as conn:
            await conn.execute(
                text("INSERT INTO users (id, name, created_at) VALUES (:id, 'old', :t)"),
                {"id": user, "t": now},
            )
            await conn.execute(
                text(
                    "INSERT INTO threads (id, user_id, metadata, created_at) "
                    "VALUES (:id, :u, '{}', :t)"
                ),
                {"id": thread, "u": user, "t": now},
            )
            await conn.execute(
                text(
                    "INSERT INTO events (id, user_id, thread_id, run_id, seq, type, created_at, "
                    "body) VALUES (:id, :u, :th, :r, :seq, 'message_delta', :t, :body)"
                ),
                [
                    {"id": new_id("evt"), "u": user, "th": thread, "r": new_id("run")}
                    | {"seq": seq, "t": now, "body": body}
                    for seq, body in enumerate(bodies, start=1)
                ],
            )
        await upgrade(engine, progress=lambda *report: reports.append(report))
        assert await store.list_events(user, thread, after=10) == bodies[10:]
        assert reports, "the re-keying showed no progress"
        assert reports[-1][1] == reports[-1][2], "the progress did not reach its total"
        if engine.dialect.name == "sqlite":  # copied in chunks, each one reported
            copied = [done for what, done, total in reports if total == 30]
            assert copied == [0, 7, 14, 21, 28, 30], reports
        assert await store.list_events(new_id("usr"), thread, check_owner=False) == []
    finally:
        await store.close()
        await engine.dispose()


async def test_run_lookups_use_the_partial_run_index(sqlite_url: str) -> None:
    """Recovery finds a run's first and end events through ``ix_events_run_marks``, not a scan."""
    engine = create_async_engine(sqlite_url)
    await upgrade(engine)
    await engine.dispose()
    store = Store(sqlite_url)
    statements: list[tuple[str, Any]] = []

    def capture(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        if statement.lstrip().upper().startswith("SELECT") and "FROM events" in statement:
            statements.append((statement, parameters))

    event.listen(store.engine.sync_engine, "before_cursor_execute", capture)
    try:
        run_id = new_id("run")
        assert await store.run_has_events(run_id) is False
        assert await store.admin_root_execution(run_id) is None
        assert await store.run_terminal_event(new_id("usr"), run_id) is None
        assert len(statements) == 3
        async with store.engine.connect() as conn:
            for statement, parameters in statements:
                plan = await conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {statement}", parameters)
                details = " ".join(str(row[-1]) for row in plan)
                assert "ix_events_run_marks" in details, (statement, details)
    finally:
        await store.close()


def _sqlite_file(sqlite_url: str) -> str:
    return sqlite_url.split("///", 1)[1]


async def test_storing_an_event_builds_no_table_per_row(sqlite_url: str) -> None:
    """The events' partial indexes are checked with a few comparisons per inserted row.

    With ``type IN (...)`` as an index's predicate, SQLite built a temporary table of the
    list (``OpenEphemeral``) for every event inserted, once per partial index: more than
    half of an event's insert.
    """
    engine = create_async_engine(sqlite_url)
    await upgrade(engine)
    await engine.dispose()
    insert_event = statements.compiled("sqlite")[statements.INSERT_EVENT.index]
    conn = sqlite3.connect(_sqlite_file(sqlite_url))
    try:
        program = conn.execute(
            f"EXPLAIN {insert_event.sql}", (None,) * insert_event.sql.count("?")
        ).fetchall()
    finally:
        conn.close()
    opcodes = [row[1] for row in program]
    assert opcodes.count("IdxInsert") >= 3, opcodes  # the key and both partial indexes
    assert "OpenEphemeral" not in opcodes, opcodes


async def test_turn_reads_use_the_partial_turn_index(sqlite_url: str) -> None:
    """A history read finds a thread's turn events through ``ix_events_turns``, not a scan."""
    engine = create_async_engine(sqlite_url)
    await upgrade(engine)
    await engine.dispose()
    catalogue = statements.compiled("sqlite")
    conn = sqlite3.connect(_sqlite_file(sqlite_url))
    try:
        for stmt in (statements.TURN_EVENTS_BEFORE, statements.TURN_BODIES_BETWEEN):
            sql = catalogue[stmt.index].sql
            plan = conn.execute(f"EXPLAIN QUERY PLAN {sql}", (None,) * sql.count("?"))
            details = " ".join(str(row[-1]) for row in plan)
            assert "ix_events_turns" in details, (stmt.name, details)
    finally:
        conn.close()
