"""AG-UI threads: the (user, client thread id) an AG-UI client sends -> a tenet thread.

Revision ID: 0005_ag_ui_threads
Revises: 0004_bigint_counters
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005_ag_ui_threads"
down_revision = "0004_bigint_counters"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "ag_ui_threads",
        sa.Column(
            "user_id",
            sa.String(32),
            sa.ForeignKey("users.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("client_thread_id", sa.String(255), nullable=False),
        sa.Column(
            "thread_id",
            sa.String(32),
            sa.ForeignKey("threads.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("user_id", "client_thread_id"),
    )


def downgrade() -> None:
    op.drop_table("ag_ui_threads")
