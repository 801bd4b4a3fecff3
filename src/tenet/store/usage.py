"""Token usage in the store: a run's counters, and a user's totals since a time.

The counters live on the run's row (``input_tokens``, ``output_tokens``,
``model_calls``; migration ``0005_usage``), incremented after each model call,
so a user's usage is a sum over their runs, in whichever process they ran.
Every query is scoped by the caller's ``user_id``.
"""

from __future__ import annotations

import sqlite3
from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy import func, select, update

from .sqlite_direct import to_db_time
from .tables import Run

if TYPE_CHECKING:
    import asyncpg

    from .db import Store


async def add_run_usage(
    store: Store, user_id: str, run_id: str, input_tokens: int, output_tokens: int, calls: int
) -> None:
    """Add one model call's cost to the run's counters."""
    args = (user_id, run_id, input_tokens, output_tokens, calls)
    if store.direct is not None:
        await store.direct.write(_sqlite_add, *args)
        return
    if store.pg is not None:
        await store.pg.write(_pg_add, *args)
        return
    async with store.write() as s:
        await s.execute(
            update(Run)
            .where(Run.id == run_id, Run.user_id == user_id)
            .values(
                input_tokens=Run.input_tokens + input_tokens,
                output_tokens=Run.output_tokens + output_tokens,
                model_calls=Run.model_calls + calls,
            )
        )


_ADD = (
    "UPDATE runs SET input_tokens = input_tokens + {i}, output_tokens = output_tokens + {o}, "
    "model_calls = model_calls + {c} WHERE id = {run} AND user_id = {user}"
)
_SQLITE_ADD = _ADD.format(i="?", o="?", c="?", run="?", user="?")
_PG_ADD = _ADD.format(i="$1", o="$2", c="$3", run="$4", user="$5")


def _sqlite_add(
    conn: sqlite3.Connection, user_id: str, run_id: str, i: int, o: int, c: int
) -> None:
    conn.execute(_SQLITE_ADD, (i, o, c, run_id, user_id))


async def _pg_add(
    conn: asyncpg.Connection, user_id: str, run_id: str, i: int, o: int, c: int
) -> None:
    await conn.execute(_PG_ADD, i, o, c, run_id, user_id)


async def usage_by_agent(
    store: Store, user_id: str, since: datetime
) -> dict[str, tuple[int, int, int, int]]:
    """``agent -> (input_tokens, output_tokens, model_calls, runs)`` of the user's runs
    created at or after ``since``."""
    q = (
        select(
            Run.agent,
            func.coalesce(func.sum(Run.input_tokens), 0),
            func.coalesce(func.sum(Run.output_tokens), 0),
            func.coalesce(func.sum(Run.model_calls), 0),
            func.count(),
        )
        .where(Run.user_id == user_id, Run.created_at >= since)
        .group_by(Run.agent)
        .order_by(Run.agent)
    )
    async with store.read() as s:
        rows = (await s.execute(q)).all()
    return {agent: (int(i), int(o), int(c), int(n)) for agent, i, o, c, n in rows}


async def tokens_since(store: Store, user_id: str, since: datetime) -> int:
    """The user's input plus output tokens in runs created at or after ``since``."""
    if store.direct is not None:
        return await store.direct.read(_sqlite_tokens, user_id, to_db_time(since))
    if store.pg is not None:
        return await store.pg.read(_pg_tokens, user_id, since)
    q = select(func.coalesce(func.sum(Run.input_tokens + Run.output_tokens), 0)).where(
        Run.user_id == user_id, Run.created_at >= since
    )
    async with store.read() as s:
        return int(await s.scalar(q) or 0)


_TOKENS = (
    "SELECT coalesce(sum(input_tokens + output_tokens), 0) FROM runs "
    "WHERE user_id = {user} AND created_at >= {since}"
)


def _sqlite_tokens(conn: sqlite3.Connection, user_id: str, since: str) -> int:
    row = conn.execute(_TOKENS.format(user="?", since="?"), (user_id, since)).fetchone()
    return int(row[0] or 0)


async def _pg_tokens(conn: asyncpg.Connection, user_id: str, since: datetime) -> int:
    return int(await conn.fetchval(_TOKENS.format(user="$1", since="$2"), user_id, since) or 0)
