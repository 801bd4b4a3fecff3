"""The tables. Every row that holds user data carries ``user_id``.

Kept in step with the Alembic migrations in ``tenet/migrations``; a test checks
that upgrading an empty database yields exactly these tables.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


UTCDateTime = DateTime(timezone=True)
#: A stored counter (a thread's ``seq``, a run's ``attempts``): 64-bit on every backend
#: (SQLite's INTEGER already is), so every cursor a client may send fits.
Counter = BigInteger().with_variant(Integer, "sqlite")


class User(Base):
    __tablename__ = "users"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class Token(Base):
    __tablename__ = "tokens"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class Thread(Base):
    __tablename__ = "threads"
    __table_args__ = (Index("ix_threads_user_created", "user_id", "created_at"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    meta: Mapped[dict[str, Any]] = mapped_column("metadata", JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    #: Until when the thread is being deleted (no run may be stored before then); NULL:
    #: not being deleted. Set and cleared by :mod:`tenet.thread_gate` through the store.
    deleting_until: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class Message(Base):
    """A thread's user and assistant messages, two per run.

    Read by thread only (every read also filters by ``user_id``, through the thread
    index): no index on ``user_id`` alone, which cost two B-tree inserts per run.
    """

    __tablename__ = "messages"
    __table_args__ = (Index("ix_messages_thread", "thread_id", "created_at"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    user_id: Mapped[str] = mapped_column(String(32))
    thread_id: Mapped[str] = mapped_column(ForeignKey("threads.id", ondelete="CASCADE"))
    run_id: Mapped[str | None] = mapped_column(String(32))
    role: Mapped[str] = mapped_column(String(16))
    content: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class Run(Base):
    __tablename__ = "runs"
    __table_args__ = (
        Index("ix_runs_thread", "thread_id", "created_at"),
        Index("ix_runs_status", "status"),
        Index("ix_runs_user_status", "user_id", "status"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    user_id: Mapped[str] = mapped_column(String(32))
    thread_id: Mapped[str] = mapped_column(ForeignKey("threads.id", ondelete="CASCADE"))
    agent: Mapped[str] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(16))
    input: Mapped[str] = mapped_column(Text)
    output: Mapped[str | None] = mapped_column(Text)
    error: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    meta: Mapped[dict[str, Any]] = mapped_column("metadata", JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # Cluster bookkeeping: which process holds the run, and when it last said so.
    worker_id: Mapped[str | None] = mapped_column(String(64))
    heartbeat_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    attempts: Mapped[int] = mapped_column(Counter, default=0)
    # Token usage of the run's model calls (all its executions), added to after each call.
    input_tokens: Mapped[int] = mapped_column(Counter, default=0, server_default="0")
    output_tokens: Mapped[int] = mapped_column(Counter, default=0, server_default="0")
    model_calls: Mapped[int] = mapped_column(Counter, default=0, server_default="0")
    # What a run waiting for a person resumes from (``tenet.journal``); None otherwise.
    resume_state: Mapped[dict[str, Any] | None] = mapped_column(JSON)


def _type_is_one_of(*types: str) -> str:
    """A partial index's predicate: ``type`` equal to one of ``types``, written as ``OR``s.

    Not ``type IN (...)``: SQLite evaluates an index's ``IN`` list by building a
    temporary table of its values for every row inserted (twice per event, one per
    index), which cost more than half of an event's insert; a chain of ``=`` costs
    a few comparisons. A query must repeat the predicate word for word for SQLite
    to use the index (Postgres proves it either way).
    """
    return "(" + " OR ".join(f"type = '{t}'" for t in types) + ")"


#: The events a run's recovery looks up by run: its first and its end (every run's
#: first event is one of them: ``agent_started``, or an end when it never started).
#: The partial index's predicate; a query must repeat it word for word for SQLite to use it.
RUN_MARKS = _type_is_one_of("agent_started", "agent_completed", "agent_error", "run_cancelled")


#: The event types a thread's conversation is built from (``tenet.conversation``).
TURN_TYPES = (
    "agent_started",
    "tool_executing",
    "tool_completed",
    "agent_completed",
    "agent_error",
    "run_cancelled",
)
#: The partial index on ``TURN_TYPES`` lets a history read skip streamed text and reasoning
#: without reading them; its predicate, word for word as migration 0013 wrote it.
TURN_MARKS = _type_is_one_of(*TURN_TYPES)


class EventRow(Base):
    """One stored event, keyed by its place in its thread.

    Every event is written once and read by thread in ``seq`` order, so
    ``(thread_id, seq)`` is the key, and no other index is kept on every row:
    each index with a random key (an event id, a user id) cost a B-tree insert per
    event and was most of the store's work. The run index holds only the events
    recovery looks for (``RUN_MARKS``), the turn index only those a conversation is
    built from (``TURN_MARKS``).
    """

    __tablename__ = "events"
    __table_args__ = (
        Index(
            "ix_events_run_marks",
            "run_id",
            sqlite_where=text(RUN_MARKS),
            postgresql_where=text(RUN_MARKS),
        ),
        # Every column a history read filters on or returns but the body: the read of
        # a thread's turn marks is answered from the index alone.
        Index(
            "ix_events_turn_marks",
            "thread_id",
            "seq",
            "user_id",
            "run_id",
            "type",
            sqlite_where=text(TURN_MARKS),
            postgresql_where=text(TURN_MARKS),
        ),
    )

    thread_id: Mapped[str] = mapped_column(
        ForeignKey("threads.id", ondelete="CASCADE"), primary_key=True
    )
    seq: Mapped[int] = mapped_column(Counter, primary_key=True, autoincrement=False)
    id: Mapped[str] = mapped_column(String(32))
    user_id: Mapped[str] = mapped_column(String(32))
    run_id: Mapped[str] = mapped_column(String(32))
    type: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    body: Mapped[str] = mapped_column(Text)


class Note(Base):
    __tablename__ = "notes"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    text: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class ExternalIdentity(Base):
    """A user signed in by JWT: the provider's (issuer, subject) pair, and who it is here.

    The pair is the key: a subject is one user per issuer, and nothing else (a name,
    another issuer's same subject) ever leads to that user. ``name`` is the display
    name the provider last sent; ``users.name`` holds a unique name of tenet's own.
    """

    __tablename__ = "external_identities"

    issuer: Mapped[str] = mapped_column(String(255), primary_key=True)
    subject: Mapped[str] = mapped_column(String(255), primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class AgUiThread(Base):
    """An AG-UI client's ``threadId``, as one of its user's threads.

    AG-UI clients choose their own thread ids, so the key is the pair (user, client
    id): the same ``threadId`` sent by two users names two threads.
    """

    __tablename__ = "ag_ui_threads"

    user_id: Mapped[str] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    client_thread_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    thread_id: Mapped[str] = mapped_column(ForeignKey("threads.id", ondelete="CASCADE"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class UserSecret(Base):
    """A user's secret, encrypted (``store/secrets.py``): the value is never stored in clear.

    ``sealed`` is the AEAD nonce followed by the ciphertext, bound to (user, name) as
    associated data, so a row copied to another user or name does not decrypt.
    """

    __tablename__ = "user_secrets"

    user_id: Mapped[str] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    sealed: Mapped[bytes] = mapped_column(LargeBinary)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class RunRequest(Base):
    """A run's request to a person: an approval of a tool call, or a question.

    Keyed by the run and the request's id (a tool call's id for an approval, which
    the model chose and may repeat in another run). ``round`` is the pause of the
    run it belongs to (1 for its first); ``status`` is ``pending`` until answered
    (``answered``, by a user or by ``timeout``) or the run ends first
    (``cancelled``). ``expires_at`` is when an unanswered request is resolved by
    ``timeout``, by whichever process sweeps first.
    """

    __tablename__ = "run_requests"
    __table_args__ = (
        Index("ix_run_requests_expiry", "status", "expires_at"),
        Index("ix_run_requests_user", "user_id", "status"),
        # A run's requests, by run and owner (an answer must not cost the user's other runs).
        Index("ix_run_requests_run", "run_id", "user_id", "status"),
    )

    run_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    id: Mapped[str] = mapped_column(String(200), primary_key=True)
    user_id: Mapped[str] = mapped_column(String(32))
    thread_id: Mapped[str] = mapped_column(ForeignKey("threads.id", ondelete="CASCADE"))
    execution_id: Mapped[str] = mapped_column(String(32))
    agent_name: Mapped[str] = mapped_column(String(200))
    kind: Mapped[str] = mapped_column(String(16))
    round: Mapped[int] = mapped_column(Integer)
    body: Mapped[dict[str, Any]] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(16))
    answer: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
