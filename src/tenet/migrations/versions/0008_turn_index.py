"""A partial index on the events a thread's conversation is built from.

A run's history is read newest first from its thread's ``agent_started``,
``tool_executing``, ``tool_completed`` and end events; without this index the
read also walks every streamed ``message_delta`` and ``agent_thinking`` row.
Only those few events per run pay for an index entry.

Revision ID: 0008_turn_index
Revises: 0007_usage
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008_turn_index"
down_revision = "0007_usage"
branch_labels = None
depends_on = None

TURN_MARKS = (
    "type IN ('agent_started', 'tool_executing', 'tool_completed', "
    "'agent_completed', 'agent_error', 'run_cancelled')"
)


def upgrade() -> None:
    op.create_index(
        "ix_events_turns",
        "events",
        ["thread_id", "seq"],
        sqlite_where=sa.text(TURN_MARKS),
        postgresql_where=sa.text(TURN_MARKS),
    )


def downgrade() -> None:
    op.drop_index("ix_events_turns", "events")
