"""The store's statements, each written once in SQLAlchemy Core over the tables.

Every statement the store's units run is declared here with the names of its
parameters, in the order a unit passes them. :func:`compiled` compiles the
whole catalogue once per dialect (SQLite for ``sqlite3``, Postgres for
``asyncpg``), the first time an executor of that dialect starts: SQL text,
the driver's parameter order, and the converters of its parameters and result
columns, chosen from the columns' types (a time is text on SQLite and
``timestamptz`` on Postgres; JSON is text on both). No statement is built or
compiled while a request is served, which is what made the ORM slow on the hot
path; executing compiled text costs what hand-written SQL did.

Constants (a status, a lock key) are written into the SQL, never bound, so a
statement's parameters are exactly the ones it declares; compiling fails on
anything else.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cache
from typing import Any

import orjson
from sqlalchemy import (
    JSON,
    DateTime,
    Integer,
    String,
    Text,
    and_,
    bindparam,
    case,
    exists,
    func,
    insert,
    literal_column,
    null,
    or_,
    select,
    text,
    true,
    tuple_,
    update,
)
from sqlalchemy.dialects import sqlite
from sqlalchemy.engine import Dialect
from sqlalchemy.sql import ClauseElement
from sqlalchemy.types import TypeEngine

from ..clock import db_time, to_datetime
from .executor import Compiled, Convert
from .tables import TURN_MARKS, EventRow, Message, Run, RunRequest, Thread, User

runs = Run.__table__
threads = Thread.__table__
users = User.__table__
messages = Message.__table__
events = EventRow.__table__
run_requests = RunRequest.__table__

TERMINAL = ("completed", "failed", "cancelled")
ACTIVE = ("running", "cancelling")
#: The statuses that hold a thread: a later run of the thread waits for them to end. A run
#: waiting for a person (``requires_action``) holds its thread but no execution slot.
LANE_HOLDING = ("running", "cancelling", "requires_action")
#: The advisory lock that serializes claimers across the cluster (held per transaction).
CLAIM_LOCK = 7312001

#: The columns of a run, in the order of every statement that reads whole runs.
RUN_COLUMNS = tuple(runs.c)


def const(value: str | int) -> Any:
    """A constant written into the SQL (a trusted literal of this module, never user data)."""
    if isinstance(value, int):
        return literal_column(str(int(value)))
    assert "'" not in value
    return literal_column(f"'{value}'")


def _one_of(column: Any, values: tuple[str, ...]) -> Any:
    return column.in_([const(v) for v in values])


def _none_of(column: Any, values: tuple[str, ...]) -> Any:
    return column.not_in([const(v) for v in values])


def p(name: str, type_: TypeEngine[Any] | type[TypeEngine[Any]] = String) -> Any:
    """A parameter of a statement (its type picks its converters)."""
    return bindparam(name, type_=type_)


@dataclass(slots=True)
class Statement:
    """One statement of the catalogue: a Core clause and its parameters' names, in order.

    A *chained* statement is two writes that commit together, the second only for
    the row the first wrote (a run and its message): ``clause`` is the first,
    ``returning`` the columns of its row the second reads, and ``then`` builds the
    second from a source of that row. Where the dialect runs writes inside
    ``WITH`` (Postgres), both compile to one statement, one round trip; elsewhere
    (SQLite, in-process, where a statement costs no round trip) to two, the second
    run for each row the first returned, or, when ``known`` names the parameter
    each returned column was written from, for the row the first counted (no
    ``RETURNING``, which costs SQLite more than the check). Either way the
    statement answers the rows the second wrote.
    """

    name: str
    params: tuple[str, ...]
    clause: ClauseElement
    index: int = field(default=-1)
    then: Callable[[Any], ClauseElement] | None = None
    returning: tuple[Any, ...] = ()
    known: dict[str, str] = field(default_factory=dict)
    #: ``clause`` with ``RETURNING`` (made before either is compiled: SQLAlchemy keeps
    #: a compiled clause's columns, and a copy made later would keep them too).
    returning_clause: Any = None


CATALOGUE: list[Statement] = []


def statement(
    name: str,
    params: tuple[str, ...],
    clause: ClauseElement,
    then: Callable[[Any], ClauseElement] | None = None,
    returning: tuple[Any, ...] = (),
    known: dict[str, str] | None = None,
) -> Statement:
    stmt = Statement(name, params, clause, len(CATALOGUE), then, returning, known or {})
    if returning:
        stmt.returning_clause = clause.returning(*returning)  # type: ignore[attr-defined]
    CATALOGUE.append(stmt)
    return stmt


# Users --------------------------------------------------------------------------------------

#: Holds the user's row until the transaction ends (Postgres; SQLite has one writer and
#: compiles no lock clause): a per-user count and the insert it allows are then atomic
#: across processes (:mod:`tenet.store.user_lock`).
LOCK_USER = statement(
    "lock_user",
    ("user_id",),
    select(users.c.id).where(users.c.id == p("user_id")).with_for_update(),
)

# Threads ------------------------------------------------------------------------------------

THREAD_OWNED = statement(
    "thread_owned",
    ("user_id", "thread_id"),
    select(threads.c.id, threads.c.user_id, threads.c.metadata, threads.c.created_at).where(
        threads.c.id == p("thread_id"), threads.c.user_id == p("user_id")
    ),
)

_THREAD_VALUES = (
    p("id"),
    p("user_id"),
    p("metadata", JSON),
    p("created_at", DateTime(timezone=True)),
)
INSERT_THREAD = statement(
    "insert_thread",
    ("id", "user_id", "metadata", "created_at"),
    insert(threads).from_select(
        ["id", "user_id", "metadata", "created_at"], select(*_THREAD_VALUES)
    ),
)
INSERT_THREAD_WITHIN_LIMIT = statement(
    "insert_thread_within_limit",
    ("id", "user_id", "metadata", "created_at", "limit"),
    insert(threads).from_select(
        ["id", "user_id", "metadata", "created_at"],
        select(*_THREAD_VALUES).where(
            select(func.count())
            .select_from(threads)
            .where(threads.c.user_id == p("user_id"))
            .scalar_subquery()
            < p("limit", Integer)
        ),
    ),
)


def _not_deleting(now: Any) -> Any:
    """A thread accepts runs while it is not being deleted: no delete mark, or one that
    has passed by ``now`` (a deleter that crashed leaves a mark that expires)."""
    return or_(threads.c.deleting_until.is_(None), threads.c.deleting_until <= now)


#: The thread's delete mark set to ``until`` (the transaction that starts a delete):
#: answers 1, or 0 when the thread is not the user's.
MARK_THREAD_DELETING = statement(
    "mark_thread_deleting",
    ("user_id", "thread_id", "until"),
    update(threads)
    .where(threads.c.id == p("thread_id"), threads.c.user_id == p("user_id"))
    .values(deleting_until=p("until", DateTime(timezone=True))),
)
#: The delete mark ``until`` cleared (a delete that gave up); a later mark is left alone.
CLEAR_THREAD_DELETING = statement(
    "clear_thread_deleting",
    ("user_id", "thread_id", "until"),
    update(threads)
    .where(
        threads.c.id == p("thread_id"),
        threads.c.user_id == p("user_id"),
        threads.c.deleting_until == p("until", DateTime(timezone=True)),
    )
    .values(deleting_until=null()),
)
#: The thread's id if it is the user's and accepts runs at ``now``.
THREAD_OPEN = statement(
    "thread_open",
    ("user_id", "thread_id", "now"),
    select(threads.c.id).where(
        threads.c.id == p("thread_id"),
        threads.c.user_id == p("user_id"),
        _not_deleting(p("now", DateTime(timezone=True))),
    ),
)

# Runs ---------------------------------------------------------------------------------------

#: A cancel request (:mod:`tenet.store.run_end`): the run becomes ``cancelling`` only from
#: a status that may still be cancelled; the count says whether the request won.
REQUEST_CANCEL_RUNNING = statement(
    "request_cancel_running",
    ("user_id", "run_id"),
    update(runs)
    .where(
        runs.c.id == p("run_id"),
        runs.c.user_id == p("user_id"),
        _one_of(runs.c.status, ("running",)),
    )
    .values(status=const("cancelling")),
)
REQUEST_CANCEL_STARTED_OR_QUEUED = statement(
    "request_cancel_started_or_queued",
    ("user_id", "run_id"),
    update(runs)
    .where(
        runs.c.id == p("run_id"),
        runs.c.user_id == p("user_id"),
        _one_of(runs.c.status, ("queued", "running")),
    )
    .values(status=const("cancelling")),
)
#: A run's status, its row held until the transaction ends (Postgres; SQLite has one
#: writer): the writer decides a run's end against a cancel request with it.
RUN_STATUS_FOR_UPDATE = statement(
    "run_status_for_update",
    ("run_id",),
    select(runs.c.status).where(runs.c.id == p("run_id")).with_for_update(),
)

SELECT_RUN = statement(
    "select_run",
    ("user_id", "run_id"),
    select(*RUN_COLUMNS).where(runs.c.id == p("run_id"), runs.c.user_id == p("user_id")),
)

_RUN_INSERTED = (
    "id",
    "user_id",
    "thread_id",
    "agent",
    "status",
    "input",
    "metadata",
    "created_at",
    "attempts",
    "input_tokens",
    "output_tokens",
    "model_calls",
)


def _insert_run(*, limited: bool) -> ClauseElement:
    """The run, only if its thread is the user's and not being deleted (and, ``limited``,
    while the user has fewer than ``max_queued`` queued runs, counted in the same statement).

    The thread's row is read ``FOR SHARE`` (Postgres): a delete mark being set waits for
    a run being stored to commit (so the delete finds that run), and a run being stored
    waits for a mark being set, then sees it. SQLite has one writer and no lock clause.
    """
    owned = exists(
        select(threads.c.id)
        .where(
            threads.c.id == p("thread_id"),
            threads.c.user_id == p("user_id"),
            _not_deleting(p("created_at", DateTime(timezone=True))),
        )
        .with_for_update(read=True)
    )
    queued = (
        select(func.count())
        .select_from(runs)
        .where(runs.c.user_id == p("user_id"), runs.c.status == const("queued"))
        .scalar_subquery()
    )
    values = select(
        p("id"),
        p("user_id"),
        p("thread_id"),
        p("agent"),
        const("queued"),
        p("input", Text),
        p("metadata", JSON),
        p("created_at", DateTime(timezone=True)),
        const(0),  # attempts
        const(0),  # input_tokens
        const(0),  # output_tokens
        const(0),  # model_calls
    ).where(and_(owned, queued < p("max_queued", Integer)) if limited else owned)
    return insert(runs).from_select(list(_RUN_INSERTED), values)


def _user_message(run: Any) -> ClauseElement:
    """The user's message of the run ``run`` (a source of the stored run's id) stored."""
    return insert(messages).from_select(
        ["id", "user_id", "thread_id", "run_id", "role", "content", "created_at"],
        select(
            p("message_id"),
            p("user_id"),
            p("thread_id"),
            run.c.id,
            const("user"),
            p("input", Text),
            p("created_at", DateTime(timezone=True)),
        ).select_from(run),
    )


_RUN_PARAMS = (
    "id",
    "user_id",
    "thread_id",
    "agent",
    "input",
    "metadata",
    "created_at",
    "message_id",
)
#: The run and the user's message (chained): answers 1 when stored, 0 when the thread
#: is not the user's or is being deleted (or, within the limit, ``max_queued`` of the user's runs wait).
INSERT_RUN = statement(
    "insert_run",
    _RUN_PARAMS,
    _insert_run(limited=False),
    then=_user_message,
    returning=(runs.c.id,),
    known={"id": "id"},
)
INSERT_RUN_WITHIN_LIMIT = statement(
    "insert_run_within_limit",
    (*_RUN_PARAMS, "max_queued"),
    _insert_run(limited=True),
    then=_user_message,
    returning=(runs.c.id,),
    known={"id": "id"},
)

INSERT_MESSAGE = statement(
    "insert_message",
    ("id", "user_id", "thread_id", "run_id", "role", "content", "created_at"),
    insert(messages).values(
        id=p("id"),
        user_id=p("user_id"),
        thread_id=p("thread_id"),
        run_id=p("run_id"),
        role=p("role"),
        content=p("content", Text),
        created_at=p("created_at", DateTime(timezone=True)),
    ),
)

#: The fields :meth:`Store.update_run` may set, and their types.
UPDATABLE: dict[str, TypeEngine[Any] | type[TypeEngine[Any]]] = {
    "status": String,
    "started_at": DateTime(timezone=True),
    "worker_id": String,
    "heartbeat_at": DateTime(timezone=True),
    "output": Text,
    "error": JSON,
    "attempts": Integer,
    "metadata": JSON,
}


@cache
def update_run(names: tuple[str, ...]) -> Statement:
    """Set the ``names`` fields (sorted) of a run that has not ended.

    One statement per set of fields, added to the catalogue when first asked for
    (the engine sets a few different sets) and compiled once per dialect then.
    """
    unknown = set(names) - set(UPDATABLE)
    if unknown:
        raise ValueError(f"cannot update run fields {sorted(unknown)}")
    clause = (
        update(runs)
        .where(
            runs.c.id == p("run_id"),
            runs.c.user_id == p("user_id"),
            _none_of(runs.c.status, TERMINAL),
        )
        .values({n: p(n, UPDATABLE[n]) for n in names})
    )
    return statement(f"update_run({','.join(names)})", ("user_id", "run_id", *names), clause)


#: A run's start: ``queued`` becomes ``running`` (a cancel stored first keeps
#: ``cancelling``); a run that has ended is left alone.
START_RUN = statement(
    "start_run",
    ("user_id", "run_id", "now", "worker_id"),
    update(runs)
    .where(
        runs.c.id == p("run_id"),
        runs.c.user_id == p("user_id"),
        _none_of(runs.c.status, TERMINAL),
    )
    .values(
        status=case((runs.c.status == const("queued"), const("running")), else_=runs.c.status),
        started_at=func.coalesce(runs.c.started_at, p("now", DateTime(timezone=True))),
        worker_id=p("worker_id"),
    ),
)


def _assistant_message(run: Any) -> ClauseElement:
    """The run's output as the assistant's message, when it has one (``run``: a source
    of the ended run's thread)."""
    return insert(messages).from_select(
        ["id", "user_id", "thread_id", "run_id", "role", "content", "created_at"],
        select(
            p("message_id"),
            p("user_id"),
            run.c.thread_id,
            p("run_id"),
            const("assistant"),
            p("output", Text),
            p("now", DateTime(timezone=True)),
        )
        .select_from(run)
        .where(p("output", Text).is_not(None)),
    )


#: A run's end and its output as the assistant's message (chained; a no-op on a run
#: that has ended).
END_RUN = statement(
    "end_run",
    ("user_id", "run_id", "status", "output", "error", "now", "message_id"),
    update(runs)
    .where(
        runs.c.id == p("run_id"),
        runs.c.user_id == p("user_id"),
        _none_of(runs.c.status, TERMINAL),
    )
    .values(
        status=p("status"),
        output=p("output", Text),
        error=p("error", JSON),
        finished_at=p("now", DateTime(timezone=True)),
    ),
    then=_assistant_message,
    returning=(runs.c.thread_id,),
)

# Events -------------------------------------------------------------------------------------

SELECT_EVENTS = statement(
    "select_events",
    ("user_id", "thread_id", "after", "limit"),
    select(events.c.body)
    .where(
        events.c.thread_id == p("thread_id"),
        events.c.user_id == p("user_id"),
        events.c.seq > p("after", events.c.seq.type),  # 64-bit, as the column
    )
    .order_by(events.c.seq)
    .limit(p("limit", Integer))
    .offset(const(0)),  # SQLite's LIMIT comes with an OFFSET; a constant, not a parameter
)

#: The highest stored ``seq`` of a thread (0 without events): one row, always.
MAX_SEQ = statement(
    "max_seq",
    ("thread_id",),
    select(func.coalesce(func.max(events.c.seq), const(0))).where(
        events.c.thread_id == p("thread_id")
    ),
)

#: A thread's newest event's ``seq`` and owner: one row of the key's index, read from
#: its end (a filter on ``user_id`` would read every row of the thread to check it).
NEWEST_SEQ = statement(
    "newest_seq",
    ("thread_id",),
    select(events.c.seq, events.c.user_id)
    .where(events.c.thread_id == p("thread_id"))
    .order_by(events.c.seq.desc())
    .limit(const(1))
    .offset(const(0)),  # SQLite's LIMIT comes with an OFFSET (see SELECT_EVENTS)
)

EVENT_COLUMNS = ("id", "user_id", "thread_id", "run_id", "seq", "type", "created_at", "body")
INSERT_EVENT = statement(
    "insert_event",
    EVENT_COLUMNS,
    insert(events).values({c: p(c, events.c[c].type) for c in EVENT_COLUMNS}),
)

#: Up to ``limit`` ``(seq, run_id, type)`` of a thread's turn events (``TURN_MARKS``: the
#: types a conversation is made of, the predicate of the partial index
#: ``ix_events_turn_marks``) with ``low <= seq < before``, newest first, leaving out the run
#: ``skip_run`` (the one asking). Every column it reads is in that index, so the read never
#: touches the table (the bodies it needs are read by ``TURN_BODIES_BETWEEN``).
TURN_MARKS_BEFORE = statement(
    "turn_marks_before",
    ("user_id", "thread_id", "low", "before", "skip_run", "limit"),
    select(events.c.seq, events.c.run_id, events.c.type)
    .where(
        events.c.thread_id == p("thread_id"),
        events.c.user_id == p("user_id"),
        events.c.seq >= p("low", events.c.seq.type),
        events.c.seq < p("before", events.c.seq.type),  # 64-bit, as the column
        text(TURN_MARKS),
        events.c.run_id != p("skip_run"),
    )
    .order_by(events.c.seq.desc())
    .limit(p("limit", Integer))
    .offset(const(0)),
)

#: ``(seq, body)`` of the thread's turn events with ``low <= seq <= high``, leaving out
#: ``skip_run``: the bodies of the turn marks a reader does not hold built.
TURN_BODIES_BETWEEN = statement(
    "turn_bodies_between",
    ("user_id", "thread_id", "low", "high", "skip_run"),
    select(events.c.seq, events.c.body).where(
        events.c.thread_id == p("thread_id"),
        events.c.user_id == p("user_id"),
        events.c.seq >= p("low", events.c.seq.type),
        events.c.seq <= p("high", events.c.seq.type),
        text(TURN_MARKS),
        events.c.run_id != p("skip_run"),
    ),
)

# Usage --------------------------------------------------------------------------------------

#: One model call's cost added to its run's counters (64-bit, as the columns).
ADD_RUN_USAGE = statement(
    "add_run_usage",
    ("user_id", "run_id", "input_tokens", "output_tokens", "model_calls"),
    update(runs)
    .where(runs.c.id == p("run_id"), runs.c.user_id == p("user_id"))
    .values(
        input_tokens=runs.c.input_tokens + p("input_tokens", runs.c.input_tokens.type),
        output_tokens=runs.c.output_tokens + p("output_tokens", runs.c.output_tokens.type),
        model_calls=runs.c.model_calls + p("model_calls", runs.c.model_calls.type),
    ),
)

#: The user's input plus output tokens in runs created at or after ``since``.
TOKENS_SINCE = statement(
    "tokens_since",
    ("user_id", "since"),
    select(func.coalesce(func.sum(runs.c.input_tokens + runs.c.output_tokens), const(0))).where(
        runs.c.user_id == p("user_id"),
        runs.c.created_at >= p("since", DateTime(timezone=True)),
    ),
)

#: ``(agent, input_tokens, output_tokens, model_calls, runs)`` of the user's runs created
#: at or after ``since``, by agent.
USAGE_BY_AGENT = statement(
    "usage_by_agent",
    ("user_id", "since"),
    select(
        runs.c.agent,
        func.coalesce(func.sum(runs.c.input_tokens), const(0)),
        func.coalesce(func.sum(runs.c.output_tokens), const(0)),
        func.coalesce(func.sum(runs.c.model_calls), const(0)),
        func.count(),
    )
    .where(
        runs.c.user_id == p("user_id"),
        runs.c.created_at >= p("since", DateTime(timezone=True)),
    )
    .group_by(runs.c.agent)
    .order_by(runs.c.agent),
)

# The cluster's claim (Postgres) -------------------------------------------------------------

#: The claim lock, waited for at most a second (claimers wait for each other; a claim
#: takes a few milliseconds). ``set_config`` runs first: select items run in order.
CLAIM_LOCK_TAKE = statement(
    "claim_lock",
    (),
    select(
        func.set_config(const("lock_timeout"), const("1s"), true()),
        func.pg_advisory_xact_lock(const(CLAIM_LOCK)),
    ),
)


def _claim_candidates() -> ClauseElement:
    r = runs.alias("r")
    busy = runs.alias("b")
    earlier = runs.alias("e")
    mates = runs.alias("c")
    user_running = (
        select(func.count())
        .select_from(mates)
        .where(mates.c.user_id == r.c.user_id, _one_of(mates.c.status, ACTIVE))
        .scalar_subquery()
    )
    return (
        select(*(r.c[c.name] for c in RUN_COLUMNS), user_running)
        .where(
            r.c.status == const("queued"),
            ~exists().where(
                busy.c.thread_id == r.c.thread_id, _one_of(busy.c.status, LANE_HOLDING)
            ),
            ~exists().where(
                earlier.c.thread_id == r.c.thread_id,
                earlier.c.status == const("queued"),
                tuple_(earlier.c.created_at, earlier.c.id) < tuple_(r.c.created_at, r.c.id),
            ),
        )
        .order_by(r.c.created_at, r.c.id)
        .limit(p("limit", Integer))
        .offset(const(0))
        .with_for_update(skip_locked=True, of=r)
    )


#: Runnable runs (queued, first of their thread, their thread idle), oldest first, each
#: with its user's running runs cluster-wide; rows other claimers hold are skipped.
CLAIM_CANDIDATES = statement("claim_candidates", ("limit",), _claim_candidates())

CLAIM_RUN = statement(
    "claim_run",
    ("run_id", "worker_id", "now"),
    update(runs)
    .where(runs.c.id == p("run_id"))
    .values(
        status=const("running"),
        worker_id=p("worker_id"),
        heartbeat_at=p("now", DateTime(timezone=True)),
        started_at=p("now", DateTime(timezone=True)),
        attempts=func.coalesce(runs.c.attempts, const(0)) + const(1),
    ),
)


# Runs waiting for a person (tenet.store.approvals) ------------------------------------------


def _users_run(status: str) -> tuple[Any, ...]:
    """The user's run ``run_id``, while in ``status``."""
    return (
        runs.c.id == p("run_id"),
        runs.c.user_id == p("user_id"),
        runs.c.status == const(status),
    )


def _runs_requests(*more: Any) -> tuple[Any, ...]:
    """The requests of the user's run ``run_id`` (and ``more`` conditions)."""
    return (run_requests.c.run_id == p("run_id"), run_requests.c.user_id == p("user_id"), *more)


REQUEST_COLUMNS = (
    "run_id",
    "id",
    "user_id",
    "thread_id",
    "execution_id",
    "agent_name",
    "kind",
    "round",
    "body",
    "expires_at",
    "created_at",
)
#: A run's request to a person, ``pending`` (it rides with the event announcing it).
INSERT_REQUEST = statement(
    "insert_request",
    REQUEST_COLUMNS,
    insert(run_requests).values(
        {**{c: p(c, run_requests.c[c].type) for c in REQUEST_COLUMNS}, "status": const("pending")}
    ),
)
#: A running run starts waiting: ``requires_action``, with the state it resumes from.
PAUSE_RUN = statement(
    "pause_run",
    ("user_id", "run_id", "state"),
    update(runs)
    .where(*_users_run("running"))
    .values(status=const("requires_action"), resume_state=p("state", JSON)),
)
#: ``(kind, status, body, thread_id, execution_id, agent_name, round, expires_at)`` of a
#: request of the user's run.
SELECT_REQUEST = statement(
    "select_request",
    ("user_id", "run_id", "id"),
    select(
        run_requests.c.kind,
        run_requests.c.status,
        run_requests.c.body,
        run_requests.c.thread_id,
        run_requests.c.execution_id,
        run_requests.c.agent_name,
        run_requests.c.round,
        run_requests.c.expires_at,
    ).where(*_runs_requests(run_requests.c.id == p("id"))),
)
#: A pending request answered (the count says whether this answer was the first).
ANSWER_REQUEST = statement(
    "answer_request",
    ("user_id", "run_id", "id", "answer"),
    update(run_requests)
    .where(*_runs_requests(run_requests.c.id == p("id"), run_requests.c.status == const("pending")))
    .values(status=const("answered"), answer=p("answer", JSON)),
)
#: A waiting run whose requests are all answered goes back to the queue (once: the
#: count says which answer, or which pause, moved it). The requests are looked up by
#: run *and user*, through ``ix_run_requests_run`` (run, user, status): with the run's id
#: and ``status`` alone SQLite searched ``ix_run_requests_expiry`` (status), every user's
#: pending requests, and without that index ``ix_run_requests_user`` (user, status), every
#: pending request of the user, on each answer. Every statement below that reads a run's
#: requests uses it too.
RESUME_RUN = statement(
    "resume_run",
    ("user_id", "run_id"),
    update(runs)
    .where(
        *_users_run("requires_action"),
        ~exists().where(
            run_requests.c.run_id == runs.c.id,
            run_requests.c.user_id == runs.c.user_id,
            run_requests.c.status == const("pending"),
        ),
    )
    .values(
        status=const("queued"),
        worker_id=literal_column("NULL"),
        heartbeat_at=literal_column("NULL"),
    ),
)
#: ``(user_id, id)`` of waiting runs none of whose requests is pending (a process stopped
#: between storing the last answer and queueing the run again).
STRANDED_RUNS = statement(
    "stranded_runs",
    (),
    select(runs.c.user_id, runs.c.id).where(
        runs.c.status == const("requires_action"),
        ~exists().where(
            run_requests.c.run_id == runs.c.id,
            run_requests.c.user_id == runs.c.user_id,
            run_requests.c.status == const("pending"),
        ),
    ),
)
#: ``(id, kind, body, answer)`` of the answered requests of one pause of a run, in order.
ANSWERED_REQUESTS = statement(
    "answered_requests",
    ("user_id", "run_id", "round"),
    select(run_requests.c.id, run_requests.c.kind, run_requests.c.body, run_requests.c.answer)
    .where(
        *_runs_requests(
            run_requests.c.round == p("round", Integer),
            run_requests.c.status == const("answered"),
        )
    )
    .order_by(run_requests.c.created_at, run_requests.c.id),
)
#: ``id`` of the pending requests of a run, in order (what a waiting run waits on).
PENDING_REQUESTS = statement(
    "pending_requests",
    ("user_id", "run_id"),
    select(run_requests.c.id)
    .where(*_runs_requests(run_requests.c.status == const("pending")))
    .order_by(run_requests.c.created_at, run_requests.c.id),
)
#: ``(user_id, run_id, id, kind)`` of pending requests past their ``expires_at``.
EXPIRED_REQUESTS = statement(
    "expired_requests",
    ("now", "limit"),
    select(run_requests.c.user_id, run_requests.c.run_id, run_requests.c.id, run_requests.c.kind)
    .where(
        run_requests.c.status == const("pending"),
        run_requests.c.expires_at <= p("now", DateTime(timezone=True)),
    )
    .order_by(run_requests.c.expires_at)
    .limit(p("limit", Integer))
    .offset(const(0)),
)
#: A waiting run's pending requests, closed because the run ended first.
CANCEL_REQUESTS = statement(
    "cancel_requests",
    ("user_id", "run_id"),
    update(run_requests)
    .where(*_runs_requests(run_requests.c.status == const("pending")))
    .values(status=const("cancelled")),
)
#: A cancel of a waiting run (no task to stop: the cancel's winner ends it).
REQUEST_CANCEL_WAITING = statement(
    "request_cancel_waiting",
    ("user_id", "run_id"),
    update(runs).where(*_users_run("requires_action")).values(status=const("cancelling")),
)
#: The user's runs in one status, newest first.
USER_RUNS_WITH_STATUS = statement(
    "user_runs_with_status",
    ("user_id", "status", "limit"),
    select(*RUN_COLUMNS)
    .where(runs.c.user_id == p("user_id"), runs.c.status == p("status"))
    .order_by(runs.c.created_at.desc(), runs.c.id.desc())
    .limit(p("limit", Integer))
    .offset(const(0)),
)


# Compiling ----------------------------------------------------------------------------------


def to_db_json(value: Any) -> str | None:
    return None if value is None else orjson.dumps(value).decode()


def from_db_json(value: str | None) -> Any:
    return None if value is None else orjson.loads(value)


def _sqlite_time(value: datetime | int | None) -> str | None:
    """The text SQLAlchemy stores for a UTC time on SQLite (from a datetime or a stamp)."""
    if value is None:
        return None
    if type(value) is int:
        return db_time(value)
    assert isinstance(value, datetime)
    if value.tzinfo is not None:
        value = value.astimezone(UTC).replace(tzinfo=None)
    return value.isoformat(sep=" ", timespec="microseconds")  # strftime is several times slower


def _from_sqlite_time(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value).replace(tzinfo=UTC)


def _pg_time(value: datetime | int | None) -> datetime | None:
    return to_datetime(value) if type(value) is int else value  # type: ignore[arg-type]


#: Per dialect: the converter of a parameter, and of a result column, of each type.
_BIND: dict[str, dict[type[TypeEngine[Any]], Convert]] = {
    "sqlite": {DateTime: _sqlite_time, JSON: to_db_json},
    "postgresql": {DateTime: _pg_time, JSON: to_db_json},
}
_RESULT: dict[str, dict[type[TypeEngine[Any]], Convert]] = {
    "sqlite": {DateTime: _from_sqlite_time, JSON: from_db_json},
    "postgresql": {JSON: from_db_json},
}


def _converter(table: dict[type[TypeEngine[Any]], Convert], type_: Any) -> Convert | None:
    for base, convert in table.items():
        if isinstance(type_, base):
            return convert
    return None


#: The dialects that run writes inside ``WITH`` (a chained statement is one statement).
WRITES_IN_WITH = frozenset({"postgresql"})


def compile_for(stmt: Statement, dialect: Dialect) -> Compiled:
    """``stmt`` as ``dialect``'s driver runs it; fails on a parameter it does not declare."""
    if stmt.then is None:
        return _compile(stmt.name, stmt.clause, stmt.params, dialect)
    first: Any = stmt.clause
    if dialect.name in WRITES_IN_WITH:
        written = stmt.returning_clause.cte("written")
        return _compile(stmt.name, stmt.then(written), stmt.params, dialect)
    returned = [c.name for c in stmt.returning]
    if all(c in stmt.known for c in returned):
        # The row the first wrote is known from the parameters: counted, not returned.
        row = select(*(bindparam(stmt.known[c]).label(c) for c in returned)).subquery("written")
        compiled = _compile(stmt.name, first, stmt.params, dialect, partial=True)
        then_params = stmt.params
    else:
        # The first write's returned row reaches the second as parameters (``written_*``).
        row = select(*(bindparam(f"written_{c}").label(c) for c in returned)).subquery("written")
        compiled = _compile(stmt.name, stmt.returning_clause, stmt.params, dialect, partial=True)
        compiled.returns = True
        then_params = (*stmt.params, *(f"written_{c}" for c in returned))
    compiled.then = _compile(
        f"{stmt.name} (then)", stmt.then(row), then_params, dialect, partial=True
    )
    return compiled


def _compile(
    name: str,
    clause: ClauseElement,
    params: tuple[str, ...],
    dialect: Dialect,
    *,
    partial: bool = False,
) -> Compiled:
    """``clause`` compiled; ``partial``: it may leave some of the declared parameters unused."""
    compiled = clause.compile(dialect=dialect)
    order = compiled.positiontup or []
    declared = {name: i for i, name in enumerate(params)}
    unknown = [name for name in order if name not in declared]
    if unknown or (not partial and set(params) - set(order)):
        raise ValueError(
            f"statement {name}: binds {order}, declares {list(params)} ({unknown} not declared)"
        )
    binds = _BIND[dialect.name]
    plan = tuple((declared[name], _converter(binds, compiled.binds[name].type)) for name in order)
    if [i for i, _ in plan] == list(range(len(params))) and all(c is None for _, c in plan):
        plan_or_none = None
    else:
        plan_or_none = plan
    results = _RESULT[dialect.name]
    exported = list(getattr(clause, "exported_columns", ()))
    columns = tuple(
        (i, convert)
        for i, column in enumerate(exported)
        if (convert := _converter(results, column.type)) is not None
    )
    return Compiled(name, compiled.string, plan_or_none, columns, len(exported))


def dialect_of(name: str) -> Dialect:
    """The SQLAlchemy dialect whose SQL the ``name`` driver takes (``sqlite`` or ``postgresql``)."""
    if name == "sqlite":
        return sqlite.dialect(paramstyle="qmark")
    if name == "postgresql":
        from sqlalchemy.dialects.postgresql.asyncpg import PGDialect_asyncpg

        return PGDialect_asyncpg()
    raise ValueError(f"no executor speaks {name!r}")


_COMPILED: dict[str, list[Compiled]] = {}


def compiled(name: str) -> list[Compiled]:
    """The catalogue compiled for the ``name`` dialect, by statement index.

    Compiled once, at the first call (an executor's start); a statement added to
    the catalogue later (:func:`update_run`) is compiled at the next call, and
    the same list grows, so executors can keep it.
    """
    done = _COMPILED.setdefault(name, [])
    if len(done) < len(CATALOGUE):
        dialect = dialect_of(name)
        done.extend(compile_for(stmt, dialect) for stmt in CATALOGUE[len(done) :])
    return done
