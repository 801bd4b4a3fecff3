"""The events' partial indexes select their types with ``=``s joined by ``OR``, not ``IN``.

SQLite evaluates a partial index's ``type IN (...)`` by building a temporary
table of the list's values for every row inserted: with both indexes, twice per
event, more than half of an event's insert. The same predicate written as a
chain of ``type = '...' OR ...`` costs a few comparisons per row. The indexes
hold the same rows as before; the queries that use them repeat the new
predicate (``tenet.store.tables``).

Revision ID: 0013_mark_predicates
Revises: 0012_turn_marks_index
Create Date: 2026-11-30
"""

from __future__ import annotations

from collections.abc import Callable

import sqlalchemy as sa
from alembic import op

revision = "0013_mark_predicates"
down_revision = "0012_turn_marks_index"
branch_labels = None
depends_on = None

RUN_MARK_TYPES = ("agent_started", "agent_completed", "agent_error", "run_cancelled")
TURN_MARK_TYPES = (
    "agent_started",
    "tool_executing",
    "tool_completed",
    "agent_completed",
    "agent_error",
    "run_cancelled",
)


def _or_chain(types: tuple[str, ...]) -> str:
    return "(" + " OR ".join(f"type = '{t}'" for t in types) + ")"


def _in_list(types: tuple[str, ...]) -> str:
    return "type IN (" + ", ".join(f"'{t}'" for t in types) + ")"


def _recreate(predicate: Callable[[tuple[str, ...]], str]) -> None:
    op.drop_index("ix_events_run_marks", "events")
    op.drop_index("ix_events_turn_marks", "events")
    runs = sa.text(predicate(RUN_MARK_TYPES))
    turns = sa.text(predicate(TURN_MARK_TYPES))
    op.create_index(
        "ix_events_run_marks", "events", ["run_id"], sqlite_where=runs, postgresql_where=runs
    )
    op.create_index(
        "ix_events_turn_marks",
        "events",
        ["thread_id", "seq", "user_id", "run_id", "type"],
        sqlite_where=turns,
        postgresql_where=turns,
    )


def upgrade() -> None:
    _recreate(_or_chain)


def downgrade() -> None:
    _recreate(_in_list)
