"""The hot path of the embedded store: plain ``sqlite3`` on one dedicated thread.

Every run makes a handful of writes (its creation, its start, its events, its
end). Through the async ORM each costs about a millisecond of CPU: statements
are built and compiled, and aiosqlite hands every call to its thread and back.
Here a whole transaction is one Python function executed on the store's own
SQLite thread: one hand-off per transaction, statements cached by ``sqlite3``.
The rows it writes are the same rows, in the same formats, that the ORM reads
and writes elsewhere (times as ``YYYY-MM-DD HH:MM:SS.ffffff`` UTC text, JSON as
text), so both paths see one database.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any, TypeVar

from .rows import RUN_COLUMNS, TERMINAL, run_from_row, to_db_json

T = TypeVar("T")


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


class DirectSqlite:
    """Runs transactions on one ``sqlite3`` connection, on one thread of its own."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tenet-sqlite")
        self._conn: sqlite3.Connection | None = None

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

    def _transaction(self, fn: Callable[..., T], args: tuple[Any, ...], write: bool) -> T:
        conn = self._connection()
        conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
        try:
            result = fn(conn, *args)
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
        return result

    async def write(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(connection, *args)`` in one write transaction on the SQLite thread."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._transaction, fn, args, True)

    async def read(self, fn: Callable[..., T], *args: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._transaction, fn, args, False)

    async def close(self) -> None:
        def shut() -> None:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._executor, shut)
        self._executor.shutdown(wait=True)


# The hot transactions, as functions of a connection ---------------------------------------


def thread_owned(conn: sqlite3.Connection, user_id: str, thread_id: str) -> tuple[Any, ...] | None:
    return conn.execute(
        "SELECT id, user_id, metadata, created_at FROM threads WHERE id = ? AND user_id = ?",
        (thread_id, user_id),
    ).fetchone()


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
