"""Runs waiting for a person, in the store: their requests and the state they resume from.

A request (an approval of a tool call, or a question) is a row of
``run_requests``, inserted in the same transaction as the event that announces
it (the writer stores an event's :class:`~tenet.events.RunPause`), so a client
that has seen ``approval_requested`` can answer it at once, on any process. The
last request of a pause also makes the run ``requires_action`` and stores what
it resumes from in ``runs.resume_state``.

Every call is scoped by the caller's ``user_id``: a request of another user's
run is "not found", exactly like one that does not exist. An answer is taken
once (a second is a conflict), and the answer that leaves a waiting run with no
pending request moves it back to ``queued``, once, whichever process took it.
Each statement is in :mod:`tenet.store.statements`, each transaction in
:mod:`tenet.store.units`, the same on every database.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from ..errors import Conflict, NotFound
from ..ids import is_valid
from . import units
from .rows import run_from_row

if TYPE_CHECKING:
    from .db import Store
    from .tables import Run

#: The kinds of request, as stored and as their events name them.
APPROVAL = "approval"
INPUT = "input"


def request_row(request: dict[str, Any], created: int) -> tuple[Any, ...]:
    """A request's row in ``statements.REQUEST_COLUMNS`` order (times in microseconds)."""
    return (
        request["run_id"],
        request["id"],
        request["user_id"],
        request["thread_id"],
        request["execution_id"],
        request["agent_name"],
        request["kind"],
        request["round"],
        request["body"],
        request["expires_at"],
        created,
    )


@dataclass(frozen=True, slots=True)
class Answered:
    """A request just answered: where its event goes and what it asked."""

    kind: str
    body: dict[str, Any]
    thread_id: str
    execution_id: str
    agent_name: str


async def request(store: Store, user_id: str, run_id: str, request_id: str, kind: str) -> Answered:
    """A request of the user's run, pending or not; ``NotFound`` otherwise (or another kind)."""
    if not is_valid(run_id, "run") or not request_id or len(request_id) > 200:
        raise NotFound()
    row = await store.executor.run(units.select_request, user_id, run_id, request_id, write=False)
    if row is None or row[0] != kind:
        raise NotFound()
    if row[1] != "pending":
        raise Conflict("this request was already answered")
    return Answered(row[0], row[2] or {}, row[3], row[4], row[5])


class Expired(Conflict):
    """A person's answer to a request past its ``expires_at``: the timeout resolves it."""

    def __init__(self) -> None:
        super().__init__("this request expired before it was answered; it was resolved by timeout")


async def answer(
    store: Store,
    user_id: str,
    run_id: str,
    request_id: str,
    kind: str,
    value: dict[str, Any],
    now: datetime | None,
) -> Answered:
    """Store the first answer to a pending request; ``NotFound`` / ``Conflict`` otherwise.

    A person's answer passes ``now``: a request whose ``expires_at`` is not after it is
    not answered but refused with :class:`Expired` (in the same transaction as the
    check, so the timeout sweep's lag never lets a late answer in). The timeout's own
    answer passes None.
    """
    if not is_valid(run_id, "run") or not request_id or len(request_id) > 200:
        raise NotFound()
    found = await store.executor.run(
        units.answer_request, user_id, run_id, request_id, kind, value, now
    )
    if found == "not_found":
        raise NotFound()
    if found == "conflict":
        raise Conflict("this request was already answered")
    if found == "expired":
        raise Expired()
    return Answered(found[0], found[2] or {}, found[3], found[4], found[5])


async def resume(store: Store, user_id: str, run_id: str) -> bool:
    """Move the waiting run back to ``queued`` if none of its requests is pending (once)."""
    return bool(await store.executor.run(units.resume_run, user_id, run_id))


async def stranded(store: Store) -> list[tuple[str, str]]:
    """``(user_id, run_id)`` of every user's waiting runs that have nothing pending (start-up:
    a process stopped between an answer and queueing its run again)."""
    return await store.executor.run(units.stranded_runs, write=False)


async def answered(
    store: Store, user_id: str, run_id: str, round: int
) -> list[tuple[str, str, dict[str, Any], dict[str, Any]]]:
    """``(id, kind, body, answer)`` of the answered requests of the run's pause ``round``."""
    return await store.executor.run(units.answered_requests, user_id, run_id, round, write=False)


async def pending(store: Store, user_id: str, run_id: str) -> list[str]:
    """Ids of the user's run's pending requests, in order (none for another user's run)."""
    if not is_valid(run_id, "run"):
        return []
    return await store.executor.run(units.pending_requests, user_id, run_id, write=False)


async def expired(store: Store, now: datetime, limit: int = 100) -> list[tuple[str, ...]]:
    """``(user_id, run_id, id, kind)`` of pending requests past their expiry (every user's:
    the timeout sweep answers them as ``timeout``)."""
    return await store.executor.run(units.expired_requests, now, limit, write=False)


async def cancel_waiting(store: Store, user_id: str, run_id: str) -> bool:
    """Cancel a waiting run: ``cancelling``, its requests closed; False if it was not waiting."""
    return bool(await store.executor.run(units.cancel_waiting, user_id, run_id))


async def close(store: Store, user_id: str, run_id: str) -> None:
    """Close the run's pending requests: it ended without waiting for them."""
    await store.executor.run(units.close_requests, user_id, run_id)


async def runs_with_status(store: Store, user_id: str, status: str, limit: int) -> list[Run]:
    """The user's runs in ``status``, newest first."""
    found = await store.executor.run(
        units.user_runs_with_status, user_id, status, limit, write=False
    )
    return [run_from_row(r) for r in found]
