"""A user's notes, as a tool sees them: already bound to the user, so no id is passed."""

from __future__ import annotations

from ..text import repair
from .db import Store


class UserNotes:
    """The notes of the user of one :class:`~tenet.context.RunContext`."""

    __slots__ = ("_store", "_user_id")

    def __init__(self, store: Store, user_id: str) -> None:
        self._store = store
        self._user_id = user_id

    async def add(self, text: str) -> str:
        note = await self._store.add_note(self._user_id, repair(text))
        return note.id

    async def forget(self) -> int:
        """Delete every note of the user; returns how many there were."""
        return await self._store.delete_notes(self._user_id)

    async def search(self, query: str | None = None, limit: int = 20) -> list[str]:
        return [
            n.text for n in await self._store.list_notes(self._user_id, query=query, limit=limit)
        ]
