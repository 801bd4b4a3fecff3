"""Exactly-once, in-order delivery of a thread's events: stored replay, then live.

A reader attaches to the bus *before* it reads the store, so nothing published
in between is missed; the cursor then drops what it has already sent (a
duplicate) and fetches from the store whatever live delivery skipped (a gap).
Every event is stored before it is published, so the store always has it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from ..events import Event
from ..store.db import Store
from .base import Bus, SubscriptionOverflow

PAGE = 500
#: Events of a replay handed on between two returns to the event loop.
YIELD_EVERY = 50


class ThreadCursor:
    """Where one reader is in one thread: the last ``seq`` it was given.

    A cursor always starts after a ``seq`` (0: the whole thread). It never starts "at a
    run's first event": events of the thread's other runs can be stored between a
    run's acceptance and its first event (a run queued behind it and cancelled
    first, an earlier run's end), and a reader that skipped them would lose them.
    """

    __slots__ = ("last", "store", "thread_id", "user_id")

    def __init__(self, store: Store, user_id: str, thread_id: str, after: int) -> None:
        self.store = store
        self.user_id = user_id
        self.thread_id = thread_id
        self.last = after

    async def replay(self) -> AsyncIterator[str]:
        """Every stored event after the cursor, in order (paged)."""
        while True:
            bodies = await self.store.list_events(
                self.user_id, self.thread_id, after=self.last, limit=PAGE, check_owner=False
            )
            for i, body in enumerate(bodies, 1):
                self.last += 1
                yield body
                if i % YIELD_EVERY == 0:
                    # A page may hold megabytes (events of 32,000-character inputs): let
                    # other users' work run between slices of it.
                    await asyncio.sleep(0)
            if len(bodies) < PAGE:
                return

    async def accept(self, event: Event) -> list[str]:
        """What to send for one live event: nothing (a duplicate), it, or a backfill then it."""
        if event.seq <= self.last:
            return []
        out: list[str] = []
        if event.seq > self.last + 1:
            out = await self.store.list_events(
                self.user_id,
                self.thread_id,
                after=self.last,
                limit=event.seq - self.last - 1,
                check_owner=False,
            )
        out.append(event.json)
        self.last = event.seq
        return out


async def follow(
    store: Store, bus: Bus, user_id: str, thread_id: str, *, after: int = 0
) -> AsyncIterator[str]:
    """Every event of a (caller-owned) thread after ``after``, then live ones, forever.

    On overflow the subscription is replaced and the gap replayed from the store.
    """
    cursor = ThreadCursor(store, user_id, thread_id, after)
    sub = bus.subscribe(thread_id, after)
    try:
        async for body in cursor.replay():
            yield body
        while True:
            try:
                event = await sub.get()
            except SubscriptionOverflow:
                bus.unsubscribe(thread_id, sub)
                sub = bus.subscribe(thread_id, cursor.last)
                async for body in cursor.replay():
                    yield body
                continue
            for body in await cursor.accept(event):
                yield body
    finally:
        bus.unsubscribe(thread_id, sub)
        sub.close()
