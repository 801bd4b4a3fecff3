"""The reads a thread's conversation is built from: its turn events, newest first, in pages.

:mod:`tenet.conversation` asks for one page at a time and stops as soon as the
context budget is spent, so what is read is bounded by the budget, not by the
length of the thread. Only the event types a conversation is made of are
returned (a run's start and end, its tool calls and results, ``TURN_MARKS``),
through a partial index on them: streamed text and reasoning are not even read. Every read filters by the caller's
``user_id`` beside the thread id: another user's events are never returned,
even for a thread id they share.

Each backend reads through its own path (plain sqlite3 or asyncpg where the
store has one, the ORM otherwise); the rows are the same.
"""

from __future__ import annotations

import sqlite3
from typing import TYPE_CHECKING, Any

from sqlalchemy import select, text

from .tables import TURN_MARKS, EventRow

if TYPE_CHECKING:
    import asyncpg

    from .db import Store


#: A ``seq`` above every stored one (the column is a 32-bit integer): "from the newest".
NEWEST = 2**31 - 1


async def turn_events_before(
    store: Store, user_id: str, thread_id: str, before: int, limit: int, skip_run: str
) -> list[tuple[int, str]]:
    """Up to ``limit`` ``(seq, body)`` of the thread's turn events with ``seq < before``,
    newest first, leaving out the run ``skip_run`` (the one asking)."""
    if store.direct is not None:
        return await store.direct.read(_sqlite, user_id, thread_id, before, limit, skip_run)
    if store.pg is not None:
        return await store.pg.read(_postgres, user_id, thread_id, before, limit, skip_run)
    async with store.read() as s:
        q = (
            select(EventRow.seq, EventRow.body)
            .where(
                EventRow.thread_id == thread_id,
                EventRow.user_id == user_id,
                EventRow.seq < before,
                text(TURN_MARKS),
                EventRow.run_id != skip_run,
            )
            .order_by(EventRow.seq.desc())
            .limit(limit)
        )
        return [(int(seq), body) for seq, body in (await s.execute(q)).all()]


_SQLITE = (
    "SELECT seq, body FROM events WHERE thread_id = ? AND user_id = ? AND seq < ? "
    f"AND {TURN_MARKS} AND run_id != ? ORDER BY seq DESC LIMIT ?"
)


def _sqlite(
    conn: sqlite3.Connection, user_id: str, thread_id: str, before: int, limit: int, skip: str
) -> list[tuple[int, str]]:
    return conn.execute(_SQLITE, (thread_id, user_id, before, skip, limit)).fetchall()


_POSTGRES = (
    "SELECT seq, body FROM events WHERE thread_id = $1 AND user_id = $2 AND seq < $3 "
    f"AND {TURN_MARKS} AND run_id != $4 ORDER BY seq DESC LIMIT $5"
)


async def _postgres(
    conn: asyncpg.Connection, user_id: str, thread_id: str, before: int, limit: int, skip: str
) -> list[tuple[int, Any]]:
    rows = await conn.fetch(_POSTGRES, thread_id, user_id, before, skip, limit)
    return [(int(r[0]), r[1]) for r in rows]
