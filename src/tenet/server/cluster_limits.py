"""Per-user limits that hold across every process of a cluster, kept in Redis.

In one process a user's request rate (a token bucket) and open sockets and
streams are counted in the user's session. In a cluster each process would
count only its own share: two processes let a user through twice the burst and
twice the connections. With Redis configured, the counts live there instead,
under the deployment's prefix, so the limits are per user across the cluster:

* the request rate is one token bucket per user, refilled and spent by one
  Lua script on Redis's clock (processes' clocks don't matter);
* each open WebSocket or SSE stream is a lease in a per-user sorted set (member:
  the connection id, score: when the lease expires). A process renews its
  leases every :data:`LEASE_S` / 3 seconds, so the connections of a process that
  died stop counting within :data:`LEASE_S`.

Redis is not the store: when it cannot be reached, each process falls back to
its own counts (the limits are then per process until Redis is back) rather
than refusing every user.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from ..sessions import UserSession

log = logging.getLogger("tenet.server.limits")

#: How long a connection's lease lasts without renewal (seconds).
LEASE_S = 30.0
#: Each started unit of this many bytes of a request or frame costs one more request.
REQUEST_UNIT_BYTES = 4096

_BUCKET = """
local rate, burst, cost = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local b = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens, at = tonumber(b[1]), tonumber(b[2])
if tokens == nil then tokens, at = burst, now end
tokens = math.min(burst, tokens + math.max(0, now - at) * rate)
local wait = 0
if tokens >= cost then tokens = tokens - cost else wait = (cost - tokens) / rate end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', tostring(now))
redis.call('EXPIRE', KEYS[1], math.ceil(burst / rate) + 1)
return tostring(wait)
"""

_ACQUIRE = """
local limit, lease, member = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3]
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) >= limit then return 0 end
redis.call('ZADD', KEYS[1], now + lease, member)
redis.call('EXPIRE', KEYS[1], math.ceil(lease * 2))
return 1
"""


class ClusterLimits:
    """The cluster's per-user rate and connection counts, in Redis (see the module doc)."""

    def __init__(self, client: Any, prefix: str) -> None:
        self._client = client
        self._prefix = prefix + "limit:"
        self._bucket = client.register_script(_BUCKET)
        self._acquire = client.register_script(_ACQUIRE)
        #: Leases this process holds: sorted-set key -> connection ids.
        self._held: dict[str, set[str]] = {}
        self._renewer: asyncio.Task[None] | None = None
        self._warned_at = 0.0

    def _key(self, kind: str, user_id: str) -> str:
        return f"{self._prefix}{kind}:{user_id}"

    def _degraded(self, exc: BaseException) -> None:
        now = time.monotonic()
        if now - self._warned_at > 60:
            self._warned_at = now
            log.warning("redis unreachable for limits (%s); counting per process", exc)

    async def take(
        self, session: UserSession, user_id: str, rate: float, burst: int, cost: float = 1.0
    ) -> float | None:
        """Spend ``cost`` of the user's requests: None, or seconds until they are available."""
        if rate <= 0:
            return None
        cost = min(cost, float(burst))
        key = self._key("rate", user_id)
        try:
            wait = float(await self._bucket(keys=[key], args=[rate, burst, cost]))
        except Exception as exc:  # Redis down: the process's own bucket
            self._degraded(exc)
            return session.take(rate, burst, cost=cost)
        return wait if wait > 0 else None

    async def acquire(self, kind: str, user_id: str, conn_id: str, limit: int, local: int) -> bool:
        """Hold a place among the user's ``kind`` connections (at most ``limit``), or False."""
        key = self._key(kind, user_id)
        try:
            ok = bool(await self._acquire(keys=[key], args=[limit, LEASE_S, conn_id]))
        except Exception as exc:
            self._degraded(exc)
            return local < limit
        if ok:
            self._held.setdefault(key, set()).add(conn_id)
            self._ensure_renewer()
        return ok

    async def count(self, kind: str, user_id: str, local: int) -> int:
        """The user's unexpired ``kind`` leases (``local`` when Redis is unreachable)."""
        try:
            now = float((await self._client.time())[0])
            return int(await self._client.zcount(self._key(kind, user_id), now, "+inf"))
        except Exception as exc:
            self._degraded(exc)
            return local

    async def release(self, kind: str, user_id: str, conn_id: str) -> None:
        """Give the place back (idempotent; a lease not renewed expires anyway)."""
        key = self._key(kind, user_id)
        held = self._held.get(key)
        if held is None or conn_id not in held:
            return
        held.discard(conn_id)
        if not held:
            del self._held[key]
        with contextlib.suppress(Exception):
            await self._client.zrem(key, conn_id)

    def _ensure_renewer(self) -> None:
        if self._renewer is None or self._renewer.done():
            self._renewer = asyncio.create_task(self._renew(), name="tenet-limit-leases")

    async def _renew(self) -> None:
        """Push every held lease's expiry forward, every third of a lease, while any is held.

        Ends by itself once the process holds no lease (so nothing is left running at
        shutdown, when every connection has closed).
        """
        while self._held:
            deadline = time.monotonic() + LEASE_S / 3
            while self._held and time.monotonic() < deadline:
                await asyncio.sleep(min(1.0, deadline - time.monotonic()))
            if not self._held:
                return
            try:
                now = float((await self._client.time())[0])
                async with self._client.pipeline(transaction=False) as pipe:
                    for key, members in list(self._held.items()):
                        pipe.zadd(key, {m: now + LEASE_S for m in members}, xx=True)
                        pipe.expire(key, int(LEASE_S * 2))
                    await pipe.execute()
            except Exception as exc:
                self._degraded(exc)


