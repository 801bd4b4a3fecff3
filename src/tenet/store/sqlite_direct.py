"""The store's executor on SQLite: plain ``sqlite3``, run on the event loop itself.

Every run makes a handful of writes (its creation, its events, its end).
Through the async ORM each costs about a millisecond of CPU: statements are
built and compiled, and aiosqlite hands every call to its thread and back.
Here each call is one unit of work (:mod:`tenet.store.units`) run on a
``sqlite3`` connection, its statements compiled once at start-up
(:mod:`tenet.store.statements`), and the calls made during one turn of the event
loop share one transaction (group commit): one commit for many calls,
statements cached by ``sqlite3``.

The calls run on the event loop's own thread, between its callbacks. A thread
of their own was tried first and measured slower: every ``sqlite3`` call
releases the GIL and must win it back from the busy event loop, so a batch of a
hundred inserts waited for the GIL a hundred times, and the thread hand-offs
cost more CPU than the writes. A group's transaction takes a millisecond or two;
the slow part of SQLite's work, the checkpoint that copies the write-ahead log
into the database file, runs on a thread of its own (:class:`_Checkpointer`),
where it needs no GIL.

The rows it writes are the same rows, in the same formats, that the ORM reads
and writes elsewhere (times as ``YYYY-MM-DD HH:MM:SS.ffffff`` UTC text, JSON as
text; the statements' converters make them), so both see one database.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import threading
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

from . import statements
from .executor import (
    COUNT,
    EACH,
    EACH_ONE,
    ONE,
    ROWS,
    Compiled,
    Op,
    Unit,
)

T = TypeVar("T")

log = logging.getLogger("tenet.store")

#: At most this many calls share one transaction.
GROUP_MAX = 256
#: Transactions committed between two checkpoint requests (each writes a few hundred KiB
#: of log at most; SQLite's own default checkpoints at about 4 MiB).
CHECKPOINT_EVERY = 16
#: Past this many pages (16 MiB at SQLite's default page size), a checkpoint holds the
#: writer for a moment so that the log can start over (see :class:`_Checkpointer`).
LOG_LIMIT_PAGES = 4096
#: Before it holds the writer, the checkpointer copies passively again while a pass finds
#: more than this many new pages, so that the held pass copies (and syncs) a short tail only.
LOG_TAIL_PAGES = 128
#: At most this many such passes; a log that still has more left is held for regardless.
CATCH_UP_PASSES = 8
#: A log that did grow past this is cut back to it when it starts over.
LOG_FILE_LIMIT_BYTES = 64 * 1024 * 1024
#: A connection waits at most this long for another one's write lock (an ORM write of
#: this process never overlaps, see :meth:`DirectSqlite.paused`; only another process can).
BUSY_TIMEOUT_MS = 5_000


def _connect(path: str) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA foreign_keys=ON")
    conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    return conn


class _Job:
    """One call waiting for its group's transaction."""

    __slots__ = ("args", "fn", "future", "outcome", "write")

    def __init__(
        self,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        write: bool,
        future: asyncio.Future[Any],
    ) -> None:
        self.fn = fn
        self.args = args
        self.write = write
        self.future = future
        self.outcome: tuple[bool, Any] = (False, None)


