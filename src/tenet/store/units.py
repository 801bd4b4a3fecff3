"""The store's units of work: each transaction of the hot path, written once.

A unit is a generator that yields the statements it runs (see
:mod:`tenet.store.executor`) and decides, from their results, what to run
next; every executor runs it the same way, in one transaction. Each is a
function of the database alone: run again on a rolled-back state it does
exactly what it did the first time (SQLite's group commit relies on that).
"""

from __future__ import annotations

from collections.abc import Generator
from datetime import datetime
from typing import Any

from . import statements as q
from .executor import LockBusy, Op, count, each, each_one, one, rows

Steps = Generator[Op, Any, Any]


def thread_owned(user_id: str, thread_id: str) -> Steps:
    """The thread's (id, user_id, metadata, created_at) if it is the user's, else None."""
    return (yield one(q.THREAD_OWNED, user_id, thread_id))


def last_seq(user_id: str, thread_id: str) -> Steps:
    """The highest ``seq`` of the user's thread; 0 without events or for a foreign thread.

    Every event of a thread is its owner's, so the newest one's ``user_id`` says whose."""
    found = yield one(q.NEWEST_SEQ, thread_id)
    return int(found[0]) if found is not None and found[1] == user_id else 0


def insert_thread(
    thread_id: str,
    user_id: str,
    metadata: dict[str, Any],
    created: datetime,
    limit: int | None,
) -> Steps:
    """A new thread of the user; False when the user already holds ``limit`` threads."""
    if limit is None:
        stored = yield count(q.INSERT_THREAD, thread_id, user_id, metadata, created)
    else:
        yield one(q.LOCK_USER, user_id)  # concurrent creations count one after the other
        stored = yield count(
            q.INSERT_THREAD_WITHIN_LIMIT, thread_id, user_id, metadata, created, limit
        )
    return stored > 0


def insert_run(run: dict[str, Any], message_id: str, max_queued: int | None) -> Steps:
    """The run and the user's message: ``"stored"``, ``"not_found"`` (the thread is not the
    user's, or is being deleted) or ``"full"`` (``max_queued`` runs of the user wait
    already, counted by the statement that stores the run, the user's row locked first so
    that concurrent runs are counted one after the other)."""
    values = (
        run["id"],
        run["user_id"],
        run["thread_id"],
        run["agent"],
        run["input"],
        run["meta"],
        run["created_at"],
        message_id,
    )
    if max_queued is None:
        stored = yield count(q.INSERT_RUN, *values)
    else:
        yield one(q.LOCK_USER, run["user_id"])  # concurrent runs count one after the other
        stored = yield count(q.INSERT_RUN_WITHIN_LIMIT, *values, max_queued)
    if stored:
        return "stored"
    open_ = yield one(q.THREAD_OPEN, run["user_id"], run["thread_id"], run["created_at"])
    return "full" if open_ is not None else "not_found"


def mark_thread_deleting(user_id: str, thread_id: str, until: datetime) -> Steps:
    """Mark the thread as being deleted until ``until``; False if it is not the user's."""
    return (yield count(q.MARK_THREAD_DELETING, user_id, thread_id, until)) > 0


def clear_thread_deleting(user_id: str, thread_id: str, until: datetime) -> Steps:
    """Clear the delete mark ``until`` (a delete that gave up)."""
    yield count(q.CLEAR_THREAD_DELETING, user_id, thread_id, until)


def select_run(user_id: str, run_id: str) -> Steps:
    """The run's row (``statements.RUN_COLUMNS``) if it is the user's, else None."""
    return (yield one(q.SELECT_RUN, user_id, run_id))


def update_run(user_id: str, run_id: str, values: dict[str, Any]) -> Steps:
    """Set run fields; a finished run keeps its terminal status."""
    if not values:
        return None
    names = tuple(sorted(values))
    yield count(q.update_run(names), user_id, run_id, *(values[n] for n in names))
    return None


def start_run(user_id: str, run_id: str, now: datetime | int, worker_id: str) -> Steps:
    """The run's start (see :data:`tenet.store.statements.START_RUN`)."""
    yield count(q.START_RUN, user_id, run_id, now, worker_id)


