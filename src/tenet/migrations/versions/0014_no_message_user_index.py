"""Drop ``ix_messages_user_id``: no query reads messages by user alone.

Messages are read and deleted by thread (``ix_messages_thread``), always with
the owner's ``user_id`` beside the thread id; a user's deletion reaches them
through the thread's cascade. The index cost a B-tree insert for each of a
run's two messages, and its pages were written at every commit.

Revision ID: 0014_no_message_user_index
Revises: 0013_mark_predicates
Create Date: 2026-11-30
"""

from __future__ import annotations

from alembic import op

revision = "0014_no_message_user_index"
down_revision = "0013_mark_predicates"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_index("ix_messages_user_id", "messages")


def downgrade() -> None:
    op.create_index("ix_messages_user_id", "messages", ["user_id"])
