"""One user's count-then-insert, made atomic across processes.

A per-user cap (tokens, threads) is a count and an insert. Two processes doing
both at once for one user each see the old count, and both insert: 30
concurrent token creations with a cap of 3 once stored 16. Locking the user's
row first (``SELECT ... FOR UPDATE``, Postgres) makes the second transaction
wait until the first commits, so it counts what the first inserted; other
users' rows, and so other users, never wait. On SQLite the statement has no
lock clause and needs none: one writer at a time holds the database.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from .tables import User


async def lock_user(session: AsyncSession, user_id: str) -> None:
    """Hold ``user_id``'s row until the session's transaction ends (call inside one)."""
    await session.execute(select(User.id).where(User.id == user_id).with_for_update())
