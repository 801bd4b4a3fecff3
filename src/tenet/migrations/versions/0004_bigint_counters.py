"""Stored counters are 64-bit on every backend.

A thread's ``seq`` and a run's ``attempts`` were ``integer`` (32 bits) on
Postgres, while SQLite's ``INTEGER`` is 64 bits: a client's cursor between
2**31 and 2**63 then overflowed the Postgres driver. Both are ``bigint`` now, so
every backend accepts every cursor the protocol allows (0 to 2**63 - 1).
SQLite needs no change.

Revision ID: 0004_bigint_counters
Revises: 0003_external_identity
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004_bigint_counters"
down_revision = "0003_external_identity"
branch_labels = None
depends_on = None

#: (table, column) of every stored counter.
COUNTERS = (("events", "seq"), ("runs", "attempts"))


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        return  # INTEGER is already 64-bit
    for table, column in COUNTERS:
        op.alter_column(table, column, type_=sa.BigInteger(), existing_type=sa.Integer())


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        return
    for table, column in COUNTERS:
        op.alter_column(table, column, type_=sa.Integer(), existing_type=sa.BigInteger())
