"""The Redis bus: live events and control signals across processes.

Every process pattern-subscribes once to all event channels and routes what
arrives to its own local subscriptions (a :class:`MemoryBus`), so a socket on
process B follows a run executing on process A. One pattern subscription, made
before the process serves anyone, means a new local subscriber is live at once:
there is no window in which a per-channel SUBSCRIBE is still in flight.

Redis is only the live path; every event is stored before it is published. When
the connection to Redis breaks (and again when it is back), every local
subscription is marked overflowed, so each reader resumes from the store: no
event is lost to an outage, and delivery recovers by itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

import orjson
import redis.asyncio as aioredis

from ..events import Event
from .base import Subscription
from .memory import MemoryBus
from .namespace import glob_escape

log = logging.getLogger("tenet.bus")

#: Channel suffixes; each channel is ``<deployment prefix><kind><name>`` (see ``namespace``).
EVENTS = "ev:"
SIGNALS = "sig:"


class RedisBus:
    """Publishes to Redis, delivers from Redis to local subscriptions."""

    def __init__(
        self,
        url: str,
        *,
        prefix: str = "tenet:",
        queue_size: int = 1000,
        reconnect_s: float = 0.5,
    ) -> None:
        self.url = url
        self.prefix = prefix
        self._events = prefix + EVENTS
        self._signals = prefix + SIGNALS
        self._local = MemoryBus(queue_size=queue_size)
        self._reconnect_s = reconnect_s
        self._outbox: asyncio.Queue[tuple[str, str]] = asyncio.Queue()
        self._handlers: dict[str, list[Callable[[str], Any]]] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._client: aioredis.Redis | None = None
        self.connected = asyncio.Event()
        self.published = 0
        self.outages = 0

    @property
    def client(self) -> aioredis.Redis | None:
        """The Redis client (once started), for other per-deployment state under ``prefix``."""
        return self._client

    # The Bus interface ------------------------------------------------------------------------

    async def start(self) -> None:
        # RESP2: under RESP3 (redis-py's default) every pub/sub message is a push reply,
        # and redis-py formats each one into a debug log string whether or not debug
        # logging is on: about 5 µs per received event of 1 KB, in every process (the
        # string is the message's repr; docs/benchmarks.md, "Cluster").
        self._client = aioredis.from_url(self.url, decode_responses=True, protocol=2)
        self._tasks = [
            asyncio.create_task(self._receive(), name="tenet-redis-receive"),
            asyncio.create_task(self._send(), name="tenet-redis-send"),
        ]
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.connected.wait(), 5.0)

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks = []
        if self._client is not None:
            await self._client.aclose()
        await self._local.close()

    def publish(self, thread_id: str, event: Event) -> None:
        if event.thread_id != thread_id:
            raise ValueError("an event is published on its own thread only")
        self.published += 1
        self._outbox.put_nowait((self._events + thread_id, event.json))

    def subscribe(
        self, thread_id: str, after: int = 0, *, into: Subscription | None = None
    ) -> Subscription:
        return self._local.subscribe(thread_id, after, into=into)

    def unsubscribe(self, thread_id: str, subscription: Subscription) -> None:
        self._local.unsubscribe(thread_id, subscription)

    # Signals (cancel, wake) -------------------------------------------------------------------

    def signal(self, name: str, payload: str) -> None:
        """Tell every process (this one included) ``payload`` on ``name``."""
        self._outbox.put_nowait((self._signals + name, payload))

    def on_signal(self, name: str, handler: Callable[[str], Any]) -> None:
        self._handlers.setdefault(name, []).append(handler)

    # Tasks ------------------------------------------------------------------------------------

    async def _send(self) -> None:
        assert self._client is not None
        while True:
            channel, payload = await self._outbox.get()
            batch = [(channel, payload)]
            while not self._outbox.empty() and len(batch) < 512:
                batch.append(self._outbox.get_nowait())
            try:
                async with self._client.pipeline(transaction=False) as pipe:
                    for ch, data in batch:
                        pipe.publish(ch, data)
                    await pipe.execute()
            except (aioredis.RedisError, OSError) as exc:
                # Stored already: readers resume from the store when the receiver reconnects.
                log.warning(
                    "redis publish failed (%s); %d messages left to the store", exc, len(batch)
                )

    async def _receive(self) -> None:
        while True:
            pubsub = None
            try:
                assert self._client is not None
                pubsub = self._client.pubsub(ignore_subscribe_messages=True)
                await pubsub.psubscribe(
                    glob_escape(self._events) + "*", glob_escape(self._signals) + "*"
                )
                self._resume_everyone()  # whatever was published while we were away
                self.connected.set()
                log.info("redis bus connected")
                while True:
                    # Blocks until a message: no timer per message. A broken connection
                    # still raises here, and the loop reconnects.
                    message = await pubsub.get_message(timeout=None)
                    if message is not None:
                        self._dispatch(message)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if self.connected.is_set():
                    self.outages += 1
                    log.warning("redis bus disconnected (%s); readers resume from the store", exc)
                self.connected.clear()
                self._resume_everyone()
                await asyncio.sleep(self._reconnect_s)
            finally:
                if pubsub is not None:
                    with contextlib.suppress(Exception):
                        await pubsub.aclose()

    def _dispatch(self, message: dict[str, Any]) -> None:
        channel: str = message.get("channel") or ""
        data: str = message.get("data") or ""
        events, signals = self._events, self._signals
        if channel.startswith(events):
            if not self._local.has_subscribers(channel[len(events) :]):
                # Nobody here follows that thread: skip the parse. A reader that attaches
                # later reads the store after attaching, and the event is stored already.
                return
            try:
                body = orjson.loads(data)
                event = Event(
                    data=body,
                    user_id=body["user_id"],
                    thread_id=body["thread_id"],
                    run_id=body["run_id"],
                    seq=body["seq"],
                    json=data,
                )
            except (orjson.JSONDecodeError, KeyError, TypeError):
                log.error("dropped a malformed message on %s", channel)
                return
            if event.thread_id == channel[len(events) :]:
                self._local.publish(event.thread_id, event)
        elif channel.startswith(signals):
            for handler in self._handlers.get(channel[len(signals) :], ()):
                try:
                    handler(data)
                except Exception:
                    log.exception("signal handler failed")

    def _resume_everyone(self) -> None:
        self._local.resume_all()
