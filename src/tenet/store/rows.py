"""Rows of the store's statements as the ORM's objects (which the rest of tenet reads).

The executors hand back rows with times as aware ``datetime`` and JSON decoded,
on every driver (see :mod:`tenet.store.executor`); these only name the columns.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .statements import RUN_COLUMNS, from_db_json, to_db_json
from .tables import Run, Thread

__all__ = ["from_db_json", "run_from_row", "thread_from_row", "to_db_json"]

#: The ORM attribute of each column of ``RUN_COLUMNS`` (``metadata`` is ``meta``).
_RUN_ATTRIBUTES = tuple("meta" if c.name == "metadata" else c.name for c in RUN_COLUMNS)


def run_from_row(row: Sequence[Any]) -> Run:
    """A ``runs`` row (``RUN_COLUMNS`` first) as a detached ORM ``Run``."""
    run = Run(**dict(zip(_RUN_ATTRIBUTES, row, strict=False)))
    if run.meta is None:
        run.meta = {}
    return run


def thread_from_row(row: Sequence[Any]) -> Thread:
    """A row of ``statements.THREAD_OWNED`` as a detached ORM ``Thread``."""
    return Thread(id=row[0], user_id=row[1], meta=row[2] or {}, created_at=row[3])
