"""``GET /v1/ws``: one socket per client, many threads over it.

Each connection has:

* one reader: the socket's own ASGI task reads client frames and handles them,
  one after another;
* one bounded send queue (``TENET_WS_QUEUE`` frames), drained by one writer
  task, which is the only code that writes to the socket once ``ready`` is sent;
  control frames and events share it, so what is queued is sent in that order;
* one bus :class:`~tenet.bus.Subscription` shared by all the threads it is
  subscribed to, read by one pump task that runs each event through the
  thread's :class:`~tenet.bus.follow.ThreadCursor` (dedupe and gap backfill)
  and the isolation guard, then queues it;
* one delivery lock, held while the pump handles an event and while a client
  frame changes subscriptions, so a replay, a ``run_accepted`` or an
  ``unsubscribed`` is never interleaved with a live event of the same thread.

An idle socket holds only what it needs to read: the send queue and its writer
are made with the first frame queued after ``ready``, the subscription and its
pump with the first thread followed (``subscribe`` or ``run``). Tens of
thousands of connected, idle users then cost little more than the sockets
themselves (see docs/benchmarks.md, "Memory").

A client too slow to read overflows its queue (or its subscription) and only its
own socket is closed, with 4008; it reconnects and resubscribes with ``after``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import deque
from typing import Any

import orjson
from fastapi import APIRouter, WebSocket
from starlette.websockets import WebSocketDisconnect

from ..approvals import MISSING
from ..bus import Subscription, SubscriptionClosed, SubscriptionOverflow
from ..bus.follow import ThreadCursor
from ..errors import Invalid, NotFound, TenetError, Unavailable
from ..events import Event
from ..ids import new_id
from ..titles import title_metadata
from . import frame_json
from .auth import Caller, bearer, caller_for_token
from .cluster_limits import hold_place, release_place, take_request
from .errors import (
    NOT_UNICODE,
    STORE_DOWN_MESSAGE,
    is_store_outage,
    remove_refused_thread,
    unpaired_surrogate,
)
from .params import frame_seq
from .routes import check_metadata
from .state import ServerState
from .subscriptions import check_room, make_room

log = logging.getLogger("tenet.server.ws")

router = APIRouter()

CLOSE_NORMAL = 1000
CLOSE_GOING_AWAY = 1001
CLOSE_UNAUTHORIZED = 4401
CLOSE_TOO_SLOW = 4008
CLOSE_TOO_MANY = 4429
#: The store could not be reached to authenticate: try again later (RFC 6455 1013).
CLOSE_TRY_AGAIN_LATER = 1013
#: How long a close frame may wait for a client that does not read before the socket is dropped.
CLOSE_TIMEOUT_S = 5.0
#: At shutdown, how long a socket may take to send what is queued before its 1001.
FLUSH_TIMEOUT_S = 2.0


class Connection:
    """One authenticated socket; see the module docstring."""

    __slots__ = (
        "_capacity",
        "_closed",
        "_closed_event",
        "_closer",
        "_cursors",
        "_expiry",
        "_has_frames",
        "_has_room",
        "_lock",
        "_max_frame",
        "_pump",
        "_queue",
        "_reading",
        "_serving",
        "_stop_asked",
        "_writer",
        "close_code",
        "connection_id",
        "state",
        "sub",
        "token_hash",
        "user_id",
        "ws",
    )

    def __init__(self, ws: WebSocket, state: ServerState, caller: Caller) -> None:
        self.ws = ws
        self.state = state
        self.user_id = caller.user_id
        self.token_hash = caller.token_hash
        self.connection_id = new_id("con")
        settings = state.settings
        self._capacity = settings.ws_queue
        self._max_frame = settings.ws_max_frame_bytes
        # The send queue, its two signals and its writer: made by the first _push.
        self._queue: deque[str] | None = None
        self._has_frames: asyncio.Event | None = None
        self._has_room: asyncio.Event | None = None
        self._writer: asyncio.Task[None] | None = None
        # The subscription and its pump: made when the first thread is followed.
        self.sub: Subscription | None = None
        self._pump: asyncio.Task[None] | None = None
        self._cursors: dict[str, ThreadCursor] = {}
        self._lock = asyncio.Lock()
        self.close_code: int | None = None
        self._closed = False
        self._closed_event: asyncio.Event | None = None
        #: The task that runs :meth:`serve` (the socket's ASGI task), which reads.
        self._serving: asyncio.Task[Any] | None = None
        #: True only while that task is inside the read loop (so it may be cancelled there).
        self._reading = False
        self._stop_asked = False
        self._closer: asyncio.Task[None] | None = None
        self._expiry: asyncio.TimerHandle | None = None
        self._expire_at(caller.expires_at)

    # Lifecycle --------------------------------------------------------------------------------

    async def serve(self, *, ready_ref: str | None = None) -> None:
        """Send ``ready``, then read until the client leaves or the server closes the socket.

        Runs in the socket's own task, which is the reader: no task of its own for an
        idle socket. ``ready`` is written directly (nothing else can be queued before
        it: nothing is followed yet and no frame has been read).
        """
        self._serving = asyncio.current_task()
        ready: dict[str, Any] = {
            "type": "ready",
            "user_id": self.user_id,
            "connection_id": self.connection_id,
        }
        if ready_ref is not None:
            ready["ref"] = ready_ref
        try:
            self._reading = True
            try:
                if self.close_code is None:
                    await self.ws.send_text(orjson.dumps(ready).decode())
                await self._read_loop()
            except asyncio.CancelledError:
                self._reading = False
                # Our own stop (see _stop_reading) ends the read; any other cancel goes on.
                if not self._stop_asked or self._consume_stop() > 0:
                    raise
            except (WebSocketDisconnect, RuntimeError, OSError):
                pass
            finally:
                self._reading = False
            if self._stop_asked:
                # Asked while a handler swallowed the cancel, or as the loop ended: settle it.
                self._consume_stop()
        finally:
            self._expire_at(None)
            self._detach_all()
            if self._pump is not None:
                self._pump.cancel()
            if self._closer is not None:
                with contextlib.suppress(BaseException):
                    await self._closer
            elif self._writer is not None:
                self._writer.cancel()
            for task in (self._pump, self._writer):
                if task is not None:
                    with contextlib.suppress(BaseException):
                        await task
            self._closed = True
            if self._closed_event is not None:
                self._closed_event.set()

    def _consume_stop(self) -> int:
        """Withdraw the cancel :meth:`_stop_reading` asked for; returns the cancels still asked."""
        task = self._serving
        self._stop_asked = False
        if task is None or task.cancelling() == 0:
            return 0
        return task.uncancel()

    def _stop_reading(self) -> None:
        """End the read loop (a client that does not answer a close, a write that failed).

        Only while the serving task waits inside the read loop: the cancel then lands
        there, never in the clean-up that follows it.
        """
        task = self._serving
        if (
            self._reading
            and not self._stop_asked
            and task is not None
            and task is not asyncio.current_task()
        ):
            self._stop_asked = True
            task.cancel()

    def request_close(self, code: int) -> None:
        """Close with ``code``, dropping whatever is still queued; safe to call from anywhere."""
        if self.close_code is not None:
            return
        self.close_code = code
        # Shutdown (1001) first sends what is queued, so a client sees its runs' last events;
        # any other close drops it (a client too slow or no longer allowed).
        flush = code == CLOSE_GOING_AWAY
        if not flush and self._queue is not None:
            self._queue.clear()
        if self._has_room is not None:
            self._has_room.set()
        if self.sub is not None:
            self.sub.close()
        self._closer = asyncio.create_task(
            self._close(code, flush=flush), name=f"ws-close {self.connection_id}"
        )

    async def wait_closed(self) -> None:
        if self._closed:
            return
        if self._closed_event is None:
            self._closed_event = asyncio.Event()
        await self._closed_event.wait()

    async def _close(self, code: int, *, flush: bool = False) -> None:
        writer = self._writer
        if flush and writer is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(FLUSH_TIMEOUT_S):
                    while self._queue and not writer.done():
                        await asyncio.sleep(0.01)
        if writer is not None and writer is not asyncio.current_task():
            writer.cancel()
            with contextlib.suppress(BaseException):
                await writer
        try:
            async with asyncio.timeout(CLOSE_TIMEOUT_S):
                await self.ws.close(code)
        except Exception:
            pass
        finally:
            self._stop_reading()

    def _detach_all(self) -> None:
        if self.sub is None:
            return
        for thread_id in list(self._cursors):
            self.state.service.bus.unsubscribe(thread_id, self.sub)
        self._cursors.clear()
        self.sub.close()

    def _following(self) -> Subscription:
        """The socket's subscription, made (with its pump) when it first follows a thread."""
        sub = self.sub
        if sub is None:
            sub = self.sub = Subscription(self._capacity)
            if self.close_code is not None:
                sub.close()
            self._pump = asyncio.create_task(
                self._pump_loop(sub), name=f"ws-pump {self.connection_id}"
            )
        return sub

    # Sending ----------------------------------------------------------------------------------

    def _push(self, frame: str) -> bool:
        if self.close_code is not None:
            return False
        queue = self._queue
        if queue is None:
            queue = self._start_writer()
        if len(queue) >= self._capacity:
            self._overflowed("send queue")
            return False
        queue.append(frame)
        assert self._has_frames is not None and self._has_room is not None
        if len(queue) >= self._capacity:
            self._has_room.clear()
        self._has_frames.set()
        return True

    def _start_writer(self) -> deque[str]:
        """The send queue and its writer task, made by the first frame queued after ``ready``."""
        queue: deque[str] = deque()
        self._queue = queue
        self._has_frames = asyncio.Event()
        self._has_room = asyncio.Event()
        self._has_room.set()
        self._writer = asyncio.create_task(
            self._write_loop(queue, self._has_frames, self._has_room),
            name=f"ws-writer {self.connection_id}",
        )
        return queue

    def send_control(self, frame: dict[str, Any]) -> bool:
        """Queue a control frame (run_accepted, error, pong, ...)."""
        return self._push(orjson.dumps(frame).decode())

    def send_event(self, body: str) -> bool:
        """Queue one stored event, if the isolation guard lets it through; the last check."""
        if not self.state.guard.allows(self.user_id, body, channel="websocket"):
            return False
        return self._push(body)

    async def _send_event_when_room(self, body: str) -> bool:
        """Like :meth:`send_event`, but waits for room: a replay is paced by the client."""
        while (
            self._queue is not None
            and self._has_room is not None
            and len(self._queue) >= self._capacity
            and self.close_code is None
        ):
            await self._has_room.wait()
        return self.send_event(body)

    def _overflowed(self, where: str) -> None:
        self.state.metrics.queue_overflows.inc()
        log.warning(
            "client too slow (%s overflowed); closing with 4008",
            where,
            extra={"user_id": self.user_id},
        )
        self.request_close(CLOSE_TOO_SLOW)

    async def _write_loop(
        self, queue: deque[str], has_frames: asyncio.Event, has_room: asyncio.Event
    ) -> None:
        try:
            while True:
                while not queue:
                    has_frames.clear()
                    await has_frames.wait()
                frame = queue.popleft()
                if len(queue) < self._capacity:
                    has_room.set()
                await self.ws.send_text(frame)
        except (WebSocketDisconnect, RuntimeError, OSError):
            self._stop_reading()

    # Live events --------------------------------------------------------------------------------

    async def _pump_loop(self, sub: Subscription) -> None:
        while True:
            try:
                event: Event | None = await sub.get()
            except SubscriptionOverflow:
                if sub.resumed_by_bus:
                    self.state.metrics.bus_resumes.inc()
                    log.warning("live delivery broke; closing with 4008 so the client resumes")
                    self.request_close(CLOSE_TOO_SLOW)
                else:
                    self._overflowed("subscription")
                return
            except SubscriptionClosed:
                return
            async with self._lock:
                # Everything that arrived meanwhile goes out under the same lock: one
                # wake-up of this task per burst of events, not one per event.
                while event is not None:
                    if not await self._deliver(event):
                        return
                    try:
                        event = sub.get_nowait()
                    except SubscriptionOverflow:
                        break  # the next get() reports it

    async def _deliver(self, event: Event) -> bool:
        cursor = self._cursors.get(event.thread_id)
        if cursor is None:
            return True  # unsubscribed meanwhile
        try:
            bodies = await cursor.accept(event)
        except Exception:
            log.exception(
                "backfill failed; closing so the client resumes with after",
                extra={"user_id": self.user_id, "thread_id": event.thread_id},
            )
            self.request_close(CLOSE_TOO_SLOW)
            return False
        for body in bodies:
            if self.close_code is not None:
                return False
            self.send_event(body)
        return self.close_code is None

    # Reading ----------------------------------------------------------------------------------

    async def _read_loop(self) -> None:
        while True:
            message = await self.ws.receive()
            if message["type"] == "websocket.disconnect":
                return
            text = message.get("text")
            if text is None and message.get("bytes") is not None:
                try:
                    text = message["bytes"].decode()
                except UnicodeDecodeError:
                    self._error(None, "invalid", "frames must be UTF-8 JSON")
                    continue
            if text is None:
                continue
            await self._handle(text)

    async def _handle(self, text: str) -> None:
        wait = await take_request(self.state, self.user_id, size_bytes=len(text))
        if wait is not None:  # every frame counts against the user's request rate
            # Answered with the frame's ref, so the client knows which request to send again.
            ref = _ref_of(text) if len(text) <= self._max_frame else None
            self._error(ref, "rate_limited", f"too many requests; retry in {wait:.2f}s")
            return
        if len(text.encode()) > self._max_frame:
            self._error(None, "too_large", f"frames are limited to {self._max_frame} bytes")
            return
        try:
            frame = frame_json.loads(text)
        except orjson.JSONDecodeError:
            if unpaired_surrogate(text.encode()):  # JSON by its grammar: say what is wrong
                self._error(_lenient_ref(text), "invalid", f"the frame {NOT_UNICODE}")
            else:
                self._error(None, "invalid", "the frame is not JSON")
            return
        if not isinstance(frame, dict):
            self._error(None, "invalid", "the frame is not a JSON object")
            return
        ref = frame.get("ref")
        ref = ref if isinstance(ref, str) else None
        kind = frame.get("type")
        handler = _HANDLERS.get(kind) if isinstance(kind, str) else None
        if handler is None:
            self._error(ref, "invalid", f"unknown frame type {str(kind)[:50]!r}")
            return
        try:
            await handler(self, frame, ref)
        except TenetError as exc:
            self._error(ref, exc.code, exc.message)
        except Exception as exc:
            if is_store_outage(exc):
                log.warning("store unreachable for a %s frame: %s", kind, type(exc).__name__)
                self._error(ref, "unavailable", STORE_DOWN_MESSAGE)
                return
            log.exception("a %s frame failed", kind, extra={"user_id": self.user_id})
            self._error(ref, "internal", "internal error")

    def _answer(self, ref: str | None, frame: dict[str, Any]) -> None:
        if ref is not None:
            frame["ref"] = ref
        self.send_control(frame)

    def _error(self, ref: str | None, code: str, message: str) -> None:
        self._answer(ref, {"type": "error", "code": code, "message": message})

    # Frames -------------------------------------------------------------------------------------

    async def on_ping(self, _frame: dict[str, Any], ref: str | None) -> None:
        self._answer(ref, {"type": "pong"})

    async def on_auth(self, frame: dict[str, Any], ref: str | None) -> None:
        """A fresh credential on an open socket (a JWT about to expire): same user only."""
        token = frame.get("token")
        caller = await caller_for_token(self.state, token if isinstance(token, str) else None)
        if caller is None or caller.user_id != self.user_id:
            self.request_close(CLOSE_UNAUTHORIZED)
            return
        self.state.live.remove(self)
        self.token_hash = caller.token_hash  # revoking the new token now closes this socket
        self.state.live.add(self)
        self._expire_at(caller.expires_at)
        self._answer(
            ref, {"type": "ready", "user_id": self.user_id, "connection_id": self.connection_id}
        )

    def _expire_at(self, expires_at: float | None) -> None:
        """Close with 4401 once a JWT's ``exp`` (+ leeway) passes; None: never."""
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None
        if expires_at is not None:
            delay = expires_at + self.state.settings.auth_leeway_s - time.time()
            self._expiry = asyncio.get_running_loop().call_later(
                max(delay, 0), self.request_close, CLOSE_UNAUTHORIZED
            )

    async def on_subscribe(self, frame: dict[str, Any], ref: str | None) -> None:
        thread_id = _field(frame, "thread_id")
        after = frame_seq(frame.get("after"))
        store = self.state.service.store
        await store.get_thread(self.user_id, thread_id)
        bus = self.state.service.bus
        async with self._lock:
            if thread_id not in self._cursors:
                check_room(len(self._cursors), self.state.settings.ws_max_subscriptions)
            # Live first, so nothing falls between.
            bus.subscribe(thread_id, after, into=self._following())
            cursor = self._cursors[thread_id] = ThreadCursor(store, self.user_id, thread_id, after)
            last_seq = await store.last_seq(self.user_id, thread_id)
            self._answer(ref, {"type": "subscribed", "thread_id": thread_id, "last_seq": last_seq})
            async for body in cursor.replay():
                if not await self._send_event_when_room(body):
                    return

    async def on_unsubscribe(self, frame: dict[str, Any], ref: str | None) -> None:
        thread_id = _field(frame, "thread_id")
        if thread_id not in self._cursors:
            await self.state.service.store.get_thread(self.user_id, thread_id)
        async with self._lock:
            if self.sub is not None:
                self.state.service.bus.unsubscribe(thread_id, self.sub)
            self._cursors.pop(thread_id, None)
            self._answer(ref, {"type": "unsubscribed", "thread_id": thread_id})

    async def on_run(self, frame: dict[str, Any], ref: str | None) -> None:
        agent = _field(frame, "agent", kind="name")
        if "input" not in frame:
            raise Invalid("missing field 'input'")
        service = self.state.service
        if not service.engine.accepting:
            raise Unavailable("the server is shutting down")
        # Refused before anything is stored: a new thread is made only for a run admitted.
        await service.engine.admit(self.user_id, agent, frame["input"])
        metadata = frame.get("metadata")
        if metadata is not None and not isinstance(metadata, dict):
            raise Invalid("metadata must be an object")
        metadata = check_metadata(metadata)
        thread_id = frame.get("thread_id")
        store = service.store
        created = thread_id is None
        if thread_id is not None:
            if not isinstance(thread_id, str):
                raise NotFound()
            if thread_id not in self._cursors:
                # A thread this socket follows was found to be the caller's already, and
                # storing the run checks it again; only a new one is looked up first, so
                # that the socket never follows a thread that is not the caller's.
                await store.get_thread(self.user_id, thread_id)
        else:
            thread = await store.create_thread(
                self.user_id,
                title_metadata(frame["input"]),
                limit=self.state.settings.max_threads_per_user,
            )
            thread_id = thread.id
        bus = service.bus
        async with self._lock:
            # Attach before the run can start; the cursor is made once the run is accepted,
            # still under the lock, so the pump cannot hand it an event before run_accepted
            # is queued. The oldest followed thread makes room only then: a refused run
            # takes nothing from the socket.
            fresh = thread_id not in self._cursors
            sub = self._following()
            if fresh:
                bus.subscribe(thread_id, 0, into=sub)
            after = 0
            try:
                if fresh and not created:
                    # The socket follows the thread from here on: every event stored after
                    # this point, the run's own and any other run's (one queued behind it and
                    # cancelled before it starts, an earlier run's end). Read after attaching,
                    # so nothing falls between; a thread made for this run has nothing earlier.
                    after = await store.last_seq(self.user_id, thread_id)
                run = await service.engine.submit(
                    self.user_id, thread_id, agent, frame["input"], metadata, admitted=True
                )
            except BaseException as exc:
                if fresh:
                    bus.unsubscribe(thread_id, sub)
                if created and isinstance(exc, TenetError):
                    # Refused where only the store counts (a cluster's queue): the thread
                    # made for this run goes with it (unless a run found it meanwhile), so a
                    # refusal leaves nothing behind.
                    removal = store.delete_thread(self.user_id, thread_id, unless_used=True)
                    await remove_refused_thread(removal, self.user_id, thread_id)
                raise
            if fresh:
                for oldest in make_room(self._cursors, self.state.settings.ws_max_subscriptions):
                    bus.unsubscribe(oldest, sub)
                    self._answer(None, {"type": "unsubscribed", "thread_id": oldest})
                self._cursors[thread_id] = ThreadCursor(store, self.user_id, thread_id, after)
            self._answer(ref, {"type": "run_accepted", "run_id": run.id, "thread_id": thread_id})

    async def on_cancel(self, frame: dict[str, Any], ref: str | None) -> None:
        run_id = _field(frame, "run_id")
        async with self._lock:
            # Under the lock, so cancel_accepted is queued before the run's run_cancelled.
            run, won = await self.state.service.engine.cancel_request(self.user_id, run_id)
            if won:
                self._answer(ref, {"type": "cancel_accepted", "run_id": run_id})
            else:  # its end came first: say how it ended
                message = f"the run already ended: {run.status}"
                answer = {"type": "error", "code": "conflict", "message": message}
                self._answer(ref, {**answer, "run_id": run_id, "status": run.status})

    async def on_approve(self, frame: dict[str, Any], ref: str | None) -> None:
        """Answer a tool call waiting for approval: ``approval_accepted``, or an error."""
        run_id = _field(frame, "run_id")
        call_id = _field(frame, "call_id")
        async with self._lock:  # approval_accepted before the run's approval_resolved
            await self.state.service.engine.approvals.approve(
                self.user_id,
                run_id,
                call_id,
                frame.get("approved"),
                frame.get("arguments"),
                frame.get("note"),
            )
            self._answer(ref, {"type": "approval_accepted", "run_id": run_id, "call_id": call_id})

    async def on_respond(self, frame: dict[str, Any], ref: str | None) -> None:
        """Answer a question: ``response_accepted``, or an error."""
        run_id = _field(frame, "run_id")
        request_id = _field(frame, "request_id")
        approvals = self.state.service.engine.approvals
        async with self._lock:
            await approvals.respond(self.user_id, run_id, request_id, frame.get("value", MISSING))
            answer = {"type": "response_accepted", "run_id": run_id, "request_id": request_id}
            self._answer(ref, answer)


