"""The Alembic migrations build exactly the schema the code declares."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Connection, event, insert, text
from sqlalchemy.ext.asyncio import create_async_engine

from tenet.ids import new_id
from tenet.store import migrate, statements
from tenet.store.db import Store
from tenet.store.migrate import upgrade
from tenet.store.tables import Base, RunRequest


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


#: The statements an answer runs (and a pause, a resume, a cancel) that read one run's requests.
ONE_RUNS_REQUESTS = (
    "select_request",
    "answer_request",
    "resume_run",
    "pending_requests",
    "answered_requests",
    "cancel_requests",
)


async def test_answering_reads_only_the_runs_own_requests(database_url: str) -> None:
    """A user with thousands of requests (answered and pending): each statement of an answer finds the run's
    requests by the run (an index led by ``run_id``), never by searching all of the user's
    (``ix_run_requests_user``) or all rows."""
    engine = create_async_engine(database_url)
    try:
        await upgrade(engine)
        now = datetime(2026, 11, 30, 6, 0, tzinfo=UTC)
        user, thread = new_id("usr"), new_id("thr")
        runs = [new_id("run") for _ in range(1000)]
        requests = RunRequest.__table__
        async with engine.begin() as conn:
            await conn.execute(
                text("INSERT INTO users (id, name, created_at) VALUES (:id, 'many', :t)"),
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
                insert(requests),
                [
                    {
                        "run_id": run_id,
                        "id": f"call_{n}",
                        "user_id": user,
                        "thread_id": thread,
                        "execution_id": new_id("exe"),
                        "agent_name": "guarded",
                        "kind": "approval",
                        "round": 1,
                        "body": {},
                        "status": "answered" if n == 0 else "pending",
                        "expires_at": now,
                        "created_at": now,
                    }
                    for run_id in runs
                    for n in range(3)
                ],
            )
            if engine.dialect.name == "postgresql":
                await conn.execute(text("ANALYZE run_requests"))
        values = {"user_id": user, "run_id": runs[0], "id": "call_0", "round": 1, "answer": {}}
        dialect = engine.dialect.name
        by_name = {c.name: c for c in statements.compiled(dialect)}
        catalogue = {s.name: s for s in statements.CATALOGUE}
        async with engine.connect() as conn:
            for name in ONE_RUNS_REQUESTS:
                found = by_name[name]
                args = found.args([values[p] for p in catalogue[name].params])
                raw = await conn.get_raw_connection()
                driver = raw.driver_connection
                if dialect == "sqlite":
                    plan = await driver.execute(f"EXPLAIN QUERY PLAN {found.sql}", tuple(args))
                    lines = [str(row[-1]) for row in await plan.fetchall()]
                    searches = [line for line in lines if " run_requests " in f"{line} "]
                    assert searches, (name, lines)
                    assert all("(run_id=?" in line for line in searches), (name, lines)
                else:
                    plan = await driver.fetch(f"EXPLAIN {found.sql}", *args)
                    lines = [str(row[0]) for row in plan]
                    details = " ".join(lines)
                    assert "Seq Scan on run_requests" not in details, (name, lines)
                    assert "ix_run_requests_user" not in details, (name, lines)
    finally:
        await engine.dispose()


async def test_a_history_read_of_turn_marks_never_touches_the_table(sqlite_url: str) -> None:
    """A thread's turn marks (seq, run, type; filtered by user) come from
    ``ix_events_turn_marks`` alone; their text is read only by range, through the index."""
    engine = create_async_engine(sqlite_url)
    await upgrade(engine)
    try:
        plans: dict[str, str] = {}
        async with engine.connect() as conn:
            for name in ("turn_marks_before", "turn_bodies_between"):
                found = statements.compiled("sqlite")[statements_named(name).index]
                params = tuple(1 for _ in range(found.sql.count("?")))
                plan = await conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {found.sql}", params)
                plans[name] = " ".join(str(row[-1]) for row in plan)
    finally:
        await engine.dispose()
    assert "COVERING INDEX ix_events_turn_marks" in plans["turn_marks_before"], plans
    assert "INDEX ix_events_turn_marks" in plans["turn_bodies_between"], plans


def statements_named(name: str) -> statements.Statement:
    """The catalogue's statement called ``name``."""
    return next(s for s in statements.CATALOGUE if s.name == name)


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
