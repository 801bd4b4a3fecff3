"""The one decision between a run's cancellation and its end, made in the store.

A run ends once. When a cancel request and the run's own end (``agent_completed``
or ``agent_error`` at depth 0) race, the ``runs`` row decides, on every backend
and across processes, whichever reaches it first:

- A cancel request moves the row from ``running`` (or, on one process, a run not
  yet marked started, ``queued``) to ``cancelling`` in one conditional statement
  (:func:`request_cancel`). If the row has already ended, the request lost: the
  answer is the run's terminal status, never ``cancel_accepted``.
- A run's end is stored in the transaction that reads (on Postgres: locks) its
  row first (:func:`decide_ends`). If a cancel got there first (``cancelling``),
  the end becomes ``run_cancelled`` before it is stored or sent: the client that
  was told ``cancel_accepted`` sees the run end cancelled.
"""

from __future__ import annotations

import sqlite3
from typing import TYPE_CHECKING, Any

from sqlalchemy import select, update

from ..events import IDENTITY_FIELDS, RUN_CANCELLED, Event, RunEnd
from .tables import Run

if TYPE_CHECKING:
    import asyncpg
    from sqlalchemy.ext.asyncio import AsyncSession

    from .db import Store

#: Statuses a cancel request may move to ``cancelling``, by who asks.
RUNNING = ("running",)
STARTED_OR_QUEUED = ("queued", "running")


async def request_cancel(
    store: Store, user_id: str, run_id: str, *, from_statuses: tuple[str, ...] = RUNNING
) -> bool:
    """Store a cancel request: ``from_statuses`` become ``cancelling``; True if it won.

    False when the row was in no such status (ended, missing, or another's).
    """
    marks = ", ".join("'" + s + "'" for s in from_statuses)
    if store.direct is not None:

        def direct(conn: sqlite3.Connection) -> bool:
            cur = conn.execute(
                "UPDATE runs SET status = 'cancelling' WHERE id = ? AND user_id = ? "
                f"AND status IN ({marks})",
                (run_id, user_id),
            )
            return cur.rowcount > 0

        return bool(await store.direct.write(direct))
    if store.pg is not None:

        async def pg(conn: asyncpg.Connection) -> bool:
            result = await conn.execute(
                "UPDATE runs SET status = 'cancelling' WHERE id = $1 AND user_id = $2 "
                f"AND status IN ({marks})",
                run_id,
                user_id,
            )
            return str(result).rsplit(" ", 1)[-1] != "0"

        return bool(await store.pg.write(pg))
    async with store.write() as s:
        result = await s.execute(
            update(Run)
            .where(Run.id == run_id, Run.user_id == user_id, Run.status.in_(from_statuses))
            .values(status="cancelling")
        )
    return bool(result.rowcount)  # type: ignore[attr-defined]


def _contested(events: list[Event]) -> list[str]:
    """Runs whose end in ``events`` is not a cancellation: a cancel may have come first."""
    return [e.run_id for e in events if e.end is not None and e.end.status != "cancelled"]


def _apply(events: list[Event], statuses: dict[str, str], reasons: dict[str, str]) -> None:
    for event in events:
        if event.end is None or event.end.status == "cancelled":
            continue
        if statuses.get(event.run_id) != "cancelling":
            continue
        data = {k: event.data[k] for k in IDENTITY_FIELDS if k in event.data}
        data["type"] = RUN_CANCELLED
        data["status"] = "cancelled"
        data["reason"] = reasons.pop(event.run_id, "user")
        for carried in ("usage",):  # run-wide fields a terminal event carries
            if carried in event.data:
                data[carried] = event.data[carried]
        event.data = data
        event.end = RunEnd("cancelled")


def decide_ends_sqlite(
    conn: sqlite3.Connection, events: list[Event], reasons: dict[str, str]
) -> None:
    """Inside the batch's transaction: turn ends that lost to a cancel into ``run_cancelled``."""
    runs = _contested(events)
    if not runs:
        return
    marks = ",".join("?" * len(runs))
    rows = conn.execute(f"SELECT id, status FROM runs WHERE id IN ({marks})", runs).fetchall()
    _apply(events, {r[0]: r[1] for r in rows}, reasons)


async def decide_ends_pg(
    conn: asyncpg.Connection, events: list[Event], reasons: dict[str, str]
) -> None:
    """As :func:`decide_ends_sqlite`, locking the rows until the transaction ends."""
    runs = _contested(events)
    if not runs:
        return
    rows = await conn.fetch(
        "SELECT id, status FROM runs WHERE id = ANY($1::varchar[]) ORDER BY id FOR UPDATE", runs
    )
    _apply(events, {r[0]: r[1] for r in rows}, reasons)


async def decide_ends_orm(s: AsyncSession, events: list[Event], reasons: dict[str, str]) -> None:
    """As :func:`decide_ends_pg`, through a session the caller commits."""
    runs = _contested(events)
    if not runs:
        return
    q = select(Run.id, Run.status).where(Run.id.in_(runs)).order_by(Run.id).with_for_update()
    rows: Any = (await s.execute(q)).all()
    _apply(events, {r[0]: r[1] for r in rows}, reasons)
