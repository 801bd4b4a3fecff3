"""A run's requests found by the run: an index on ``run_requests (run_id, user_id, status)``.

Answering a request, resuming its run, listing what a run waits on and closing
its requests all look up the requests of one run (by its id and owner, often
with a status). Without this index SQLite searched ``ix_run_requests_user``
(``user_id, status``) for them: every pending request of the user, so a user with
thousands of waiting runs paid for all of them on each answer.

Revision ID: 0011_run_requests_by_run
Revises: 0010_run_requests
Create Date: 2026-11-30
"""

from __future__ import annotations

from alembic import op

revision = "0011_run_requests_by_run"
down_revision = "0010_run_requests"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_run_requests_run", "run_requests", ["run_id", "user_id", "status"])


def downgrade() -> None:
    op.drop_index("ix_run_requests_run", "run_requests")
