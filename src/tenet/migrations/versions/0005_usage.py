"""Token usage on runs: ``input_tokens``, ``output_tokens``, ``model_calls``.

Each model call adds to its run's counters, so a user's usage (and quota) is a
sum over their runs in the store, whichever process ran them. Existing runs
start at zero.

Revision ID: 0005_usage
Revises: 0003_external_identity
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005_usage"
down_revision = "0003_external_identity"
branch_labels = None
depends_on = None

COLUMNS = ("input_tokens", "output_tokens", "model_calls")


def upgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        for name in COLUMNS:
            batch.add_column(sa.Column(name, sa.Integer(), nullable=False, server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        for name in reversed(COLUMNS):
            batch.drop_column(name)
