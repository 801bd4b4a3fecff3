"""Events keyed by (thread_id, seq); only a partial run index besides.

The event id's primary key, the user index and the full run index each cost a
B-tree insert with a random key for every stored event, and together they were
most of the embedded store's work. Events are read by thread in ``seq`` order, by
their owner (always with the thread), and by run only in recovery, which looks
for a run's first and end events: a partial index on those is enough.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from tenet.store import migrate

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)
MARKS = "type IN ('agent_started', 'agent_completed', 'agent_error', 'run_cancelled')"
COLUMNS = "thread_id, seq, id, user_id, run_id, type, created_at, body"


def _events_table(name: str, *, keyed_by_thread: bool) -> None:
    key = (
        [sa.PrimaryKeyConstraint("thread_id", "seq")]
        if keyed_by_thread
        else [
            sa.PrimaryKeyConstraint("id"),
            sa.UniqueConstraint("thread_id", "seq", name="uq_events_thread_seq"),
        ]
    )
    op.create_table(
        name,
        sa.Column(
            "thread_id",
            sa.String(32),
            sa.ForeignKey("threads.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("seq", sa.Integer(), nullable=False, autoincrement=False),
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("user_id", sa.String(32), nullable=False),
        sa.Column("run_id", sa.String(32), nullable=False),
        sa.Column("type", sa.String(32), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        *key,
    )


def _copy_events(*, keyed_by_thread: bool) -> None:
    """SQLite cannot change a primary key in place: copy into a new table, in chunks of
    rowids, reporting how many events are copied (a big table takes minutes)."""
    _events_table("events_new", keyed_by_thread=keyed_by_thread)
    bind = op.get_bind()
    total = bind.execute(sa.text("SELECT count(*) FROM events")).scalar_one()
    last = bind.execute(sa.text("SELECT coalesce(max(rowid), 0) FROM events")).scalar_one()
    what = "copying the events table"
    migrate.report_progress(what, 0, total)
    done = start = 0
    while start < last:
        end = start + migrate.COPY_CHUNK_ROWS
        copied = bind.execute(
            sa.text(
                f"INSERT INTO events_new ({COLUMNS}) SELECT {COLUMNS} FROM events "
                "WHERE rowid > :start AND rowid <= :end"
            ),
            {"start": start, "end": end},
        )
        done += copied.rowcount
        start = end
        migrate.report_progress(what, done, total)
    op.drop_table("events")
    op.rename_table("events_new", "events")


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        op.drop_index("ix_events_user_id", "events")
        op.drop_index("ix_events_run", "events")
        _copy_events(keyed_by_thread=True)
    else:
        op.drop_index("ix_events_user_id", "events")
        op.drop_index("ix_events_run", "events")
        what = "re-keying the events table"
        total = op.get_bind().execute(sa.text("SELECT count(*) FROM events")).scalar_one()
        migrate.report_progress(what, 0, total)  # one statement: no finer progress to report
        op.drop_constraint("events_pkey", "events", type_="primary")
        op.drop_constraint("uq_events_thread_seq", "events", type_="unique")
        op.create_primary_key("events_pkey", "events", ["thread_id", "seq"])
        migrate.report_progress(what, total, total)
    op.create_index(
        "ix_events_run_marks",
        "events",
        ["run_id"],
        sqlite_where=sa.text(MARKS),
        postgresql_where=sa.text(MARKS),
    )


def downgrade() -> None:
    op.drop_index("ix_events_run_marks", "events")
    if op.get_bind().dialect.name == "sqlite":
        _copy_events(keyed_by_thread=False)
    else:
        op.drop_constraint("events_pkey", "events", type_="primary")
        op.create_primary_key("events_pkey", "events", ["id"])
        op.create_unique_constraint("uq_events_thread_seq", "events", ["thread_id", "seq"])
    op.create_index("ix_events_user_id", "events", ["user_id"])
    op.create_index("ix_events_run", "events", ["run_id"])
