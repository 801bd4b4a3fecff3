"""The hot path of the embedded store: plain ``sqlite3`` on one dedicated thread.

Every run makes a handful of writes (its creation, its start, its events, its
end). Through the async ORM each costs about a millisecond of CPU: statements
are built and compiled, and aiosqlite hands every call to its thread and back.
Here each call is one Python function executed on the store's own SQLite
thread, and the calls that arrive together share one transaction (group
commit): one hand-off and one commit for many calls, statements cached by
``sqlite3``.
The rows it writes are the same rows, in the same formats, that the ORM reads
and writes elsewhere (times as ``YYYY-MM-DD HH:MM:SS.ffffff`` UTC text, JSON as
text), so both paths see one database.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import sqlite3
import threading
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

from .rows import RUN_COLUMNS, TERMINAL, run_from_row, to_db_json

T = TypeVar("T")

log = logging.getLogger("tenet.store")

#: At most this many calls share one transaction.
GROUP_MAX = 256


def to_db_time(value: datetime | None) -> str | None:
    """The text SQLAlchemy stores for a UTC datetime on SQLite."""
    if value is None:
        return None
    if value.tzinfo is not None:
        value = value.astimezone(UTC).replace(tzinfo=None)
    return value.isoformat(sep=" ", timespec="microseconds")  # strftime is several times slower


def from_db_time(value: str | None) -> datetime | None:
    if value is None:
        return None
    return datetime.fromisoformat(value).replace(tzinfo=UTC)


class _Job:
    """One call waiting for the SQLite thread; settled on the event loop that made it."""

    __slots__ = ("args", "fn", "future", "loop", "outcome", "write")

    def __init__(
        self,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        write: bool,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self.fn = fn
        self.args = args
        self.write = write
        self.loop = loop
        self.future: asyncio.Future[Any] = loop.create_future()
        self.outcome: tuple[bool, Any] = (False, None)


class _Pause:
    """Holds the SQLite thread still while someone else (the ORM) writes; or stops it."""

    __slots__ = ("loop", "reached", "released", "stop")

    def __init__(self, loop: asyncio.AbstractEventLoop, *, stop: bool = False) -> None:
        self.loop = loop
        self.stop = stop
        self.reached: asyncio.Future[None] = loop.create_future()
        self.released = threading.Event()


class DirectSqlite:
    """Runs transactions on one ``sqlite3`` connection, on one thread of its own.

    Calls that arrive while a transaction is being committed wait, and are then
    run together in the next transaction (group commit): a hundred runs writing at
    once cost one commit, not a hundred, and one failing call still fails alone
    (see :meth:`_run_group`). The thread settles a group's futures with one
    hand-off to the event loop.
    """

    def __init__(self, path: str, *, group_max: int = GROUP_MAX) -> None:
        self.path = path
        self._group_max = group_max
        self._jobs: queue.SimpleQueue[_Job | _Pause] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._conn: sqlite3.Connection | None = None
        self._closed = False
        #: Transactions committed (a test reads it to see calls share one).
        self.groups = 0

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            conn = sqlite3.connect(
                self.path, isolation_level=None, check_same_thread=False, timeout=30
            )
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA foreign_keys=ON")
            conn.execute("PRAGMA busy_timeout=30000")
            self._conn = conn
        return self._conn

    # The event loop's side ------------------------------------------------------------------

    def _submit(self, item: _Job | _Pause) -> None:
        if self._closed:
            raise RuntimeError("the store is closed")
        if self._thread is None:
            self._thread = threading.Thread(target=self._serve, name="tenet-sqlite", daemon=True)
            self._thread.start()
        self._jobs.put(item)

    async def write(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(connection, *args)`` in a write transaction on the SQLite thread.

        Returns once the transaction that carried it is committed.
        """
        job = _Job(fn, args, True, asyncio.get_running_loop())
        self._submit(job)
        return await job.future

    async def read(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(connection, *args)`` in a transaction (with the writes queued before it)."""
        job = _Job(fn, args, False, asyncio.get_running_loop())
        self._submit(job)
        return await job.future

    @contextlib.asynccontextmanager
    async def paused(self) -> AsyncIterator[None]:
        """Hold the SQLite thread between two transactions for the length of the block.

        The ORM's writes go through other connections; pausing this one while they
        run means neither waits on the other's lock.
        """
        pause = _Pause(asyncio.get_running_loop())
        self._submit(pause)
        try:
            await pause.reached
            yield
        finally:
            pause.released.set()

    async def close(self) -> None:
        """Finish the calls queued so far, close the connection and stop the thread."""
        self._closed = True
        if self._thread is None:
            return
        stop = _Pause(asyncio.get_running_loop(), stop=True)
        self._jobs.put(stop)
        await stop.reached
        self._thread = None

    # The SQLite thread's side ---------------------------------------------------------------

    def _serve(self) -> None:
        pending: list[_Job | _Pause] = []
        while True:
            if not pending:
                pending.append(self._jobs.get())
            while len(pending) < self._group_max:
                try:
                    pending.append(self._jobs.get_nowait())
                except queue.Empty:
                    break
            group: list[_Job] = []
            while pending and isinstance(pending[0], _Job) and len(group) < self._group_max:
                group.append(pending.pop(0))  # type: ignore[arg-type]
            if group:
                try:
                    self._run_group(group)
                except BaseException as exc:  # the database cannot be opened or locked
                    log.warning("could not start a transaction: %s", exc)
                    for job in group:
                        job.outcome = (False, exc)
                _hand_back(group)
                continue
            pause = pending.pop(0)
            assert isinstance(pause, _Pause)
            if pause.stop and self._conn is not None:
                self._conn.close()
                self._conn = None
            with contextlib.suppress(RuntimeError):
                pause.loop.call_soon_threadsafe(_settle_pause, pause.reached)
            if pause.stop:
                return
            pause.released.wait()

    def _run_group(self, group: list[_Job]) -> None:
        """Run the calls in one transaction and set their outcomes.

        Optimistic: when every call succeeds (nearly always), the group costs one
        BEGIN and one COMMIT. When one fails, the transaction is rolled back and
        each call runs again in a transaction of its own, so that only the failing
        call fails. The calls are functions of the database alone, so running one
        again on the rolled-back state does exactly what it did the first time.
        """
        if len(group) > 1 and self._run_together(group):
            self.groups += 1
            return
        for job in group:
            try:
                self._run_together([job])
            except BaseException as exc:  # could not even begin: this call fails, not the rest
                job.outcome = (False, exc)
            self.groups += 1

    def _run_together(self, group: list[_Job]) -> bool:
        """One transaction for the group; False (rolled back) if a call of several failed."""
        conn = self._connection()
        conn.execute("BEGIN IMMEDIATE" if any(job.write for job in group) else "BEGIN")
        try:
            for job in group:
                job.outcome = (True, self._call(conn, job.fn, job.args))
        except BaseException as exc:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            if len(group) > 1:
                return False
            group[0].outcome = (False, exc)
            return True
        try:
            conn.execute("COMMIT")
        except BaseException as exc:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            for job in group:
                job.outcome = (False, exc)
        return True

    def _call(self, conn: sqlite3.Connection, fn: Callable[..., T], args: tuple[Any, ...]) -> T:
        """One call: the unit of work that belongs to one user."""
        return fn(conn, *args)


def _hand_back(group: list[_Job]) -> None:
    """Settle a group's futures with one hand-off per event loop."""
    by_loop: dict[asyncio.AbstractEventLoop, list[_Job]] = {}
    for job in group:
        by_loop.setdefault(job.loop, []).append(job)
    for loop, jobs in by_loop.items():
        with contextlib.suppress(RuntimeError):  # that loop is closed: nobody waits any more
            loop.call_soon_threadsafe(_settle, jobs)


def _settle(jobs: list[_Job]) -> None:
    for job in jobs:
        if job.future.done():
            continue
        ok, value = job.outcome
        if ok:
            job.future.set_result(value)
        else:
            job.future.set_exception(value)


def _settle_pause(reached: asyncio.Future[None]) -> None:
    if not reached.done():
        reached.set_result(None)


# The hot transactions, as functions of a connection ---------------------------------------


def thread_owned(conn: sqlite3.Connection, user_id: str, thread_id: str) -> tuple[Any, ...] | None:
    return conn.execute(
        "SELECT id, user_id, metadata, created_at FROM threads WHERE id = ? AND user_id = ?",
        (thread_id, user_id),
    ).fetchone()


def insert_thread(
    conn: sqlite3.Connection,
    thread_id: str,
    user_id: str,
    metadata: str | None,
    created: datetime,
    limit: int | None,
) -> bool:
    """A new thread of the user; False when the user already holds ``limit`` threads."""
    if limit is not None:
        (count,) = conn.execute(
            "SELECT count(*) FROM threads WHERE user_id = ?", (user_id,)
        ).fetchone()
        if count >= limit:
            return False
    conn.execute(
        "INSERT INTO threads (id, user_id, metadata, created_at) VALUES (?, ?, ?, ?)",
        (thread_id, user_id, metadata, to_db_time(created)),
    )
    return True


def insert_run(conn: sqlite3.Connection, run: dict[str, Any], message_id: str) -> bool:
    """The run and the user's message; False when the thread is not the user's."""
    if thread_owned(conn, run["user_id"], run["thread_id"]) is None:
        return False
    created = to_db_time(run["created_at"])
    conn.execute(
        "INSERT INTO runs (id, user_id, thread_id, agent, status, input, output, error, metadata, "
        "created_at, started_at, finished_at, worker_id, heartbeat_at, attempts) "
        "VALUES (?, ?, ?, ?, 'queued', ?, NULL, NULL, ?, ?, NULL, NULL, NULL, NULL, 0)",
        (
            run["id"],
            run["user_id"],
            run["thread_id"],
            run["agent"],
            run["input"],
            to_db_json(run["meta"]),
            created,
        ),
    )
    conn.execute(
        "INSERT INTO messages (id, user_id, thread_id, run_id, role, content, created_at) "
        "VALUES (?, ?, ?, ?, 'user', ?, ?)",
        (message_id, run["user_id"], run["thread_id"], run["id"], run["input"], created),
    )
    return True


def select_run(conn: sqlite3.Connection, user_id: str, run_id: str) -> dict[str, Any] | None:
    row = conn.execute(
        f"SELECT {RUN_COLUMNS} FROM runs WHERE id = ? AND user_id = ?", (run_id, user_id)
    ).fetchone()
    return run_from_row(row, from_db_time) if row is not None else None


_UPDATABLE = {
    "status": None,
    "started_at": to_db_time,
    "worker_id": None,
    "heartbeat_at": to_db_time,
    "output": None,
    "error": to_db_json,
    "attempts": None,
}


def update_run(conn: sqlite3.Connection, user_id: str, run_id: str, values: dict[str, Any]) -> None:
    if not values:
        return
    unknown = set(values) - set(_UPDATABLE)
    if unknown:
        raise ValueError(f"cannot update run fields {sorted(unknown)}")
    names = sorted(values)
    params = [_UPDATABLE[n](values[n]) if _UPDATABLE[n] else values[n] for n in names]  # type: ignore[misc]
    assignments = ", ".join(f"{n} = ?" for n in names)
    conn.execute(
        f"UPDATE runs SET {assignments} WHERE id = ? AND user_id = ? "
        "AND status NOT IN ('completed', 'failed', 'cancelled')",
        (*params, run_id, user_id),
    )


def finish_run(
    conn: sqlite3.Connection,
    user_id: str,
    run_id: str,
    status: str,
    output: str | None,
    error: dict[str, Any] | None,
    now: datetime,
    message_id: str,
) -> None:
    row = conn.execute(
        "SELECT thread_id, status FROM runs WHERE id = ? AND user_id = ?", (run_id, user_id)
    ).fetchone()
    if row is None or row[1] in TERMINAL:
        return
    stamp = to_db_time(now)
    conn.execute(
        "UPDATE runs SET status = ?, output = ?, error = ?, finished_at = ? WHERE id = ?",
        (status, output, to_db_json(error), stamp, run_id),
    )
    if output is not None:
        conn.execute(
            "INSERT INTO messages (id, user_id, thread_id, run_id, role, content, created_at) "
            "VALUES (?, ?, ?, ?, 'assistant', ?, ?)",
            (message_id, user_id, row[0], run_id, output, stamp),
        )


def select_events(
    conn: sqlite3.Connection, user_id: str, thread_id: str, after: int, limit: int
) -> list[str]:
    return [
        r[0]
        for r in conn.execute(
            "SELECT body FROM events WHERE thread_id = ? AND user_id = ? AND seq > ? "
            "ORDER BY seq LIMIT ?",
            (thread_id, user_id, after, limit),
        )
    ]


def max_seqs(conn: sqlite3.Connection, thread_ids: list[str]) -> dict[str, int]:
    found: dict[str, int] = {}
    for i in range(0, len(thread_ids), 500):
        chunk = thread_ids[i : i + 500]
        marks = ",".join("?" * len(chunk))
        found.update(
            conn.execute(
                f"SELECT thread_id, max(seq) FROM events WHERE thread_id IN ({marks}) "
                "GROUP BY thread_id",
                chunk,
            ).fetchall()
        )
    return {tid: int(found.get(tid) or 0) for tid in thread_ids}


def insert_events(conn: sqlite3.Connection, rows: list[tuple[Any, ...]]) -> None:
    conn.executemany(
        "INSERT INTO events (id, user_id, thread_id, run_id, seq, type, created_at, body) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        rows,
    )
