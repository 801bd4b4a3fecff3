"""The store's executor on Postgres: plain ``asyncpg`` on a pool of its own.

Every run makes a handful of writes (its creation, its claim, its events, its
end) and each socket a few reads. Through the async ORM each costs about a
millisecond of CPU or more: statements are built and compiled, results turned
into objects, and every checkout pings the server. Here each is a unit of work
(:mod:`tenet.store.units`) whose statements were compiled once at start-up
(:mod:`tenet.store.statements`) and are prepared by ``asyncpg`` once per
connection; a unit of one statement (a read, a run's start, the event writer's
batch without a run's end) runs without an explicit transaction, one round
trip, and the event writer inserts a whole batch as one
``INSERT ... SELECT FROM unnest(...)`` made from the catalogue's row insert.

The rows are the same rows, in the same formats, that the ORM reads and writes
elsewhere (``timestamptz``, JSON columns of type ``json`` holding JSON text), so
both see one database; the cold paths (users, tokens, listing, the sweeper)
stay on SQLAlchemy.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from functools import cache
from typing import Any, TypeVar

from sqlalchemy.engine import make_url

try:
    import asyncpg
except ImportError:  # pragma: no cover - without the `postgres` extra only SQLite is served
    asyncpg = None  # type: ignore[assignment]

from sqlalchemy import Insert

from . import statements
from .executor import COUNT, EACH, EACH_ONE, ONE, ROWS, Compiled, LockBusy, Op, Unit

T = TypeVar("T")

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
        self._catalogue = statements.compiled("postgresql")

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

    dialect = "postgresql"

    async def run(self, unit: Unit[T], *args: Any, write: bool = True, atomic: bool = False) -> T:
        """Run a unit of work on one pooled connection, in a transaction if ``atomic``.

        A unit of one statement needs none (a statement is atomic by itself) and
        saves the two round trips of ``BEGIN`` and ``COMMIT``. A read is retried
        once on a fresh connection when the pooled one had gone stale.
        """
        if write:
            return await self._transaction(self._unit, (unit, args, atomic), True)
        try:
            return await self._transaction(self._unit, (unit, args, atomic), False)
        except _CONNECTION_ERRORS:
            return await self._transaction(self._unit, (unit, args, atomic), False)

    @contextlib.asynccontextmanager
    async def paused(self) -> AsyncIterator[None]:
        """Nothing to pause: Postgres's connections wait for each other's row locks."""
        yield

    async def _unit(
        self, conn: asyncpg.Connection, unit: Unit[T], args: tuple[Any, ...], atomic: bool
    ) -> T:
        if not atomic:
            return await self._drive(conn, unit(*args))
        async with conn.transaction():
            return await self._drive(conn, unit(*args))

    async def _drive(self, conn: asyncpg.Connection, gen: Any) -> Any:
        """Run a unit's generator: each statement it yields awaited, its result (or a busy
        lock, as :class:`~tenet.store.executor.LockBusy`) sent back."""
        try:
            op = gen.send(None)
            while True:
                try:
                    result = await self._op(conn, op)
                except asyncpg.exceptions.LockNotAvailableError as exc:
                    op = gen.throw(LockBusy(str(exc)))
                else:
                    op = gen.send(result)
        except StopIteration as stop:
            return stop.value

    async def _op(self, conn: asyncpg.Connection, op: Op) -> Any:
        kind, index, params = op
        catalogue = self._catalogue
        if index >= len(catalogue):
            statements.compiled("postgresql")  # a statement added since (grows the same list)
        stmt: Compiled = catalogue[index]
        if kind == ONE:
            return stmt.row(await conn.fetchrow(stmt.sql, *stmt.args(params)))
        if kind == ROWS:
            found = await conn.fetch(stmt.sql, *stmt.args(params))
            return [stmt.row(r) for r in found] if stmt.columns else found
        if kind == COUNT:
            status = await conn.execute(stmt.sql, *stmt.args(params))
            return int(status.rsplit(" ", 1)[-1])
        if kind == EACH:
            bulk = _bulk_insert(index)
            if bulk is not None:
                sql, converters = bulk
                columns = list(zip(*params, strict=True)) if params else [()] * len(converters)
                await conn.execute(
                    sql,
                    *(
                        column if c is None else [c(v) for v in column]
                        for column, c in zip(columns, converters, strict=True)
                    ),
                )
            else:
                await conn.executemany(stmt.sql, [stmt.args(p) for p in params])
            return None
        if kind == EACH_ONE:
            found = await conn.fetchmany(stmt.sql, [stmt.args(p) for p in params])
            return [stmt.row(r) for r in found]
        raise ValueError(f"unknown op {kind!r}")

    async def close(self) -> None:
        if self._pool is not None:
            pool, self._pool = self._pool, None
            try:
                await asyncio.wait_for(pool.close(), 10)
            except (TimeoutError, Exception):
                pool.terminate()


@cache
def _bulk_insert(index: int) -> tuple[str, tuple[Any, ...]] | None:
    """A batch of one catalogue ``INSERT`` as one statement over arrays, or None.

    Postgres inserts a batch passed as one array per column
    (``INSERT ... SELECT * FROM unnest($1::varchar[], ...)``) in one statement,
    several times faster than a statement per row. Built from the catalogue's
    statement, with its declared parameters as the columns, in their order;
    each array's values take the converters of the row statement's parameters.
    """
    stmt = statements.CATALOGUE[index]
    if not isinstance(stmt.clause, Insert) or stmt.clause.select is not None:
        return None
    dialect = statements.dialect_of("postgresql")
    table = stmt.clause.table
    types = [dialect.type_compiler_instance.process(table.c[name].type) for name in stmt.params]
    arrays = ", ".join(f"${i}::{t}[]" for i, t in enumerate(types, 1))
    sql = f"INSERT INTO {table.name} ({', '.join(stmt.params)}) SELECT * FROM unnest({arrays})"
    row = statements.compiled("postgresql")[index]
    converters: list[Any] = [None] * len(stmt.params)
    for declared, convert in row.plan or ():
        converters[declared] = convert
    return sql, tuple(converters)
