"""Category 3: one store session per request, never shared between users.

Every SQL statement the store runs is attributed to the session that ran it; a
session that touched two users' ids would be a shared session. The event
writer's batch session is the one deliberate exception (it writes many users'
rows, each stamped from its own run) and is checked to be only that.
"""

from __future__ import annotations

import asyncio
from typing import Any

from mc_support import BOTH_AUTH
from sqlalchemy import event
from sqlalchemy.orm import ORMExecuteState, Session

from tenet.store.postgres_direct import DirectPostgres
from tenet.store.sqlite_direct import DirectSqlite


def _user_ids(values: Any) -> set[str]:
    found: set[str] = set()
    if isinstance(values, dict):
        for v in values.values():
            found |= _user_ids(v)
    elif isinstance(values, list | tuple | set):
        for v in values:
            found |= _user_ids(v)
    elif isinstance(values, str) and values.startswith("usr_") and len(values) == 26:
        found.add(values)
    return found


@BOTH_AUTH
async def test_no_store_session_touches_two_users(deploy) -> None:
    seen: list[dict[str, Any]] = []

    def track(session: Session) -> set[str]:
        if "tracked" not in session.info:
            session.info["tracked"] = set()
            seen.append(session.info)
        return session.info["tracked"]

    def on_execute(state: ORMExecuteState) -> None:
        ids = track(state.session)
        if not state.is_insert:  # bulk inserts carry their values in the parameters
            ids |= _user_ids(state.statement.compile().params)
        ids |= _user_ids(state.parameters)

    def on_flush(session: Session, _ctx: Any, _instances: Any) -> None:
        ids = track(session)
        for obj in session.new | session.dirty:
            ids |= _user_ids(getattr(obj, "user_id", None))

    # The store's hot path runs units of work through its executor (on SQLite several
    # share one commit): each unit is one "session" here, attributed by the ids it was
    # given. A call's arguments are (the unit, the unit's arguments, ...).
    def unit_session(args: tuple[Any, ...]) -> dict[str, Any]:
        unit, unit_args = args[0], args[1]
        info: dict[str, Any] = {"tracked": _user_ids(list(unit_args))}
        if unit.__qualname__ == "EventWriter._transaction":  # the event writer's batch
            info["role"] = "event-writer"
        return info

    original_call = DirectSqlite._call

    def tracked_call(self: DirectSqlite, conn: Any, fn: Any, args: tuple[Any, ...]) -> Any:
        seen.append(unit_session(args))
        return original_call(self, conn, fn, args)

    # The same on Postgres: each call of the asyncpg pool is one "session".
    original_pg_transaction = DirectPostgres._transaction

    async def tracked_pg_transaction(
        self: DirectPostgres, fn: Any, args: tuple[Any, ...], write: bool
    ) -> Any:
        seen.append(unit_session(args))
        return await original_pg_transaction(self, fn, args, write)

    event.listen(Session, "do_orm_execute", on_execute)
    event.listen(Session, "before_flush", on_flush)
    DirectSqlite._call = tracked_call  # type: ignore[method-assign]
    DirectPostgres._transaction = tracked_pg_transaction  # type: ignore[method-assign]
    try:
        async with deploy() as d:
            users = await d.users(8)

            async def work(u) -> None:
                ws = await u.socket()
                await u.run(ws, "assistant", f"remember that {u.name} likes tea")
                await u.run(ws, "assistant", "what did I say?")
                await u.run(ws, "researcher", "python")
                thread_id = u.events[0]["thread_id"]
                await u.stored(thread_id)
                await ws.close()

            await asyncio.gather(*(work(u) for u in users))
    finally:
        DirectSqlite._call = original_call  # type: ignore[method-assign]
        DirectPostgres._transaction = original_pg_transaction  # type: ignore[method-assign]
        event.remove(Session, "do_orm_execute", on_execute)
        event.remove(Session, "before_flush", on_flush)

    request_sessions = [info for info in seen if info.get("role") != "event-writer"]
    writer_sessions = [info for info in seen if info.get("role") == "event-writer"]
    assert len(request_sessions) > 50, "the tracker saw the store at work"
    shared = [sorted(info["tracked"]) for info in request_sessions if len(info["tracked"]) > 1]
    assert shared == [], f"sessions shared between users: {shared[:3]}"
    assert writer_sessions, "events were written by the batch writer"