def _ref_of(text: str) -> str | None:
    """The ``ref`` of a client frame, or None when it has none (or is not a JSON object)."""
    try:
        frame = orjson.loads(text)
    except orjson.JSONDecodeError:
        return None
    ref = frame.get("ref") if isinstance(frame, dict) else None
    return ref if isinstance(ref, str) else None


def _lenient_ref(text: str) -> str | None:
    """The ``ref`` of a frame that escapes a lone surrogate (which the strict parser
    refuses), read by the lenient standard parser; None if it has no clean one."""
    try:
        frame = json.loads(text)
    except (ValueError, RecursionError):
        return None
    ref = frame.get("ref") if isinstance(frame, dict) else None
    if not isinstance(ref, str):
        return None
    try:
        ref.encode()
    except UnicodeEncodeError:  # the ref itself is the bad text
        return None
    return ref


def _field(frame: dict[str, Any], name: str, *, kind: str = "id") -> str:
    if name not in frame or frame[name] is None:
        raise Invalid(f"missing field {name!r}")
    value = frame[name]
    if not isinstance(value, str):
        if kind == "id":
            raise NotFound()
        raise Invalid(f"{name} must be a string")
    return value


_HANDLERS = {
    "ping": Connection.on_ping,
    "auth": Connection.on_auth,
    "subscribe": Connection.on_subscribe,
    "unsubscribe": Connection.on_unsubscribe,
    "run": Connection.on_run,
    "cancel": Connection.on_cancel,
    "approve": Connection.on_approve,
    "respond": Connection.on_respond,
}


