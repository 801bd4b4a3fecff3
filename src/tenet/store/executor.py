"""How the store's units of work reach a database: one executor per driver.

A store method is written once, as a *unit*: a generator that yields
:class:`Op` values (a statement of :mod:`tenet.store.statements` and its
parameters) and receives each one's result::

    def get_thread(user_id, thread_id):
        row = yield one(q.THREAD_OWNED, user_id, thread_id)
        return row

An :class:`Executor` runs a unit in a transaction on its driver: on SQLite
(:class:`~tenet.store.sqlite_direct.DirectSqlite`) synchronously, on the event
loop, inside the group-committed transaction of its loop turn; on Postgres
(:class:`~tenet.store.postgres_direct.DirectPostgres`) with ``await`` on one
pooled ``asyncpg`` connection. The unit does not know which: each statement is
compiled once per dialect at start-up (:class:`Compiled`) and both executors
turn the same parameters into their driver's formats (times, JSON) through the
converters that compilation chose from the columns' types.

Parameters are positional, in the order the statement declares them
(:attr:`~tenet.store.statements.Statement.params`); results are tuples (or
``asyncpg`` records) in the statement's column order, times as aware
``datetime`` and JSON columns decoded on either driver.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

T = TypeVar("T")

#: The ways a statement is run, and what its unit receives back.
ONE = "one"  # the first row (converted) or None
ROWS = "rows"  # every row (converted)
COUNT = "count"  # the number of rows written
EACH = "each"  # one statement per parameter tuple (a batch of writes); None
EACH_ONE = "each_one"  # one statement per parameter tuple; the first row of each


class LockBusy(Exception):
    """A lock the unit asked for was not free in time (raised into the unit)."""


@dataclass(frozen=True, slots=True)
class Op:
    """One statement to run: how, which (its catalogue index) and with what."""

    kind: str
    index: int
    params: Any


def one(stmt: Any, *params: Any) -> Op:
    return Op(ONE, stmt.index, params)


def rows(stmt: Any, *params: Any) -> Op:
    return Op(ROWS, stmt.index, params)


def count(stmt: Any, *params: Any) -> Op:
    return Op(COUNT, stmt.index, params)


def each(stmt: Any, batch: Sequence[tuple[Any, ...]]) -> Op:
    return Op(EACH, stmt.index, batch)


def each_one(stmt: Any, batch: Sequence[tuple[Any, ...]]) -> Op:
    return Op(EACH_ONE, stmt.index, batch)


#: A unit of work: a generator of :class:`Op` that receives each op's result.
Unit = Callable[..., Generator[Op, Any, T]]

Convert = Callable[[Any], Any]


@dataclass(frozen=True, slots=True)
class Compiled:
    """A statement compiled for one dialect.

    ``sql`` is the text the driver takes (``?`` for ``sqlite3``, ``$n`` for
    ``asyncpg``); ``plan`` says, for each of the driver's positional parameters,
    which declared parameter it takes and how to convert it (None: as is), or is
    None when the declared parameters need neither reordering nor converting.
    ``columns`` lists the result columns to convert, as (index, converter).
    """

    name: str
    sql: str
    plan: tuple[tuple[int, Convert | None], ...] | None
    columns: tuple[tuple[int, Convert], ...]

    def args(self, params: Sequence[Any]) -> Sequence[Any]:
        """The driver's positional parameters of declared ``params``."""
        plan = self.plan
        if plan is None:
            return params
        return [params[i] if c is None else c(params[i]) for i, c in plan]

    def row(self, row: Any) -> Any:
        """A result row with its times and JSON converted (the row itself if none are)."""
        if row is None or not self.columns:
            return row
        values = list(row)
        for i, convert in self.columns:
            values[i] = convert(values[i])
        return tuple(values)


def drive(gen: Generator[Op, Any, T], run_op: Callable[[Op], Any]) -> T:
    """Run a unit synchronously: each op through ``run_op``, its result (or error) sent back."""
    try:
        op = gen.send(None)
        while True:
            try:
                result = run_op(op)
            except LockBusy as exc:
                op = gen.throw(exc)
            else:
                op = gen.send(result)
    except StopIteration as stop:
        return stop.value  # type: ignore[no-any-return]


class Executor(Protocol):
    """Runs units of work on one driver; see the module docstring.

    ``write``: the unit writes (SQLite starts its transaction as a writer).
    ``atomic``: the unit's statements must commit together (SQLite's are always
    in one transaction; ``asyncpg`` opens one only when asked, since a single
    statement is atomic by itself and a transaction costs two round trips).
    """

    dialect: str

    async def run(
        self, unit: Unit[T], *args: Any, write: bool = True, atomic: bool = False
    ) -> T: ...

    def paused(self) -> AbstractAsyncContextManager[None]:
        """No transaction of this executor runs during the block (while the ORM writes)."""
        ...

    async def close(self) -> None: ...
