"""A thread's delete mark: ``threads.deleting_until``.

While a thread is being deleted (its runs cancelled and waited for), no process
of a cluster may store a new run of it. The delete sets this time in the
transaction that starts it; the statement that stores a run refuses a thread
whose mark has not passed. A delete that gives up clears it; a deleter that
crashed leaves a mark that simply expires. NULL: not being deleted.

Revision ID: 0009_thread_deleting
Revises: 0008_turn_index
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009_thread_deleting"
down_revision = "0008_turn_index"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("threads") as batch:
        batch.add_column(sa.Column("deleting_until", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("threads") as batch:
        batch.drop_column("deleting_until")
