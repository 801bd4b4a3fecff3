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

from typing import TYPE_CHECKING

from ..events import IDENTITY_FIELDS, RUN_CANCELLED, Event, RunEnd
from . import statements as q
from .executor import count, one

if TYPE_CHECKING:
    from .db import Store
    from .units import Steps

#: Statuses a cancel request may move to ``cancelling``, by who asks.
RUNNING = ("running",)
STARTED_OR_QUEUED = ("queued", "running")

_REQUESTS = {
    RUNNING: q.REQUEST_CANCEL_RUNNING,
    STARTED_OR_QUEUED: q.REQUEST_CANCEL_STARTED_OR_QUEUED,
}


async def request_cancel(
    store: Store, user_id: str, run_id: str, *, from_statuses: tuple[str, ...] = RUNNING
) -> bool:
    """Store a cancel request: ``from_statuses`` become ``cancelling``; True if it won.

    False when the row was in no such status (ended, missing, or another's).
    ``from_statuses`` is :data:`RUNNING` (a run executing elsewhere) or
    :data:`STARTED_OR_QUEUED` (a run this process started, its start maybe not stored yet).
    """
    return bool(await store.executor.run(_request, _REQUESTS[from_statuses], user_id, run_id))


def _request(statement: q.Statement, user_id: str, run_id: str) -> Steps:
    return (yield count(statement, user_id, run_id)) > 0


def _contested(events: list[Event]) -> list[str]:
    """Runs whose end in ``events`` is not a cancellation: a cancel may have come first."""
    return sorted({e.run_id for e in events if e.end is not None and e.end.status != "cancelled"})


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


def decide_ends(events: list[Event], reasons: dict[str, str]) -> Steps:
    """Part of the batch's transaction: turn ends that lost to a cancel into ``run_cancelled``.

    Each contested run's row is read (on Postgres: locked, in id order, so two writers
    never wait on each other in a circle) before the ends are stored in the same
    transaction; a cancel request that comes later finds the run ended and loses.
    """
    statuses: dict[str, str] = {}
    for run_id in _contested(events):
        row = yield one(q.RUN_STATUS_FOR_UPDATE, run_id)
        if row is not None:
            statuses[run_id] = row[0]
    if statuses:
        _apply(events, statuses, reasons)
