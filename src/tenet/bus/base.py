"""The bus interface and the subscriber's bounded queue.

Events are routed by thread key, never broadcast: ``publish(thread_id, event)``
reaches only subscriptions attached to that thread. A subscription's queue is
bounded; when a slow subscriber lets it fill, the subscription is marked
overflowed and its reader is told (``SubscriptionOverflow``) instead of events
being dropped in silence. The reader then resumes from the store with ``after``.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from typing import Any, Protocol

from ..events import Event


class SubscriptionOverflow(Exception):
    """The subscriber fell too far behind; it must resume from the store."""


class SubscriptionClosed(Exception):
    """The subscription was closed while a reader waited on it."""


class Subscription:
    """A bounded queue of events from one or more threads, for one reader."""

    __slots__ = (
        "_closed",
        "_floors",
        "_items",
        "_maxsize",
        "_waiter",
        "overflowed",
        "resumed_by_bus",
    )

    def __init__(self, maxsize: int = 1000) -> None:
        self._items: deque[Event] = deque()
        self._maxsize = maxsize
        self._waiter: asyncio.Future[None] | None = None
        self._floors: dict[str, int] = {}
        self._closed = False
        self.overflowed = False
        #: True when the bus, not the reader, caused the resume (live delivery broke).
        self.resumed_by_bus = False

    def attach(self, thread_id: str, after: int = 0) -> None:
        """Accept events of ``thread_id`` with ``seq > after``."""
        self._floors[thread_id] = after

    def detach(self, thread_id: str) -> None:
        self._floors.pop(thread_id, None)

    @property
    def threads(self) -> list[str]:
        return list(self._floors)

    def deliver(self, event: Event) -> None:
        """Called by the bus; never blocks. An overflow marks the subscription, it drops nothing silently."""
        if self._closed or self.overflowed:
            return
        floor = self._floors.get(event.thread_id)
        if floor is None or event.seq <= floor:
            return
        if len(self._items) >= self._maxsize:
            self.overflowed = True
            self._items.clear()
        else:
            self._items.append(event)
        self._wake()

    def force_resume(self) -> None:
        """Live delivery may have missed events: make the reader resume from the store."""
        if not self._closed and not self.overflowed:
            self.overflowed = True
            self.resumed_by_bus = True
            self._items.clear()
            self._wake()

    def get_nowait(self) -> Event | None:
        if self.overflowed:
            raise SubscriptionOverflow()
        return self._items.popleft() if self._items else None

    async def get(self) -> Event:
        """The next event; raises ``SubscriptionOverflow`` once the queue has overflowed."""
        while True:
            if self.overflowed:
                raise SubscriptionOverflow()
            if self._items:
                return self._items.popleft()
            if self._closed:
                raise SubscriptionClosed()
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None

    def close(self) -> None:
        self._closed = True
        self._wake()

    def __len__(self) -> int:
        return len(self._items)

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)


class Bus(Protocol):
    """Routes stored events to the subscriptions of their thread."""

    def publish(self, thread_id: str, event: Event) -> None: ...

    def subscribe(
        self, thread_id: str, after: int = 0, *, into: Subscription | None = None
    ) -> Subscription: ...

    def unsubscribe(self, thread_id: str, subscription: Subscription) -> None: ...

    def signal(self, name: str, payload: str) -> None: ...

    def on_signal(self, name: str, handler: Callable[[str], Any]) -> None: ...

    async def start(self) -> None: ...

    async def close(self) -> None: ...
