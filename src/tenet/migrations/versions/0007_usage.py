"""Token usage on runs: ``input_tokens``, ``output_tokens``, ``model_calls``.

Each model call adds to its run's counters, so a user's usage (and quota) is a
sum over their runs in the store, whichever process ran them. Existing runs
start at zero. The counters are 64-bit (``bigint`` on Postgres; SQLite's
``INTEGER`` already is), as the other stored counters since 0004.

Revision ID: 0007_usage
Revises: 0006_user_secrets
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007_usage"
down_revision = "0006_user_secrets"
branch_labels = None
depends_on = None

COLUMNS = ("input_tokens", "output_tokens", "model_calls")


#: 64 bits on Postgres, INTEGER (already 64-bit) on SQLite, as ``tables.Counter``.
COUNTER = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        for name in COLUMNS:
            batch.add_column(sa.Column(name, COUNTER, nullable=False, server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        for name in reversed(COLUMNS):
            batch.drop_column(name)
