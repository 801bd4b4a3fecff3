"""The hot path of the store on Postgres: plain ``asyncpg`` on a pool of its own.

Every run makes a handful of writes (its creation, its claim, its events, its
end) and each socket a few reads. Through the async ORM each costs about a
millisecond of CPU or more: statements are built and compiled, results turned
into objects, and every checkout pings the server. Here each is one prepared
statement (cached by ``asyncpg`` per connection), most of them a single round
trip without an explicit transaction: a run's creation and its end are single
statements (CTEs) that check ownership and write in one go, and the event
writer inserts a whole batch as one ``INSERT ... SELECT FROM unnest(...)``.

The rows are the same rows, in the same formats, that the ORM reads and writes
elsewhere (``timestamptz``, JSON columns of type ``json`` holding JSON text), so
both paths see one database; the cold paths (users, tokens, listing, the sweeper)
stay on SQLAlchemy.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy.engine import make_url

try:
    import asyncpg
except ImportError:  # pragma: no cover - without the `postgres` extra only SQLite is served
    asyncpg = None  # type: ignore[assignment]

from .rows import RUN_COLUMNS, START_RUN, run_from_row, to_db_json

T = TypeVar("T")

ACTIVE = ("running", "cancelling")
#: The advisory lock that serializes claimers across the cluster (held per transaction).
CLAIM_LOCK = 7312001

#: Errors after which no pooled connection can be trusted (the server went away).
_CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    (
        asyncpg.PostgresConnectionError,
        asyncpg.InterfaceError,
        asyncpg.exceptions.AdminShutdownError,
        asyncpg.exceptions.CannotConnectNowError,
        OSError,
    )
    if asyncpg is not None
    else (OSError,)
)


def asyncpg_dsn(url: str) -> tuple[str, dict[str, Any]]:
    """The ``postgresql://`` DSN of a SQLAlchemy ``postgresql+asyncpg://`` URL, and its options."""
    parsed = make_url(url)
    query = dict(parsed.query)
    kwargs: dict[str, Any] = {}
    # SQLAlchemy's asyncpg dialect passes these query options as connect arguments.
    if "prepared_statement_cache_size" in query:
        kwargs["statement_cache_size"] = int(query.pop("prepared_statement_cache_size"))
    for name in ("prepared_statement_name_func", "async_fallback", "server_settings"):
        query.pop(name, None)
    dsn = parsed.set(drivername="postgresql", query=query).render_as_string(hide_password=False)
    return dsn, kwargs


async def _reset(conn: asyncpg.Connection) -> None:
    """What is left to reset when a connection goes back to the pool: nothing.

    asyncpg rolls back a transaction left open (an error path) before calling this; its
    default reset (unlock all, close all, unlisten, reset all) would be one more round
    trip per statement, and nothing here takes session-level state (locks and settings
    are transaction-scoped).
    """


