"""The store: owner-scoped repositories over SQLAlchemy 2 async.

Every method that touches user data takes the caller's ``user_id`` first and
filters by it; a row of another user is "not found", exactly like a missing one.
The only unscoped reads are the ``admin_*`` methods, used by start-up recovery
and user management, never by a request on behalf of a user.

Each call opens its own short session: no session is ever shared between
requests, let alone between users. On SQLite, writes are serialized by one
process-wide lock (SQLite allows one writer; waiting on a lock is cheaper and
more predictable than ``database is locked`` retries).

The hot methods (a thread's creation and check, a run's creation, reads,
updates and end, a thread's events, the cluster's claim) skip the ORM: each is
one unit of work (:mod:`tenet.store.units`) over statements written once in
SQLAlchemy Core (:mod:`tenet.store.statements`), run by the executor of the
database's driver (:mod:`tenet.store.executor`): plain ``sqlite3`` on the event
loop with group commit, or ``asyncpg`` on a pool of its own. A method has one
path on every database; the rows are the ones the ORM reads.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import secrets
import tempfile
from collections.abc import AsyncIterator, Iterable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import delete, event, func, select, text, update
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from ..clock import utc_now
from ..errors import Conflict, Invalid, NotFound, RateLimited, queue_full
from ..ids import is_valid, new_id
from . import units
from .executor import Executor
from .postgres_direct import DirectPostgres
from .rows import run_from_row, thread_from_row
from .sqlite_direct import DirectSqlite
from .tables import RUN_MARKS, EventRow, Message, Note, Run, Thread, Token, User
from .user_lock import lock_user

#: Repeats the partial run index's predicate, so that lookups by run can use it.
RUN_MARKED = text(RUN_MARKS)


def hash_token(token: str) -> str:
    """Tokens are 256 random bits, so one SHA-256 is enough; only the hash is stored."""
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    return "tnt_" + secrets.token_urlsafe(32)


class Store:
    """Owner-scoped access to users, threads, messages, runs, events and notes."""

    def __init__(self, url: str, *, echo: bool = False) -> None:
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        #: The directory of an in-memory database's file (removed on close).
        self._scratch: tempfile.TemporaryDirectory[str] | None = None
        kwargs: dict[str, Any] = {"echo": echo}
        executor: Executor
        if self.is_sqlite:
            database = make_url(url).database
            if database in (None, "", ":memory:"):
                # The executor's connection and the ORM's must see one database, which an
                # in-memory one cannot be: it lives in a file that goes with the store.
                self._scratch = tempfile.TemporaryDirectory(prefix="tenet-")
                database = str(Path(self._scratch.name) / "memory.db")
                url = make_url(url).set(database=database).render_as_string(hide_password=False)
            assert database is not None
            kwargs["connect_args"] = {"timeout": 30}
            # The hot path has its own connection; each pooled one holds a thread and
            # a page cache, and SQLite writes one at a time anyway.
            kwargs.update(pool_size=2, max_overflow=4)
            #: The hot path on SQLite: plain sqlite3 on the event loop (see sqlite_direct).
            executor = DirectSqlite(database)
        else:
            kwargs.update(pool_size=10, max_overflow=20, pool_pre_ping=True)
            #: The hot path on Postgres: plain asyncpg on a pool of its own (any driver of
            #: the URL: the ORM uses it, the executor asyncpg).
            executor = DirectPostgres(url)
        #: Runs every hot method's unit of work (see :mod:`tenet.store.executor`).
        self.executor: Executor = executor
        self.engine: AsyncEngine = create_async_engine(url, **kwargs)
        if self.is_sqlite:
            event.listen(self.engine.sync_engine, "connect", _sqlite_pragmas)
        self._sessions = async_sessionmaker(self.engine, expire_on_commit=False)
        self._write_lock = asyncio.Lock() if self.is_sqlite else None

    async def close(self) -> None:
        await self.executor.close()
        await self.engine.dispose()
        if self._scratch is not None:
            self._scratch.cleanup()
            self._scratch = None

    # Sessions -------------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncSession]:
        """A session for reads; closed at the end of the block."""
        async with self._sessions() as session:
            yield session

    @contextlib.asynccontextmanager
    async def write(self) -> AsyncIterator[AsyncSession]:
        """A session in one transaction, committed at the end of the block."""
        # The executor runs no transaction while the ORM writes (on SQLite), so that
        # neither connection ever waits on the other's lock.
        async with (
            self._write_lock or contextlib.nullcontext(),
            self.executor.paused(),
            self._sessions() as session,
            session.begin(),
        ):
            yield session

    async def ping(self) -> None:
        """Raises when the database cannot be reached."""
        async with self.engine.connect() as conn:
            await conn.exec_driver_sql("SELECT 1")

    # Users and tokens (user management) ------------------------------------------------------

    async def create_user(self, name: str) -> tuple[User, str]:
        """A new user and its first token (the token is returned once, stored hashed)."""
        name = name.strip()
        if not name or len(name) > 200:
            raise Invalid("name must be 1 to 200 characters")
        now = utc_now()
        user = User(id=new_id("usr"), name=name, created_at=now)
        token = new_token()
        try:
            async with self.write() as s:
                s.add(user)
                await s.flush()
                s.add(
                    Token(
                        id=new_id("tok"),
                        user_id=user.id,
                        token_hash=hash_token(token),
                        created_at=now,
                    )
                )
        except IntegrityError:
            raise Conflict(f"a user named {name!r} already exists") from None
        return user, token

    async def admin_user_by_name(self, name: str) -> User | None:
        async with self.read() as s:
            return (await s.execute(select(User).where(User.name == name))).scalar_one_or_none()

    async def user_for_token(self, token: str) -> tuple[User, str] | None:
        """The user holding ``token`` and the token's hash, or None."""
        if not isinstance(token, str) or not token or len(token) > 200:
            return None
        digest = hash_token(token)
        async with self.read() as s:
            row = (
                await s.execute(
                    select(User)
                    .join(Token, Token.user_id == User.id)
                    .where(Token.token_hash == digest)
                )
            ).scalar_one_or_none()
        return (row, digest) if row is not None else None

    async def create_token(self, user_id: str, *, limit: int | None = None) -> str:
        token = new_token()
        async with self.write() as s:
            if limit is not None:
                await lock_user(s, user_id)
                count = await s.scalar(
                    select(func.count()).select_from(Token).where(Token.user_id == user_id)
                )
                if (count or 0) >= limit:
                    raise RateLimited(f"a user may hold at most {limit} tokens")
            s.add(
                Token(
                    id=new_id("tok"),
                    user_id=user_id,
                    token_hash=hash_token(token),
                    created_at=utc_now(),
                )
            )
        return token

    async def revoke_token(self, user_id: str, token_hash: str) -> bool:
        async with self.write() as s:
            result = await s.execute(
                delete(Token).where(Token.user_id == user_id, Token.token_hash == token_hash)
            )
        return bool(result.rowcount)

    async def replace_tokens(self, user_id: str) -> str:
        """Revoke every token of the user and make one new token, in one transaction."""
        token = new_token()
        async with self.write() as s:
            await s.execute(delete(Token).where(Token.user_id == user_id))
            s.add(
                Token(
                    id=new_id("tok"),
                    user_id=user_id,
                    token_hash=hash_token(token),
                    created_at=utc_now(),
                )
            )
        return token

    # Threads ----------------------------------------------------------------------------------

    async def create_thread(
        self, user_id: str, metadata: dict[str, Any] | None = None, *, limit: int | None = None
    ) -> Thread:
        thread = Thread(
            id=new_id("thr"), user_id=user_id, meta=dict(metadata or {}), created_at=utc_now()
        )
        created = await self.executor.run(
            units.insert_thread,
            thread.id,
            user_id,
            thread.meta,
            thread.created_at,
            limit,
            atomic=limit is not None,  # the user's row stays locked until the insert commits
        )
        if not created:
            raise RateLimited(f"a user may hold at most {limit} threads")
        return thread

    async def get_thread(self, user_id: str, thread_id: str) -> Thread:
        if not is_valid(thread_id, "thr"):
            raise NotFound()
        found = await self.executor.run(units.thread_owned, user_id, thread_id, write=False)
        if found is None:
            raise NotFound()
        return thread_from_row(found)

    async def list_threads(
        self, user_id: str, *, limit: int = 50, before: str | None = None
    ) -> Sequence[Thread]:
        """The user's threads, newest first; ``before`` is a thread id to page from."""
        q = select(Thread).where(Thread.user_id == user_id)
        async with self.read() as s:
            if before is not None:
                if not is_valid(before, "thr"):
                    raise NotFound()
                anchor = (
                    await s.execute(
                        select(Thread).where(Thread.id == before, Thread.user_id == user_id)
                    )
                ).scalar_one_or_none()
                if anchor is None:
                    raise NotFound()
                q = q.where(
                    (Thread.created_at < anchor.created_at)
                    | ((Thread.created_at == anchor.created_at) & (Thread.id < anchor.id))
                )
            q = q.order_by(Thread.created_at.desc(), Thread.id.desc()).limit(limit)
            return (await s.execute(q)).scalars().all()

    async def mark_thread_deleting(self, user_id: str, thread_id: str, until: datetime) -> None:
        """Refuse new runs of the thread, on every process, until ``until`` (or the delete).

        Raises ``NotFound`` when the thread is not the user's. Set again to extend it.
        """
        if not is_valid(thread_id, "thr"):
            raise NotFound()
        if not await self.executor.run(units.mark_thread_deleting, user_id, thread_id, until):
            raise NotFound()

    async def clear_thread_deleting(self, user_id: str, thread_id: str, until: datetime) -> None:
        """Accept runs of the thread again (the delete marked ``until`` gave up)."""
        await self.executor.run(units.clear_thread_deleting, user_id, thread_id, until)

    async def delete_thread(
        self, user_id: str, thread_id: str, *, unless_used: bool = False
    ) -> bool:
        """Deletes the thread with its messages, runs and events; True once deleted.

        ``unless_used``: only while no run is stored on it, checked in the delete's
        transaction (False otherwise). For a thread made for a run that was then
        refused: a request that found the thread meanwhile may have put its run there.
        Raises ``NotFound`` for a missing or foreign thread.
        """
        if not is_valid(thread_id, "thr"):
            raise NotFound()
        async with self.write() as s:
            owned = await s.scalar(
                select(Thread.id).where(Thread.id == thread_id, Thread.user_id == user_id)
            )
            if owned is None:
                raise NotFound()
            if unless_used and await s.scalar(
                select(Run.id).where(Run.thread_id == thread_id, Run.user_id == user_id).limit(1)
            ):
                return False
            for table in (EventRow, Message, Run):
                await s.execute(
                    delete(table).where(table.thread_id == thread_id, table.user_id == user_id)
                )
            await s.execute(delete(Thread).where(Thread.id == thread_id, Thread.user_id == user_id))
        return True

    # Messages ---------------------------------------------------------------------------------

    async def list_messages(self, user_id: str, thread_id: str) -> Sequence[Message]:
        await self.get_thread(user_id, thread_id)
        async with self.read() as s:
            q = (
                select(Message)
                .where(Message.thread_id == thread_id, Message.user_id == user_id)
                .order_by(Message.created_at, Message.id)
            )
            return (await s.execute(q)).scalars().all()

    # Runs -------------------------------------------------------------------------------------

    async def create_run(
        self,
        user_id: str,
        thread_id: str,
        agent: str,
        input: str,
        metadata: dict[str, Any] | None = None,
        *,
        max_queued: int | None = None,
    ) -> Run:
        """A queued run and the user's message that asked for it, in one transaction.

        With ``max_queued``, the run is stored only while the user has fewer queued runs
        than that in the database (a cluster's processes share one queue); otherwise it
        raises :func:`~tenet.errors.queue_full`.
        """
        now = utc_now()
        run = Run(
            id=new_id("run"),
            user_id=user_id,
            thread_id=thread_id,
            agent=agent,
            status="queued",
            input=input,
            meta=dict(metadata or {}),
            created_at=now,
            attempts=0,
        )
        message_id = new_id("msg")
        row = {
            c: getattr(run, c)
            for c in ("id", "user_id", "thread_id", "agent", "input", "meta", "created_at")
        }
        # With a limit, the user's row stays locked until the run is stored: a count
        # alone sees none of the runs that concurrent transactions are storing.
        outcome = await self.executor.run(
            units.insert_run, row, message_id, max_queued, atomic=max_queued is not None
        )
        if outcome == "full":
            raise queue_full(max_queued or 0)
        if outcome == "not_found":
            raise NotFound()
        return run

    async def get_run(self, user_id: str, run_id: str) -> Run:
        if not is_valid(run_id, "run"):
            raise NotFound()
        found = await self.executor.run(units.select_run, user_id, run_id, write=False)
        if found is None:
            raise NotFound()
        return run_from_row(found)

    async def update_run(self, user_id: str, run_id: str, **values: Any) -> None:
        """Set run fields; a finished run keeps its terminal status."""
        await self.executor.run(units.update_run, user_id, run_id, values)

    async def finish_run(
        self,
        user_id: str,
        run_id: str,
        *,
        status: str,
        output: str | None = None,
        error: dict[str, Any] | None = None,
    ) -> None:
        """Terminal status, output and the assistant's message, in one transaction."""
        await self.executor.run(
            units.finish_run,
            user_id,
            run_id,
            status,
            output,
            error,
            utc_now(),
            new_id("msg"),
        )

    async def admin_runs_with_status(self, statuses: Iterable[str]) -> Sequence[Run]:
        """Runs in the given statuses across all users: start-up recovery only."""
        async with self.read() as s:
            q = select(Run).where(Run.status.in_(list(statuses))).order_by(Run.created_at, Run.id)
            return (await s.execute(q)).scalars().all()

    # Cluster: claiming, heartbeats, dead workers (Postgres) ---------------------------------

    async def claim_runs(self, worker_id: str, limit: int, user_max: int) -> list[Run] | None:
        """Claim up to ``limit`` runnable runs for ``worker_id`` (Postgres only).

        Runnable: queued, first of its thread's queued runs, no run of its thread
        running, its user under ``user_max`` running runs cluster-wide. Rows are
        taken with ``FOR UPDATE SKIP LOCKED``; one transaction-scoped advisory lock
        serializes the claimers, so per-user counts cannot race between processes.
        Returns None when another process held the claim for a second.
        """
        if limit <= 0:
            return []
        now = utc_now()
        found = await self.executor.run(
            units.claim_runs, worker_id, limit, user_max, now, atomic=True
        )
        if found is None:
            return None
        claimed = []
        for row in found:
            run = run_from_row(row)
            run.status = "running"
            run.worker_id = worker_id
            run.heartbeat_at = now
            run.started_at = now
            run.attempts = (run.attempts or 0) + 1
            claimed.append(run)
        return claimed

    async def heartbeat(self, worker_id: str) -> set[str]:
        """Tell the cluster this worker is alive; returns the ids of the runs it still holds.

        It never waits for a row lock. The event writer locks the runs it ends in its
        batch's order; a heartbeat that updated every run of its worker, waiting where
        it had to, deadlocked with it, and Postgres broke the cycle only after
        ``deadlock_timeout`` (1 s): the writer's events were a second late and the
        beat was lost. A run whose row another transaction holds keeps its last beat
        this time (that transaction is about to change it) and is still reported held.
        """
        mine = Run.worker_id == worker_id, Run.status.in_(("running", "cancelling"))
        async with self.write() as s:
            free = select(Run.id).where(*mine).with_for_update(skip_locked=True)
            beating = (await s.execute(free)).scalars().all()
            if beating:
                await s.execute(
                    update(Run)
                    .where(Run.id.in_(beating))
                    .values(heartbeat_at=utc_now())
                    .execution_options(synchronize_session=False)
                )
            return set((await s.execute(select(Run.id).where(*mine))).scalars().all())

    async def admin_claim_settlement(self, user_id: str, run_id: str, worker_id: str) -> bool:
        """Take a queued run out of the queue to settle it (cancel); False if it is no longer queued."""
        async with self.write() as s:
            result = await s.execute(
                update(Run)
                .where(Run.id == run_id, Run.user_id == user_id, Run.status == "queued")
                .values(status="cancelling", worker_id=worker_id, heartbeat_at=utc_now())
            )
        return bool(result.rowcount)

    async def admin_dead_runs(self, older_than: datetime) -> Sequence[Run]:
        """Running or cancelling runs whose worker stopped heartbeating (sweeper only)."""
        async with self.write() as s:
            q = (
                select(Run)
                .where(
                    Run.status.in_(("running", "cancelling")),
                    (Run.heartbeat_at < older_than) | (Run.heartbeat_at.is_(None)),
                )
                .order_by(Run.created_at)
                .limit(100)
                .with_for_update(skip_locked=True)
            )
            return (await s.execute(q)).scalars().all()

    async def admin_requeue(self, run_id: str, worker_id: str | None) -> bool:
        """Put a dead worker's run back in the queue (only if that worker still holds it)."""
        async with self.write() as s:
            result = await s.execute(
                update(Run)
                .where(Run.id == run_id, Run.worker_id == worker_id, Run.status == "running")
                .values(status="queued", worker_id=None, heartbeat_at=None, started_at=None)
            )
        return bool(result.rowcount)

    async def admin_take_over(self, run_id: str, dead_worker: str | None, worker_id: str) -> bool:
        """Become the settler of a dead worker's run (so only one sweeper writes its end)."""
        async with self.write() as s:
            result = await s.execute(
                update(Run)
                .where(
                    Run.id == run_id,
                    (Run.worker_id == dead_worker) if dead_worker else Run.worker_id.is_(None),
                    Run.status.in_(("running", "cancelling")),
                )
                .values(worker_id=worker_id, heartbeat_at=utc_now())
            )
        return bool(result.rowcount)

    async def admin_root_execution(self, run_id: str) -> str | None:
        """The execution id of a run's own agent (from its first event), if it started."""
        async with self.read() as s:
            body = await s.scalar(
                select(EventRow.body)
                .where(EventRow.run_id == run_id, RUN_MARKED, EventRow.type == "agent_started")
                .order_by(EventRow.seq)
                .limit(1)
            )
        if body is None:
            return None
        value = orjson.loads(body).get("execution_id")
        return value if is_valid(value, "exe") else None

    async def run_terminal_event(self, user_id: str, run_id: str) -> dict[str, Any] | None:
        """The stored event that ended the run (depth-0 end or ``run_cancelled``), if any."""
        async with self.read() as s:
            bodies = (
                await s.execute(
                    select(EventRow.body)
                    .where(
                        EventRow.run_id == run_id,
                        RUN_MARKED,
                        EventRow.user_id == user_id,
                        EventRow.type.in_(("agent_completed", "agent_error", "run_cancelled")),
                    )
                    .order_by(EventRow.seq)
                )
            ).scalars()
            for body in bodies:
                event = orjson.loads(body)
                if event.get("type") == "run_cancelled" or event.get("depth") == 0:
                    return dict(event)
        return None

    async def run_has_events(self, run_id: str) -> bool:
        """True once the run has stored an event (its first is always one of ``RUN_MARKS``)."""
        async with self.read() as s:
            return (
                await s.scalar(
                    select(EventRow.seq).where(EventRow.run_id == run_id, RUN_MARKED).limit(1)
                )
            ) is not None

    # Events -----------------------------------------------------------------------------------

    async def list_events(
        self,
        user_id: str,
        thread_id: str,
        *,
        after: int = 0,
        limit: int = 1000,
        check_owner: bool = True,
    ) -> list[str]:
        """Stored event bodies (JSON text) of the thread with ``seq > after``, ascending."""
        if check_owner:
            await self.get_thread(user_id, thread_id)
        return await self.executor.run(
            units.select_events, user_id, thread_id, after, limit, write=False
        )

    async def last_seq(self, user_id: str, thread_id: str) -> int:
        """The highest ``seq`` of the user's thread (0 without events or when not the user's).

        On every subscription and AG-UI run: one statement on the hot path's executor.
        """
        return await self.executor.run(units.last_seq, user_id, thread_id, write=False)

    # Notes ------------------------------------------------------------------------------------

    async def add_note(self, user_id: str, text: str) -> Note:
        note = Note(id=new_id("not"), user_id=user_id, text=text, created_at=utc_now())
        async with self.write() as s:
            s.add(note)
        return note

    async def delete_notes(self, user_id: str) -> int:
        """Delete every note of the user; returns how many there were."""
        async with self.write() as s:
            result = await s.execute(delete(Note).where(Note.user_id == user_id))
        return int(result.rowcount or 0)

    async def list_notes(
        self, user_id: str, *, query: str | None = None, limit: int = 20
    ) -> Sequence[Note]:
        """The user's notes, newest first; with ``query``, those sharing a word with it."""
        async with self.read() as s:
            q = (
                select(Note)
                .where(Note.user_id == user_id)
                .order_by(Note.created_at.desc(), Note.id.desc())
            )
            notes = (await s.execute(q.limit(500))).scalars().all()
        if query:
            words = {w for w in _words(query) if len(w) > 2}
            scored = [(len(words & set(_words(n.text))), n) for n in notes]
            notes = [n for score, n in sorted(scored, key=lambda p: -p[0]) if score > 0] or list(
                notes
            )
        return list(notes)[:limit]


def _words(text: str) -> list[str]:
    return [w.strip(".,!?;:'\"()").lower() for w in text.split()]


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def as_utc(value: datetime | None) -> datetime | None:
    """SQLite hands back naive datetimes; they were stored as UTC."""
    from datetime import UTC

    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value