class _Checkpointer:
    """Copies the write-ahead log into the database on a thread of its own.

    SQLite does this inside a commit once the log passes 1,000 pages, which would
    stall the event loop for the copy and its ``fsync``. Here the writing
    connection never checkpoints; it asks this thread to, every
    ``CHECKPOINT_EVERY`` commits. A passive checkpoint never blocks the writer,
    and the thread holds the GIL only to start it.

    A passive checkpoint alone never lets the log shrink under constant writes:
    SQLite starts the log over only once every frame in it has been copied, and
    the writer appends new frames while the copy runs, so the file grew by
    gigabytes in a minute of full load. Once the log is longer than
    ``log_limit`` pages, this thread asks the loop to hold its next transaction
    (:meth:`DirectSqlite._hold`), copies the few frames written meanwhile, and
    lets the writer go: its next commit starts the log from the beginning. The
    writer waits for that second pass (and its sync) once per ``log_limit``
    pages, 12 ms on average (18 at most) under full load; the loop itself never waits, and
    calls queued meanwhile share the next transaction.

    What the held pass copies is what the writer added during the pass before
    it, and that pass, copying up to ``log_limit`` pages and syncing them, can
    take a while on a busy disk: 50 to 110 ms held on a loaded machine, every
    user's writes waiting. So before holding, it copies passively again while
    each pass halves what is left (:meth:`_catch_up`); the held pass then copies
    what one short pass's length of writes added.
    """

    def __init__(
        self,
        path: str,
        *,
        log_limit: int,
        hold: Callable[[threading.Event], None],
        release: Callable[[], None],
    ) -> None:
        self._path = path
        self._log_limit = log_limit
        self._hold = hold
        self._release = release
        self._wanted = threading.Event()
        self._stopping = False
        #: Checkpoints run, and those that emptied the log (tests read them).
        self.runs = 0
        self.restarts = 0
        self._thread = threading.Thread(target=self._serve, name="tenet-checkpoint", daemon=True)
        self._thread.start()

    def request(self) -> None:
        self._wanted.set()

    def stop(self) -> None:
        """Run a last checkpoint and stop (blocks until the thread is done)."""
        self._stopping = True
        self._wanted.set()
        self._thread.join()

    def _serve(self) -> None:
        conn: sqlite3.Connection | None = None
        try:
            while True:
                self._wanted.wait()
                self._wanted.clear()
                try:
                    if conn is None:
                        conn = _connect(self._path)
                    frames, copied = _checkpoint(conn)
                    self.runs += 1
                    if frames > self._log_limit and not self._stopping:
                        self._catch_up(conn, copied)
                        self._finish_with_writer_held(conn)
                except sqlite3.Error as exc:  # retried at the next request
                    log.warning("checkpoint failed: %s", exc)
                if self._stopping:
                    return
        finally:
            if conn is not None:
                conn.close()

    def _catch_up(self, conn: sqlite3.Connection, copied: int) -> None:
        """Copy passively again while the last pass found much new: the held pass stays short.

        The pass that found the log too long may have taken a while (it copied up
        to ``log_limit`` pages and synced), and what the writer added meanwhile is
        what the held pass would copy with every user's writes waiting. Each pass
        here copies what was added during the one before, so what is left shrinks to
        what one short pass's length of writes adds (``copied``: the frames the
        last pass had copied, counted from the log's start). It stops as soon as a
        pass does not halve what is left, so a writer as fast as the copy is held as
        before, with the log at most twice its limit.
        """
        last = copied
        for _ in range(CATCH_UP_PASSES):
            frames, done = _checkpoint(conn)
            self.runs += 1
            added = frames - copied
            # Short enough, or not shrinking by half (a writer as fast as the copy), or
            # the log already twice its limit: the held pass is the way to end it.
            if added <= LOG_TAIL_PAGES or 2 * added > last or frames > 2 * self._log_limit:
                return
            last, copied = added, done

    def _finish_with_writer_held(self, conn: sqlite3.Connection) -> None:
        """Copy what the writer added during the last pass, while it waits."""
        held = threading.Event()
        try:
            self._hold(held)
        except RuntimeError:  # the loop is closed: the store is closing too
            return
        try:
            # A loop too busy to answer within a second is left alone; the hold still
            # arrives later and is released right after it, in order.
            if held.wait(1.0):
                frames, copied = _checkpoint(conn)
                if frames == copied:
                    self.restarts += 1
        finally:
            with contextlib.suppress(RuntimeError):
                self._release()


def _checkpoint(conn: sqlite3.Connection) -> tuple[int, int]:
    """A passive checkpoint: (frames in the log, frames copied)."""
    _busy, frames, copied = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
    return int(frames), int(copied)