async def _authenticate(ws: WebSocket, state: ServerState) -> tuple[Caller | None, str | None]:
    """The caller, from the Authorization header or else a first ``auth`` frame in time.

    Also returns the ``ref`` of the ``auth`` frame, which ``ready`` (its answer) echoes.
    """
    header = ws.headers.get("authorization")
    if header is not None:
        return await caller_for_token(state, bearer(header)), None
    try:
        async with asyncio.timeout(state.settings.ws_auth_timeout_s):
            message = await ws.receive()
    except TimeoutError:
        return None, None
    if message["type"] != "websocket.receive":
        return None, None
    raw = message.get("text")
    if raw is None:
        raw = (message.get("bytes") or b"").decode(errors="replace")
    if len(raw) > state.settings.ws_max_frame_bytes:
        return None, None
    try:
        frame = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None, None
    if not isinstance(frame, dict) or frame.get("type") != "auth":
        return None, None
    token = frame.get("token")
    ref = frame.get("ref")
    caller = await caller_for_token(state, token if isinstance(token, str) else None)
    return caller, ref if isinstance(ref, str) else None


@router.websocket("/v1/ws")
async def websocket_endpoint(ws: WebSocket) -> None:
    state: ServerState = ws.app.state.tenet
    await ws.accept()  # always first: every client, a browser included, then sees our close code
    if state.live.shutting_down:
        await ws.close(CLOSE_GOING_AWAY)
        return
    address = ws.client.host if ws.client is not None else "-"
    # Only a socket that waits for an auth frame is counted: a header is checked at once.
    waits = "authorization" not in ws.headers
    limit = state.settings.ws_max_unauthenticated if waits else None
    try:
        with state.pending.admit(address, limit) as admitted:
            if not admitted:
                state.ws_refusals.refused(
                    "too many unauthenticated sockets from one address; closing with 4429"
                )
                with contextlib.suppress(Exception):
                    await ws.close(CLOSE_TOO_MANY)
                return
            caller, ref = await _authenticate(ws, state)
    except (WebSocketDisconnect, RuntimeError):
        return
    except Exception as exc:
        outage = is_store_outage(exc)
        if not outage:
            log.exception("authenticating a socket failed")
        with contextlib.suppress(Exception):
            await ws.close(CLOSE_TRY_AGAIN_LATER if outage else 1011)
        return
    if caller is None:
        with contextlib.suppress(Exception):
            await ws.close(CLOSE_UNAUTHORIZED)
        return
    session = state.service.sessions.get(caller.user_id)
    conn = Connection(ws, state, caller)
    limit, held = state.settings.ws_max_connections, len(session.connections)
    if not await hold_place(
        state, "ws", caller.user_id, conn.connection_id, local=held, limit=limit
    ):
        with contextlib.suppress(Exception):
            await ws.close(CLOSE_TOO_MANY)
        return
    session.connections.add(conn)
    state.live.add(conn)
    try:
        await conn.serve(ready_ref=ref)
    finally:
        await release_place(state, "ws", caller.user_id, conn.connection_id)
        session.connections.discard(conn)
        session.touch()
        state.live.remove(conn)
