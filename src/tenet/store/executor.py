"""How the store's units of work reach a database: one executor per driver.

A store method is written once, as a *unit*: a generator that yields
:data:`Op` values (a statement of :mod:`tenet.store.statements` and its
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


#: One statement to run: (how, its catalogue index, its parameters). A plain tuple:
#: the hot path makes several per run.
Op = tuple[str, int, Any]


def one(stmt: Any, *params: Any) -> Op:
    return (ONE, stmt.index, params)


def rows(stmt: Any, *params: Any) -> Op:
    return (ROWS, stmt.index, params)


def count(stmt: Any, *params: Any) -> Op:
    return (COUNT, stmt.index, params)


def each(stmt: Any, batch: Sequence[tuple[Any, ...]]) -> Op:
    return (EACH, stmt.index, batch)


def each_one(stmt: Any, batch: Sequence[tuple[Any, ...]]) -> Op:
    return (EACH_ONE, stmt.index, batch)


#: A unit of work: a generator of :data:`Op` that receives each op's result.
Unit = Callable[..., Generator[Op, Any, T]]

Convert = Callable[[Any], Any]


def _same(value: Any) -> Any:
    return value


def _tuple_maker(parts: list[str], converters: dict[str, Convert], arg: str) -> Callable[..., Any]:
    """A function of ``arg`` that returns the tuple of ``parts`` (expressions of it).

    Generated once per statement, as :mod:`dataclasses` generates methods: a
    statement's parameters and results are converted by straight-line code, about
    as fast as the hand-written tuples it replaces (a loop over a plan cost a few
    microseconds per call). The expressions hold only indexes and converter names.
    """
    body = f"lambda {arg}: ({', '.join(parts)},)" if parts else f"lambda {arg}: ()"
    return eval(body, dict(converters))  # type: ignore[no-any-return]


class Compiled:
    """A statement compiled for one dialect.

    ``sql`` is the text the driver takes (``?`` for ``sqlite3``, ``$n`` for
    ``asyncpg``). ``plan`` says, for each of the driver's positional parameters,
    which declared parameter it takes and how to convert it (None: as is), or is
    None when the declared parameters need neither reordering nor converting.
    ``columns`` lists the result columns to convert, as (index, converter), of
    ``width`` columns. :meth:`args` and :meth:`row` apply them.
    """

    __slots__ = ("args", "columns", "name", "plan", "returns", "row", "sql", "then")

    def __init__(
        self,
        name: str,
        sql: str,
        plan: tuple[tuple[int, Convert | None], ...] | None,
        columns: tuple[tuple[int, Convert], ...],
        width: int,
    ) -> None:
        self.name = name
        self.sql = sql
        #: A chained statement's second write, where it is a statement of its own: run
        #: for each row this one returns (``returns``), with the declared parameters and
        #: that row, or else once if this one wrote a row, with the declared parameters.
        self.then: Compiled | None = None
        self.returns = False
        self.plan = plan
        self.columns = columns
        #: The driver's positional parameters of the declared ``params`` (a sequence).
        self.args: Callable[[Sequence[Any]], Sequence[Any]] = _same
        if plan is not None:
            converters = {f"c{j}": c for j, (_, c) in enumerate(plan) if c is not None}
            parts = [f"p[{i}]" if c is None else f"c{j}(p[{i}])" for j, (i, c) in enumerate(plan)]
            self.args = _tuple_maker(parts, converters, "p")
        #: A result row (or None) with its times and JSON converted.
        self.row: Callable[[Any], Any] = _same
        if columns:
            converting = dict(columns)
            converters = {f"c{i}": c for i, c in columns}
            parts = [f"c{i}(r[{i}])" if i in converting else f"r[{i}]" for i in range(width)]
            convert_row = _tuple_maker(parts, converters, "r")
            self.row = lambda row: None if row is None else convert_row(row)


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
