"""Runs that wait for a person: their requests, and the state they resume from.

``run_requests`` holds each approval or question a run asked (pending until
answered or timed out); ``runs.resume_state`` what a run in ``requires_action``
resumes from.

Revision ID: 0010_run_requests
Revises: 0009_thread_deleting
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010_run_requests"
down_revision = "0009_thread_deleting"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.add_column(sa.Column("resume_state", sa.JSON(), nullable=True))
    op.create_table(
        "run_requests",
        sa.Column("run_id", sa.String(32), primary_key=True),
        sa.Column("id", sa.String(200), primary_key=True),
        sa.Column("user_id", sa.String(32), nullable=False),
        sa.Column(
            "thread_id",
            sa.String(32),
            sa.ForeignKey("threads.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("execution_id", sa.String(32), nullable=False),
        sa.Column("agent_name", sa.String(200), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("round", sa.Integer(), nullable=False),
        sa.Column("body", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("answer", sa.JSON(), nullable=True),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_run_requests_expiry", "run_requests", ["status", "expires_at"])
    op.create_index("ix_run_requests_user", "run_requests", ["user_id", "status"])


def downgrade() -> None:
    op.drop_index("ix_run_requests_user", "run_requests")
    op.drop_index("ix_run_requests_expiry", "run_requests")
    op.drop_table("run_requests")
    with op.batch_alter_table("runs") as batch:
        batch.drop_column("resume_state")
