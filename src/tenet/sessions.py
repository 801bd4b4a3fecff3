"""Per-user scope, made on demand and evicted when idle.

A :class:`UserSession` holds what tenet keeps in memory for one user: the
engine's scheduling state (runs running and queued, threads ready to run), the
user's open connections, and per-user agent state. Nothing in it is shared with
another user. Creation is synchronous, so concurrent first calls for one user in
the event loop always get the same session; a sweeper evicts sessions with no
runs and no connections after ``TENET_SESSION_IDLE_S``, so memory returns to its
baseline after users leave.

Per-user resources (a user's MCP sessions and stdio processes, their decrypted
secrets) live in :attr:`UserSession.resources` and are closed with the session:
when it is evicted, and when the process shuts down.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Iterator
from typing import Any

log = logging.getLogger("tenet.sessions")


class UserSession:
    """Everything tenet holds in memory for one user.

    Slotted, and what only some users need (the ready-threads queue, SSE streams,
    agent state, resources) is made on first use: a user who is only connected
    costs the object and the set of their connections.
    """

    __slots__ = (
        "_ready_threads",
        "_resources",
        "_state",
        "_streams",
        "bucket",
        "bucket_at",
        "connections",
        "in_ready_users",
        "last_active",
        "queued",
        "running",
        "user_id",
    )

    def __init__(self, user_id: str) -> None:
        self.user_id = user_id
        self.running = 0
        self.queued = 0
        self.in_ready_users = False
        #: Open WebSocket connections.
        self.connections: set[Any] = set()
        self.last_active = time.monotonic()
        #: The user's request-rate token bucket (see :meth:`take`): tokens left, last refill.
        self.bucket: float | None = None
        self.bucket_at = 0.0
        self._ready_threads: deque[str] | None = None
        self._streams: set[Any] | None = None
        self._state: dict[str, Any] | None = None
        self._resources: dict[str, Any] | None = None

    @property
    def ready_threads(self) -> deque[str]:
        """The user's threads with a run ready to start, oldest first (the engine's)."""
        if self._ready_threads is None:
            self._ready_threads = deque()
        return self._ready_threads

    @property
    def streams(self) -> set[Any]:
        """Open SSE streams (counted apart from WebSockets: ``TENET_SSE_MAX_STREAMS``)."""
        if self._streams is None:
            self._streams = set()
        return self._streams

    @property
    def state(self) -> dict[str, Any]:
        """Per-user agent state."""
        if self._state is None:
            self._state = {}
        return self._state

    @property
    def resources(self) -> dict[str, Any]:
        """Per-user resources by name; those with an ``aclose()`` are closed with the session."""
        if self._resources is None:
            self._resources = {}
        return self._resources

    async def aclose(self) -> None:
        """Close the session's resources (each one's failure is logged, not raised)."""
        resources = list(self._resources.values()) if self._resources else []
        self._resources = None
        for resource in resources:
            aclose = getattr(resource, "aclose", None)
            if aclose is None:
                continue
            try:
                await aclose()
            except Exception:
                log.exception("closing a per-user resource failed")

    @property
    def idle(self) -> bool:
        return self.running == 0 and self.queued == 0 and not self.connections and not self._streams

    def touch(self) -> None:
        self.last_active = time.monotonic()

    def take(
        self, rate: float, burst: int, now: float | None = None, *, cost: float = 1.0
    ) -> float | None:
        """Spend ``cost`` requests (one, or more for a large one) from the user's token bucket.

        Returns None when the request may go on, or the seconds until enough tokens
        are back when the bucket is short. The bucket holds ``burst`` tokens and refills
        at ``rate`` per second; ``rate`` 0 means no limit. It lives in the session,
        so it goes when the session is evicted (a returning user starts full).
        """
        if rate <= 0:
            return None
        cost = min(cost, float(burst))
        now = time.monotonic() if now is None else now
        if self.bucket is None:
            self.bucket = float(burst)
        else:
            self.bucket = min(float(burst), self.bucket + (now - self.bucket_at) * rate)
        self.bucket_at = now
        if self.bucket >= cost:
            self.bucket -= cost
            return None
        return (cost - self.bucket) / rate


class UserSessions:
    """The map from user id to :class:`UserSession`, with idle eviction."""

    def __init__(self, *, idle_s: float = 300.0) -> None:
        self._sessions: dict[str, UserSession] = {}
        self._idle_s = idle_s
        self._sweeper: asyncio.Task[None] | None = None
        self.created = 0
        self.evicted = 0
        self._closing: set[asyncio.Task[None]] = set()

    def get(self, user_id: str) -> UserSession:
        """The user's session, made now if there is none (synchronous: no race)."""
        session = self._sessions.get(user_id)
        if session is None:
            session = self._sessions[user_id] = UserSession(user_id)
            self.created += 1
        session.touch()
        return session

    def peek(self, user_id: str) -> UserSession | None:
        return self._sessions.get(user_id)

    def __len__(self) -> int:
        return len(self._sessions)

    def __iter__(self) -> Iterator[UserSession]:
        return iter(list(self._sessions.values()))

    def evict_idle(self, now: float | None = None) -> int:
        """Drop sessions idle for longer than the limit; returns how many went."""
        now = time.monotonic() if now is None else now
        gone = [
            uid
            for uid, s in self._sessions.items()
            if s.idle and now - s.last_active >= self._idle_s
        ]
        for uid in gone:
            session = self._sessions.pop(uid)
            if session._resources:
                task = asyncio.ensure_future(session.aclose())
                self._closing.add(task)
                task.add_done_callback(self._closing.discard)
        self.evicted += len(gone)
        return len(gone)

    def start(self) -> None:
        if self._sweeper is None:
            self._sweeper = asyncio.create_task(self._sweep(), name="tenet-session-sweeper")

    async def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
            self._sweeper = None
        for session in list(self._sessions.values()):
            await session.aclose()
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)

    async def _sweep(self) -> None:
        interval = min(max(self._idle_s / 4, 0.05), 30.0)
        while True:
            await asyncio.sleep(interval)
            self.evict_idle()
