"""The turn index covers the history read: a thread's turn marks come from it alone.

``ix_events_turns`` (0008) held ``(thread_id, seq)`` of the events a conversation is
built from; a history read still looked up each of those rows in the table for its
``user_id``, ``run_id`` and ``type``. ``ix_events_turn_marks`` holds those columns
too, with the same predicate, so that read never touches the table (the text of the
few events a reader has not built yet is read by a second, narrow statement).
Building it reads every turn event once; the old index is dropped after it.

Revision ID: 0012_turn_marks_index
Revises: 0011_run_requests_by_run
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012_turn_marks_index"
down_revision = "0011_run_requests_by_run"
branch_labels = None
depends_on = None

TURN_MARKS = (
    "type IN ('agent_started', 'tool_executing', 'tool_completed', "
    "'agent_completed', 'agent_error', 'run_cancelled')"
)


def upgrade() -> None:
    op.create_index(
        "ix_events_turn_marks",
        "events",
        ["thread_id", "seq", "user_id", "run_id", "type"],
        sqlite_where=sa.text(TURN_MARKS),
        postgresql_where=sa.text(TURN_MARKS),
    )
    op.drop_index("ix_events_turns", "events")


def downgrade() -> None:
    op.create_index(
        "ix_events_turns",
        "events",
        ["thread_id", "seq"],
        sqlite_where=sa.text(TURN_MARKS),
        postgresql_where=sa.text(TURN_MARKS),
    )
    op.drop_index("ix_events_turn_marks", "events")