class DirectSqlite:
    """Runs calls on one ``sqlite3`` connection, in transactions shared by a loop turn.

    Calls made while the event loop is busy are queued and run together, in one
    transaction, once the loop gets to them (group commit): a hundred runs writing
    at once cost one commit, not a hundred, and one failing call still fails
    alone (see :meth:`_run_group`).
    """

    def __init__(
        self, path: str, *, group_max: int = GROUP_MAX, log_limit: int = LOG_LIMIT_PAGES
    ) -> None:
        self.path = path
        self._group_max = group_max
        self._log_limit = log_limit
        self._queue: list[_Job] = []
        self._scheduled = False
        self._paused = 0
        #: Set while the checkpointer finishes a pass that lets the log start over.
        self._held = False
        self._conn: sqlite3.Connection | None = None
        self._checkpointer: _Checkpointer | None = None
        self._commits = 0
        self._closed = False
        #: Transactions committed (a test reads it to see calls share one).
        self.groups = 0
        self._catalogue = statements.compiled("sqlite")

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            conn = _connect(self.path)
            conn.execute("PRAGMA wal_autocheckpoint=0")  # see _Checkpointer
            conn.execute(f"PRAGMA journal_size_limit={LOG_FILE_LIMIT_BYTES}")
            self._conn = conn
            loop = asyncio.get_running_loop()
            self._checkpointer = _Checkpointer(
                self.path,
                log_limit=self._log_limit,
                hold=lambda held: loop.call_soon_threadsafe(self._hold, held),
                release=lambda: loop.call_soon_threadsafe(self._release),
            )
        return self._conn

    def _submit(
        self, fn: Callable[..., T], args: tuple[Any, ...], write: bool
    ) -> asyncio.Future[T]:
        if self._closed:
            raise RuntimeError("the store is closed")
        loop = asyncio.get_running_loop()
        job = _Job(fn, args, write, loop.create_future())
        self._queue.append(job)
        self._wake(loop)
        return job.future

    def _wake(self, loop: asyncio.AbstractEventLoop) -> None:
        """Schedule a drain if calls wait and nothing holds them."""
        if self._queue and not self._scheduled and not self._paused and not self._held:
            self._scheduled = True
            loop.call_soon(self._drain)

    def _hold(self, held: threading.Event) -> None:
        """Start no transaction until :meth:`_release` (the checkpointer's request)."""
        self._held = True
        held.set()

    def _release(self) -> None:
        self._held = False
        self._wake(asyncio.get_running_loop())

    dialect = "sqlite"

    async def run(self, unit: Unit[T], *args: Any, write: bool = True, atomic: bool = False) -> T:
        """Run a unit of work in the transaction of its loop turn (always atomic here).

        Returns once that transaction is committed. The unit runs synchronously on
        the event loop, its statements compiled once (:mod:`tenet.store.statements`).
        """
        return await self._submit(self._unit, (unit, args), write)

    def _unit(self, conn: sqlite3.Connection, unit: Unit[T], args: tuple[Any, ...]) -> T:
        """Run ``unit(*args)`` on ``conn``: each statement it yields, its result sent back."""
        gen = unit(*args)
        op = self._op
        try:
            step = gen.send(None)
            while True:
                step = gen.send(op(conn, step))
        except StopIteration as stop:
            return stop.value  # type: ignore[no-any-return]

    def _op(self, conn: sqlite3.Connection, op: Op) -> Any:
        kind, index, params = op
        catalogue = self._catalogue
        if index >= len(catalogue):
            statements.compiled("sqlite")  # a statement added since (grows the same list)
        stmt: Compiled = catalogue[index]
        if kind == ONE:
            return stmt.row(conn.execute(stmt.sql, stmt.args(params)).fetchone())
        if kind == ROWS:
            found = conn.execute(stmt.sql, stmt.args(params)).fetchall()
            return [stmt.row(r) for r in found] if stmt.columns else found
        if kind == COUNT:
            then = stmt.then
            if then is None:
                return conn.execute(stmt.sql, stmt.args(params)).rowcount
            if not stmt.returns:
                if not conn.execute(stmt.sql, stmt.args(params)).rowcount:
                    return 0
                return conn.execute(then.sql, then.args(params)).rowcount
            written = conn.execute(stmt.sql, stmt.args(params)).fetchall()
            return sum(conn.execute(then.sql, then.args((*params, *r))).rowcount for r in written)
        if kind == EACH:
            conn.executemany(stmt.sql, map(stmt.args, params))
            return None
        if kind == EACH_ONE:
            return [stmt.row(conn.execute(stmt.sql, stmt.args(p)).fetchone()) for p in params]
        raise ValueError(f"unknown op {kind!r}")

    async def write(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(connection, *args)`` in a write transaction.

        Returns once the transaction that carried it is committed.
        """
        return await self._submit(fn, args, True)

    async def read(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(connection, *args)`` in a transaction (with the writes queued before it)."""
        return await self._submit(fn, args, False)

    @contextlib.asynccontextmanager
    async def paused(self) -> AsyncIterator[None]:
        """Run no transaction on this connection for the length of the block.

        The ORM's writes go through other connections; holding this one still
        while they run means neither waits on the other's lock. Calls queued before
        the block are committed first, so they keep their order.
        """
        self._flush()
        self._paused += 1
        try:
            yield
        finally:
            self._paused -= 1
            self._wake(asyncio.get_running_loop())

    async def close(self) -> None:
        """Commit the calls queued so far, close the connection and stop checkpointing."""
        self._flush()
        self._closed = True
        for job in self._queue:  # queued during an ORM write that outlived the store
            if not job.future.done():
                job.future.set_exception(RuntimeError("the store is closed"))
        self._queue.clear()
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        if self._checkpointer is not None:
            checkpointer, self._checkpointer = self._checkpointer, None
            await asyncio.get_running_loop().run_in_executor(None, checkpointer.stop)

    # Running the queued calls ---------------------------------------------------------------

    def _drain(self) -> None:
        """One group, then the loop's other callbacks, then the next group."""
        self._scheduled = False
        if self._paused or self._held or not self._queue:
            return
        self._run_next()
        if self._queue:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._drain)

    def _flush(self) -> None:
        """Run every queued call now."""
        while self._queue and not self._paused:
            self._run_next()

    def _run_next(self) -> None:
        group = self._queue[: self._group_max]
        del self._queue[: len(group)]
        try:
            self._run_group(group)
        except BaseException as exc:  # the database cannot be opened or locked
            log.warning("could not start a transaction: %s", exc)
            for job in group:
                job.outcome = (False, exc)
        for job in group:
            if job.future.done():  # its caller was cancelled; the call ran regardless
                continue
            ok, value = job.outcome
            if ok:
                job.future.set_result(value)
            else:
                job.future.set_exception(value)
        if not any(job.write for job in group):
            return  # a read adds nothing to the log: it does not bring the next checkpoint nearer
        self._commits += 1
        if self._commits % CHECKPOINT_EVERY == 0 and self._checkpointer is not None:
            self._checkpointer.request()

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