class DirectPostgres:
    """Runs statements and short transactions on an ``asyncpg`` pool of its own."""

    def __init__(self, url: str, *, min_size: int = 1, max_size: int = 10) -> None:
        if asyncpg is None:
            raise RuntimeError("Postgres needs the `postgres` extra: pip install 'tenet[postgres]'")
        self._dsn, self._options = asyncpg_dsn(url)
        self._min_size = min_size
        self._max_size = max_size
        self._pool: asyncpg.Pool | None = None
        self._opening: asyncio.Lock | None = None

    async def _open(self) -> asyncpg.Pool:
        if self._opening is None:
            self._opening = asyncio.Lock()
        async with self._opening:
            if self._pool is None:
                self._pool = await asyncpg.create_pool(
                    self._dsn,
                    min_size=self._min_size,
                    max_size=self._max_size,
                    timeout=30,
                    reset=_reset,
                    **self._options,
                )
        return self._pool

    async def _transaction(
        self, fn: Callable[..., Awaitable[T]], args: tuple[Any, ...], write: bool
    ) -> T:
        """``fn(connection, *args)`` on one pooled connection (``fn`` opens a transaction if it needs one)."""
        pool = self._pool or await self._open()
        try:
            async with pool.acquire() as conn:
                return await fn(conn, *args)
        except _CONNECTION_ERRORS:
            # The server went away (or restarted): reconnect every pooled connection on
            # its next use instead of failing once on each of them.
            await pool.expire_connections()
            raise

    async def write(self, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        return await self._transaction(fn, args, True)

    async def read(self, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        """A read; retried once on a fresh connection when the pooled one had gone stale."""
        try:
            return await self._transaction(fn, args, False)
        except _CONNECTION_ERRORS:
            return await self._transaction(fn, args, False)

    async def close(self) -> None:
        if self._pool is not None:
            pool, self._pool = self._pool, None
            try:
                await asyncio.wait_for(pool.close(), 10)
            except (TimeoutError, Exception):
                pool.terminate()


# The hot statements, as functions of a connection --------------------------------------------


async def thread_owned(conn: asyncpg.Connection, user_id: str, thread_id: str) -> Any:
    return await conn.fetchrow(
        "SELECT id, user_id, metadata, created_at FROM threads WHERE id = $1 AND user_id = $2",
        thread_id,
        user_id,
    )


def _insert_run_sql(*, limited: bool) -> str:
    """The run and the user's message in one statement; answers whether the thread is the
    user's and whether the run was stored. ``limited``: only while the user has fewer than
    $9 queued runs (in the whole cluster)."""
    queue = "q AS (SELECT count(*) AS n FROM runs WHERE user_id = $2 AND status = 'queued'), "
    return (
        "WITH t AS (SELECT id FROM threads WHERE id = $3 AND user_id = $2), "
        + (queue if limited else "")
        + "r AS (INSERT INTO runs (id, user_id, thread_id, agent, status, input, output, error, "
        "metadata, created_at, started_at, finished_at, worker_id, heartbeat_at, attempts) "
        "SELECT $1, $2, t.id, $4, 'queued', $5, NULL, NULL, $6::json, $7, NULL, NULL, NULL, NULL, 0 "
        + ("FROM t, q WHERE q.n < $9 " if limited else "FROM t ")
        + "RETURNING id), "
        "m AS (INSERT INTO messages (id, user_id, thread_id, run_id, role, content, created_at) "
        "SELECT $8, $2, $3, r.id, 'user', $5, $7 FROM r RETURNING id) "
        "SELECT (SELECT count(*) FROM t) > 0, (SELECT count(*) FROM m) > 0"
    )


_INSERT_RUN = _insert_run_sql(limited=False)
_INSERT_RUN_WITHIN_LIMIT = _insert_run_sql(limited=True)


async def insert_run(
    conn: asyncpg.Connection, run: dict[str, Any], message_id: str, max_queued: int | None
) -> str:
    """The run and the user's message: ``"stored"``, ``"not_found"`` (the thread is not the
    user's) or ``"full"`` (``max_queued`` runs of the user wait already)."""
    args = [
        run["id"],
        run["user_id"],
        run["thread_id"],
        run["agent"],
        run["input"],
        to_db_json(run["meta"]),
        run["created_at"],
        message_id,
    ]
    if max_queued is None:
        owned, stored = await conn.fetchrow(_INSERT_RUN, *args)
    else:
        owned, stored = await conn.fetchrow(_INSERT_RUN_WITHIN_LIMIT, *args, max_queued)
    return "stored" if stored else "full" if owned else "not_found"


async def select_run(conn: asyncpg.Connection, user_id: str, run_id: str) -> dict[str, Any] | None:
    row = await conn.fetchrow(
        f"SELECT {RUN_COLUMNS} FROM runs WHERE id = $1 AND user_id = $2", run_id, user_id
    )
    return run_from_row(row) if row is not None else None


_UPDATABLE: dict[str, Callable[[Any], Any] | None] = {
    "status": None,
    "started_at": None,
    "worker_id": None,
    "heartbeat_at": None,
    "output": None,
    "error": to_db_json,
    "attempts": None,
}


async def update_run(
    conn: asyncpg.Connection, user_id: str, run_id: str, values: dict[str, Any]
) -> None:
    if not values:
        return
    unknown = set(values) - set(_UPDATABLE)
    if unknown:
        raise ValueError(f"cannot update run fields {sorted(unknown)}")
    names = sorted(values)
    params = [_UPDATABLE[n](values[n]) if _UPDATABLE[n] else values[n] for n in names]  # type: ignore[misc]
    assignments = ", ".join(
        f"{n} = ${i}::json" if n == "error" else f"{n} = ${i}" for i, n in enumerate(names, 3)
    )
    await conn.execute(
        f"UPDATE runs SET {assignments} WHERE id = $1 AND user_id = $2 "
        "AND status NOT IN ('completed', 'failed', 'cancelled')",
        run_id,
        user_id,
        *params,
    )


_START_RUN = START_RUN.format(now="$3", worker="$4", run="$1", user="$2")


async def start_run(
    conn: asyncpg.Connection, user_id: str, run_id: str, now: datetime, worker_id: str
) -> None:
    """The run's start (see :data:`tenet.store.rows.START_RUN`)."""
    await conn.execute(_START_RUN, run_id, user_id, now, worker_id)


_FINISH_RUN = (
    "WITH r AS (UPDATE runs SET status = $3, output = $4, error = $5::json, finished_at = $6 "
    "WHERE id = $1 AND user_id = $2 AND status NOT IN ('completed', 'failed', 'cancelled') "
    "RETURNING thread_id) "
    "INSERT INTO messages (id, user_id, thread_id, run_id, role, content, created_at) "
    "SELECT $7, $2, r.thread_id, $1, 'assistant', $4, $6 FROM r WHERE $4::text IS NOT NULL"
)


async def finish_run(
    conn: asyncpg.Connection,
    user_id: str,
    run_id: str,
    status: str,
    output: str | None,
    error: dict[str, Any] | None,
    now: datetime,
    message_id: str,
) -> None:
    """Terminal status, output and the assistant's message in one statement (a no-op when finished)."""
    await conn.execute(
        _FINISH_RUN, run_id, user_id, status, output, to_db_json(error), now, message_id
    )


async def select_events(
    conn: asyncpg.Connection, user_id: str, thread_id: str, after: int, limit: int
) -> list[str]:
    rows = await conn.fetch(
        "SELECT body FROM events WHERE thread_id = $1 AND user_id = $2 AND seq > $3 "
        "ORDER BY seq LIMIT $4",
        thread_id,
        user_id,
        after,
        limit,
    )
    return [r[0] for r in rows]


async def max_seqs(conn: asyncpg.Connection, thread_ids: list[str]) -> dict[str, int]:
    rows = await conn.fetch(
        "SELECT thread_id, max(seq) FROM events WHERE thread_id = ANY($1::varchar[]) "
        "GROUP BY thread_id",
        thread_ids,
    )
    found = {r[0]: int(r[1] or 0) for r in rows}
    return {tid: found.get(tid, 0) for tid in thread_ids}


_INSERT_EVENTS = (
    "INSERT INTO events (id, user_id, thread_id, run_id, seq, type, created_at, body) "
    "SELECT * FROM unnest($1::varchar[], $2::varchar[], $3::varchar[], $4::varchar[], "
    "$5::int[], $6::varchar[], $7::timestamptz[], $8::text[])"
)


async def insert_events(conn: asyncpg.Connection, rows: list[tuple[Any, ...]]) -> None:
    """A batch of events in one statement (columns as arrays)."""
    columns = list(zip(*rows, strict=True)) if rows else [()] * 8
    await conn.execute(_INSERT_EVENTS, *columns)


_CLAIM_CANDIDATES = (
    f"SELECT {RUN_COLUMNS}, (SELECT count(*) FROM runs c WHERE c.user_id = r.user_id "
    "AND c.status IN ('running', 'cancelling')) FROM runs r "
    "WHERE r.status = 'queued' "
    "AND NOT EXISTS (SELECT 1 FROM runs b WHERE b.thread_id = r.thread_id "
    "AND b.status IN ('running', 'cancelling')) "
    "AND NOT EXISTS (SELECT 1 FROM runs e WHERE e.thread_id = r.thread_id "
    "AND e.status = 'queued' AND (e.created_at, e.id) < (r.created_at, r.id)) "
    "ORDER BY r.created_at, r.id LIMIT $1 FOR UPDATE OF r SKIP LOCKED"
)

#: One round trip: the transaction, and the claim lock (claimers wait for each other, a
#: claim takes a few milliseconds, but never longer than a second).
_CLAIM_BEGIN = f"BEGIN; SET LOCAL lock_timeout = '1s'; SELECT pg_advisory_xact_lock({CLAIM_LOCK})"


async def claim_runs(
    conn: asyncpg.Connection, worker_id: str, limit: int, user_max: int, now: datetime
) -> list[dict[str, Any]] | None:
    """The claim of :meth:`Store.claim_runs`, as rows (None: the claim lock was not free in time)."""
    try:
        await conn.execute(_CLAIM_BEGIN)
    except asyncpg.exceptions.LockNotAvailableError:
        await conn.execute("ROLLBACK")
        return None
    try:
        rows = await conn.fetch(_CLAIM_CANDIDATES, limit * 8)
        candidates = [run_from_row(r) for r in rows]
        # Each candidate carries its user's running runs, cluster-wide.
        running = {r[1]: int(r[-1]) for r in rows}
        # Users take turns: each user's first runnable run before anyone's second.
        rank: dict[str, int] = {}
        ordered = []
        for run in candidates:
            rank[run["user_id"]] = rank.get(run["user_id"], 0) + 1
            ordered.append((rank[run["user_id"]], run["created_at"], run["id"], run))
        chosen: list[dict[str, Any]] = []
        for _, _, _, run in sorted(ordered, key=lambda t: t[:3]):
            if len(chosen) >= limit:
                break
            if running.get(run["user_id"], 0) >= user_max:
                continue
            running[run["user_id"]] = running.get(run["user_id"], 0) + 1
            chosen.append(run)
        if chosen:
            await conn.execute(
                "UPDATE runs SET status = 'running', worker_id = $1, heartbeat_at = $2, "
                "started_at = $2, attempts = coalesce(attempts, 0) + 1 "
                "WHERE id = ANY($3::varchar[])",
                worker_id,
                now,
                [r["id"] for r in chosen],
            )
    except BaseException:
        if not conn.is_closed():
            await conn.execute("ROLLBACK")
        raise
    await conn.execute("COMMIT")
    for run in chosen:
        run.update(
            status="running",
            worker_id=worker_id,
            heartbeat_at=now,
            started_at=now,
            attempts=(run["attempts"] or 0) + 1,
        )
    return chosen
