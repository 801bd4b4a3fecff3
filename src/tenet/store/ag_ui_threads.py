"""AG-UI thread ids: the (user, client ``threadId``) pair -> one tenet thread, made on first use.

An AG-UI client picks its own ``threadId``; it names a thread *of the caller*.
The pair is the table's key, so two users sending the same id get two threads,
and two requests (or processes) seeing a new pair at once both make a thread and
try to insert the pair: the key lets one win, the loser deletes the thread it
made and takes the winner's. A mapping whose thread was deleted (``DELETE
/v1/threads/{id}``) is replaced by a new thread on the next use. A thread made
for a run that is then refused goes again, with its mapping (:meth:`discard`).

Also here: the run lookups the AG-UI stream needs to resume (which run an event
belongs to and where that run's events start), read through the partial index
on a run's marks so they cost one index probe.
"""

from __future__ import annotations

import orjson
from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError

from ..clock import utc_now
from ..errors import NotFound
from .db import RUN_MARKED, Store
from .tables import AgUiThread, EventRow

#: The longest client ``threadId`` kept (the column's width).
MAX_CLIENT_THREAD_ID = 255


class AgUiThreads:
    """(user, client thread id) -> thread id, over one :class:`~tenet.store.db.Store`."""

    def __init__(self, store: Store) -> None:
        self._store = store

    async def thread_for(
        self, user_id: str, client_thread_id: str, *, limit: int | None = None
    ) -> str:
        """The user's thread for ``client_thread_id``, made now (within ``limit``) if new."""
        thread_id, _made = await self.open(user_id, client_thread_id, limit=limit)
        return thread_id

    async def open(
        self, user_id: str, client_thread_id: str, *, limit: int | None = None
    ) -> tuple[str, bool]:
        """:meth:`thread_for`, and whether the thread was made by this call."""
        for _ in range(3):
            found = await self._find(user_id, client_thread_id)
            if found is not None:
                try:
                    await self._store.get_thread(user_id, found)
                    return found, False
                except NotFound:  # the thread was deleted: this id starts a new one
                    await self._forget(user_id, client_thread_id, found)
                    continue
            thread = await self._store.create_thread(
                user_id, {"ag_ui_thread_id": client_thread_id}, limit=limit
            )
            try:
                async with self._store.write() as s:
                    s.add(
                        AgUiThread(
                            user_id=user_id,
                            client_thread_id=client_thread_id,
                            thread_id=thread.id,
                            created_at=utc_now(),
                        )
                    )
                return thread.id, True
            except IntegrityError:  # made meanwhile by another request: theirs wins
                await self._store.delete_thread(user_id, thread.id)
        raise RuntimeError("the AG-UI thread mapping kept changing")  # pragma: no cover

    async def discard(self, user_id: str, client_thread_id: str, thread_id: str) -> bool:
        """Remove a thread :meth:`open` made for a run then refused, and its mapping.

        Only while no run is on it: a request for the same client id may have found
        the mapping meanwhile and had its run accepted, and that thread stays (checked
        in the delete's transaction). True if it was removed.
        """
        if not await self._store.delete_thread(user_id, thread_id, unless_used=True):
            return False
        # A request finding the mapping before it goes finds no thread: it makes a new one.
        await self._forget(user_id, client_thread_id, thread_id)
        return True

    async def find(self, user_id: str, client_thread_id: str) -> str:
        """The user's thread for ``client_thread_id``; ``NotFound`` if there is none."""
        found = await self._find(user_id, client_thread_id)
        if found is None:
            raise NotFound()
        await self._store.get_thread(user_id, found)
        return found

    async def find_or_none(self, user_id: str, client_thread_id: str) -> str | None:
        """:meth:`find`, None instead of ``NotFound`` (nothing is made either way)."""
        try:
            return await self.find(user_id, client_thread_id)
        except NotFound:
            return None

    async def _find(self, user_id: str, client_thread_id: str) -> str | None:
        async with self._store.read() as s:
            return await s.scalar(
                select(AgUiThread.thread_id).where(
                    AgUiThread.user_id == user_id,
                    AgUiThread.client_thread_id == client_thread_id,
                )
            )

    async def _forget(self, user_id: str, client_thread_id: str, thread_id: str) -> None:
        async with self._store.write() as s:
            await s.execute(
                delete(AgUiThread).where(
                    AgUiThread.user_id == user_id,
                    AgUiThread.client_thread_id == client_thread_id,
                    AgUiThread.thread_id == thread_id,
                )
            )

    async def run_of_event(self, user_id: str, thread_id: str, seq: int) -> str | None:
        """The run the thread's event ``seq`` belongs to (None: no such event)."""
        bodies = await self._store.list_events(
            user_id, thread_id, after=seq - 1, limit=1, check_owner=False
        )
        if not bodies:
            return None
        event = orjson.loads(bodies[0])
        return str(event["run_id"]) if event.get("seq") == seq else None

    async def run_first_seq(self, user_id: str, thread_id: str, run_id: str) -> int | None:
        """The ``seq`` of the run's first event (always one of its marks), None if none yet."""
        async with self._store.read() as s:
            value = await s.scalar(
                select(func.min(EventRow.seq)).where(
                    EventRow.run_id == run_id,
                    RUN_MARKED,
                    EventRow.thread_id == thread_id,
                    EventRow.user_id == user_id,
                )
            )
        return int(value) if value is not None else None
