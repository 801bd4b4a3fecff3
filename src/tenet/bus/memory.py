"""The in-process bus: a dict from thread id to the subscriptions attached to it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..events import Event
from .base import Subscription


class MemoryBus:
    """Single-process routing by thread id. Holds no event; only who listens to what."""

    def __init__(self, *, queue_size: int = 1000) -> None:
        self._subs: dict[str, set[Subscription]] = {}
        self._queue_size = queue_size
        self._handlers: dict[str, list[Callable[[str], Any]]] = {}
        self.published = 0

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        self._subs.clear()

    def publish(self, thread_id: str, event: Event) -> None:
        if event.thread_id != thread_id:
            raise ValueError("an event is published on its own thread only")
        self.published += 1
        for sub in tuple(self._subs.get(thread_id, ())):
            sub.deliver(event)

    def subscribe(
        self, thread_id: str, after: int = 0, *, into: Subscription | None = None
    ) -> Subscription:
        sub = into if into is not None else Subscription(self._queue_size)
        sub.attach(thread_id, after)
        self._subs.setdefault(thread_id, set()).add(sub)
        return sub

    def unsubscribe(self, thread_id: str, subscription: Subscription) -> None:
        subscription.detach(thread_id)
        subs = self._subs.get(thread_id)
        if subs is not None:
            subs.discard(subscription)
            if not subs:
                del self._subs[thread_id]

    def resume_all(self) -> None:
        """Make every subscriber resume from the store (live delivery may have missed events)."""
        for sub in {s for subs in self._subs.values() for s in subs}:
            sub.force_resume()

    def signal(self, name: str, payload: str) -> None:
        """Tell this process ``payload`` on ``name`` (one process: no one else to tell)."""
        for handler in self._handlers.get(name, ()):
            handler(payload)

    def on_signal(self, name: str, handler: Callable[[str], Any]) -> None:
        self._handlers.setdefault(name, []).append(handler)

    def has_subscribers(self, thread_id: str) -> bool:
        return thread_id in self._subs

    @property
    def subscribed_threads(self) -> int:
        return len(self._subs)