def cluster_limits(state: Any) -> ClusterLimits | None:
    """``state``'s cluster limits when its bus is Redis-backed (made once), else None."""
    limits: ClusterLimits | None = state.cluster_limits
    if limits is None:
        bus = state.service.bus
        client = getattr(bus, "client", None)
        if client is None:
            return None
        limits = state.cluster_limits = ClusterLimits(client, bus.prefix)
    return limits


def request_cost(size_bytes: int) -> float:
    """What a request or frame of ``size_bytes`` costs from the user's rate: one, and one
    more for every :data:`REQUEST_UNIT_BYTES`, so a user cannot buy large work at the
    price of small (a 64 KiB frame costs 17)."""
    return 1.0 + max(0, size_bytes) // REQUEST_UNIT_BYTES


async def take_request(state: Any, user_id: str, *, size_bytes: int = 0) -> float | None:
    """Spend a request of ``size_bytes`` (``TENET_USER_RATE``/``TENET_USER_BURST``), cluster-wide
    when Redis is configured: None, or the seconds until it may go on."""
    settings = state.settings
    session = state.service.sessions.get(user_id)
    cost = request_cost(size_bytes)
    limits = cluster_limits(state)
    if limits is None:
        return session.take(settings.user_rate, settings.user_burst, cost=cost)
    return await limits.take(session, user_id, settings.user_rate, settings.user_burst, cost)


async def hold_place(
    state: Any, kind: str, user_id: str, conn_id: str, *, local: int, limit: int
) -> bool:
    """Take a place among the user's open ``kind`` connections (``ws``, ``sse``), or False.

    ``local`` is how many this process holds: the whole count without Redis.
    """
    limits = cluster_limits(state)
    if limits is None:
        return local < limit
    return await limits.acquire(kind, user_id, conn_id, limit, local)


async def release_place(state: Any, kind: str, user_id: str, conn_id: str) -> None:
    """Give back a place taken by :func:`hold_place` (a no-op without Redis)."""
    limits = cluster_limits(state)
    if limits is not None:
        await limits.release(kind, user_id, conn_id)


async def places_taken(state: Any, kind: str, user_id: str, *, local: int) -> int:
    """How many ``kind`` connections the user has open, cluster-wide when Redis is configured."""
    limits = cluster_limits(state)
    if limits is None:
        return local
    return await limits.count(kind, user_id, local)