def finish_run(
    user_id: str,
    run_id: str,
    status: str,
    output: str | None,
    error: dict[str, Any] | None,
    now: datetime | int,
    message_id: str,
) -> Steps:
    """Terminal status, output and the assistant's message (a no-op on a finished run)."""
    yield count(q.END_RUN, user_id, run_id, status, output, error, now, message_id)


def select_events(user_id: str, thread_id: str, after: int, limit: int) -> Steps:
    """Stored event bodies of the thread with ``seq > after``, ascending."""
    found = yield rows(q.SELECT_EVENTS, user_id, thread_id, after, limit)
    return [r[0] for r in found]


def max_seqs(thread_ids: list[str]) -> Steps:
    """The highest stored ``seq`` of each thread (0 for a thread without events)."""
    if not thread_ids:
        return {}
    found = yield each_one(q.MAX_SEQ, [(t,) for t in thread_ids])
    return {t: int(r[0] or 0) for t, r in zip(thread_ids, found, strict=True)}


def insert_events(batch: list[tuple[Any, ...]]) -> Steps:
    """Events, as rows in ``statements.EVENT_COLUMNS`` order (a batch in one go)."""
    yield each(q.INSERT_EVENT, batch)


def turn_events_before(
    user_id: str, thread_id: str, before: int, limit: int, skip_run: str, fresh: int, low: int
) -> Steps:
    """Up to ``limit`` ``(seq, run_id, type, body)`` of the thread's turn events with
    ``low <= seq < before``, newest first, leaving out the run ``skip_run``; ``body`` is None
    for ``seq <= fresh``. The marks come from the index alone; the bodies above ``fresh``,
    if any, by a second statement."""
    marks = yield rows(q.TURN_MARKS_BEFORE, user_id, thread_id, low, before, skip_run, limit)
    if not marks or int(marks[0][0]) <= fresh:  # every text left out: one index-only read
        return [(int(r[0]), r[1], r[2], None) for r in marks]
    low = max(fresh + 1, int(marks[-1][0]))
    found = yield rows(q.TURN_BODIES_BETWEEN, user_id, thread_id, low, int(marks[0][0]), skip_run)
    bodies = {int(r[0]): r[1] for r in found}
    get = bodies.get
    return [(seq := int(r[0]), r[1], r[2], get(seq)) for r in marks]


def turn_bodies_between(user_id: str, thread_id: str, low: int, high: int, skip_run: str) -> Steps:
    """``{seq: body}`` of the thread's turn events with ``low <= seq <= high``."""
    found = yield rows(q.TURN_BODIES_BETWEEN, user_id, thread_id, low, high, skip_run)
    return {int(r[0]): r[1] for r in found}


def add_run_usage(
    user_id: str, run_id: str, input_tokens: int, output_tokens: int, calls: int
) -> Steps:
    """Add one model call's cost to the run's counters."""
    yield count(q.ADD_RUN_USAGE, user_id, run_id, input_tokens, output_tokens, calls)


def tokens_since(user_id: str, since: datetime) -> Steps:
    """The user's input plus output tokens in runs created at or after ``since``."""
    row = yield one(q.TOKENS_SINCE, user_id, since)
    return int(row[0] or 0) if row is not None else 0


def usage_by_agent(user_id: str, since: datetime) -> Steps:
    """``agent -> (input_tokens, output_tokens, model_calls, runs)`` since ``since``."""
    found = yield rows(q.USAGE_BY_AGENT, user_id, since)
    return {r[0]: (int(r[1]), int(r[2]), int(r[3]), int(r[4])) for r in found}


def claim_runs(worker_id: str, limit: int, user_max: int, now: datetime) -> Steps:
    """The claim of :meth:`Store.claim_runs`, as run rows (None: the claim lock was busy).

    Runs in one transaction holding the cluster's claim lock, so per-user counts
    cannot race between processes.
    """
    try:
        yield one(q.CLAIM_LOCK_TAKE)
    except LockBusy:
        return None
    found = yield rows(q.CLAIM_CANDIDATES, limit * 8)
    candidates = [tuple(r) for r in found]
    # Each candidate carries its user's running runs, cluster-wide.
    running = {r[1]: int(r[len(q.RUN_COLUMNS)]) for r in candidates}
    # Users take turns: each user's first runnable run before anyone's second.
    rank: dict[str, int] = {}
    ordered = []
    for r in candidates:
        rank[r[1]] = rank.get(r[1], 0) + 1
        ordered.append((rank[r[1]], r[9], r[0], r))
    chosen: list[tuple[Any, ...]] = []
    for _, _, _, r in sorted(ordered, key=lambda t: t[:3]):
        if len(chosen) >= limit:
            break
        if running.get(r[1], 0) >= user_max:
            continue
        running[r[1]] = running.get(r[1], 0) + 1
        chosen.append(r)
    if chosen:
        yield each(q.CLAIM_RUN, [(r[0], worker_id, now) for r in chosen])
    return chosen


