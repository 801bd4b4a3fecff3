"""Users who sign in with a JWT: found by (issuer, subject), made on first use.

The mapping is the only way from a JWT to a user. It is never looked up by name,
so a user made with ``POST /v1/users`` under the same name, or the same subject
from another issuer, is always somebody else. The user row gets a unique name of
tenet's own (its id); the provider's display name is kept in the mapping and
updated when a token brings a new one.

Two requests (or two processes) seeing a new subject at once both try to insert
it; the primary key lets one win and the other reads the winner's row, so one
subject is always one user.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError

from ..clock import utc_now
from ..ids import new_id
from .db import Store
from .tables import ExternalIdentity, User


@dataclass(frozen=True, slots=True)
class ExternalUser:
    """The user an (issuer, subject) signs in, with its current display name."""

    user_id: str
    name: str


class ExternalIdentities:
    """(issuer, subject) -> user, over one :class:`~tenet.store.db.Store`."""

    def __init__(self, store: Store) -> None:
        self._store = store

    async def user_for(self, issuer: str, subject: str, name: str) -> ExternalUser:
        """The user of ``(issuer, subject)``, made now if new; its name set to ``name``."""
        found = await self._find(issuer, subject)
        if found is None:
            try:
                return await self._create(issuer, subject, name)
            except IntegrityError:  # made meanwhile by another request or process
                found = await self._find(issuer, subject)
                if found is None:
                    raise
        if found.name != name:
            async with self._store.write() as s:
                await s.execute(
                    update(ExternalIdentity)
                    .where(ExternalIdentity.issuer == issuer, ExternalIdentity.subject == subject)
                    .values(name=name)
                )
            found = ExternalUser(found.user_id, name)
        return found

    async def _find(self, issuer: str, subject: str) -> ExternalUser | None:
        async with self._store.read() as s:
            row = (
                await s.execute(
                    select(ExternalIdentity.user_id, ExternalIdentity.name).where(
                        ExternalIdentity.issuer == issuer, ExternalIdentity.subject == subject
                    )
                )
            ).one_or_none()
        return ExternalUser(row[0], row[1]) if row is not None else None

    async def _create(self, issuer: str, subject: str, name: str) -> ExternalUser:
        now = utc_now()
        user_id = new_id("usr")
        async with self._store.write() as s:
            s.add(User(id=user_id, name=user_id, created_at=now))
            await s.flush()
            s.add(
                ExternalIdentity(
                    issuer=issuer, subject=subject, user_id=user_id, name=name, created_at=now
                )
            )
        return ExternalUser(user_id, name)