# Runs waiting for a person (tenet.store.approvals) -----------------------------------------


def insert_request(row: tuple[Any, ...]) -> Steps:
    """A pending request, as a row in ``statements.REQUEST_COLUMNS`` order."""
    yield count(q.INSERT_REQUEST, *row)


def pause_run(user_id: str, run_id: str, state: dict[str, Any]) -> Steps:
    """A running run waits for a person (``requires_action``), resumable from ``state``."""
    yield count(q.PAUSE_RUN, user_id, run_id, state)


def answer_request(
    user_id: str, run_id: str, request_id: str, kind: str, answer: Any, now: datetime | None
) -> Steps:
    """Answer a pending request of the user's run: its row (``SELECT_REQUEST``), or
    ``"not_found"`` (missing, another user's, another kind), ``"conflict"`` (answered) or
    ``"expired"`` (its ``expires_at`` is not after ``now``: too late for a person's answer,
    whether or not the timeout sweep has come by; ``now`` None, the timeout's own, skips it)."""
    row = yield one(q.SELECT_REQUEST, user_id, run_id, request_id)
    if row is None or row[0] != kind:
        return "not_found"
    if row[1] != "pending":
        return "conflict"
    if now is not None and row[7] <= now:
        return "expired"
    stored = yield count(q.ANSWER_REQUEST, user_id, run_id, request_id, answer)
    return tuple(row) if stored else "conflict"


def select_request(user_id: str, run_id: str, request_id: str) -> Steps:
    """A request of the user's run (``SELECT_REQUEST``), or None."""
    return (yield one(q.SELECT_REQUEST, user_id, run_id, request_id))


def resume_run(user_id: str, run_id: str) -> Steps:
    """True if this call moved the waiting run, all its requests answered, to ``queued``."""
    return (yield count(q.RESUME_RUN, user_id, run_id)) > 0


def stranded_runs() -> Steps:
    """``(user_id, run_id)`` of waiting runs with nothing pending (see ``STRANDED_RUNS``)."""
    found = yield rows(q.STRANDED_RUNS)
    return [tuple(r) for r in found]


def answered_requests(user_id: str, run_id: str, round: int) -> Steps:
    """``(id, kind, body, answer)`` of the answered requests of the run's pause ``round``."""
    found = yield rows(q.ANSWERED_REQUESTS, user_id, run_id, round)
    return [tuple(r) for r in found]


def pending_requests(user_id: str, run_id: str) -> Steps:
    """``id`` of the run's pending requests (see ``PENDING_REQUESTS``)."""
    found = yield rows(q.PENDING_REQUESTS, user_id, run_id)
    return [r[0] for r in found]


def expired_requests(now: datetime, limit: int) -> Steps:
    """``(user_id, run_id, id, kind)`` of up to ``limit`` pending requests past expiry."""
    found = yield rows(q.EXPIRED_REQUESTS, now, limit)
    return [tuple(r) for r in found]


def cancel_waiting(user_id: str, run_id: str) -> Steps:
    """A waiting run becomes ``cancelling`` and its requests are closed; True if it was waiting."""
    won = yield count(q.REQUEST_CANCEL_WAITING, user_id, run_id)
    if won:
        yield count(q.CANCEL_REQUESTS, user_id, run_id)
    return won > 0


def close_requests(user_id: str, run_id: str) -> Steps:
    """The run's pending requests closed (it ended without waiting for them)."""
    yield count(q.CANCEL_REQUESTS, user_id, run_id)


def user_runs_with_status(user_id: str, status: str, limit: int) -> Steps:
    """Run rows of the user in ``status``, newest first."""
    found = yield rows(q.USER_RUNS_WITH_STATUS, user_id, status, limit)
    return [tuple(r) for r in found]
