"""``GET /v1/threads/{id}/stream``: a thread's events as Server-Sent Events.

Each event is sent as ``id: <seq>``, ``event: <type>`` and ``data: <the stored
JSON>``, replayed from the store after ``after`` (or after the ``Last-Event-ID``
a reconnecting browser sends, which wins), then live through
:func:`tenet.bus.follow.follow`, gap-free and without duplicates. A comment line
is sent every ``TENET_WS_PING_S`` so proxies keep the stream open. The stream is
registered like a socket, so revoking its token or shutting down ends it, and a
stream opened with a JWT ends when the JWT expires (``exp`` + leeway).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from typing import Annotated

import orjson
from fastapi import APIRouter, Depends, Request
from starlette.responses import StreamingResponse

from ..bus.follow import follow
from ..errors import RateLimited
from ..ids import new_id
from .auth import Caller, current_caller, server_state
from .cluster_limits import hold_place, places_taken, release_place
from .params import SeqQuery, header_seq
from .query import OnceQueryRoute
from .routes import ERROR_RESPONSES
from .state import ServerState

log = logging.getLogger("tenet.server.sse")

router = APIRouter(responses=ERROR_RESPONSES, route_class=OnceQueryRoute)
_STOP = object()


class SseStream:
    """One open stream: its user and token (for revocation) and a way to end it."""

    def __init__(self, caller: Caller) -> None:
        self.user_id = caller.user_id
        self.token_hash = caller.token_hash
        self.queue: asyncio.Queue[object] = asyncio.Queue(maxsize=1)
        self._stopped = asyncio.Event()
        self._closed = asyncio.Event()
        self.close_code: int | None = None

    def request_close(self, code: int) -> None:
        self.close_code = code
        self._stopped.set()

    async def wait_closed(self) -> None:
        await self._closed.wait()

    async def next(self, timeout: float) -> object:
        """The next event body, None on a keep-alive tick, or ``_STOP``."""
        if self._stopped.is_set():
            return _STOP
        getter = asyncio.ensure_future(self.queue.get())
        stopper = asyncio.ensure_future(self._stopped.wait())
        try:
            done, _ = await asyncio.wait(
                {getter, stopper}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            stopper.cancel()
            if not getter.done():
                getter.cancel()
        if stopper in done or self._stopped.is_set():
            return _STOP
        if getter in done:
            return getter.result()
        return None


def format_sse(body: str) -> bytes:
    """One SSE message for a stored event: ``id`` (seq), ``event`` (type), ``data`` (JSON)."""
    data = orjson.loads(body)
    return f"id: {data['seq']}\nevent: {data['type']}\ndata: {body}\n\n".encode()


@router.get("/v1/threads/{thread_id}/stream")
async def stream(
    thread_id: str,
    request: Request,
    caller: Annotated[Caller, Depends(current_caller)],
    after: SeqQuery = 0,
) -> StreamingResponse:
    state: ServerState = server_state(request)
    store = state.service.store
    await store.get_thread(caller.user_id, thread_id)  # 404 before the stream starts
    resume = header_seq(request.headers.get("last-event-id"))
    start = resume if resume is not None else after

    async def frames() -> AsyncIterator[tuple[str, bytes]]:
        async for body in follow(store, state.service.bus, caller.user_id, thread_id, after=start):
            yield body, format_sse(body)

    return await event_stream(state, caller, frames(), name=f"sse {thread_id}")


async def check_stream_room(state: ServerState, caller: Caller) -> None:
    """429 if the caller already has ``TENET_SSE_MAX_STREAMS`` streams open (in a
    cluster, on every process: :mod:`tenet.server.cluster_limits`)."""
    held = len(state.service.sessions.get(caller.user_id).streams)
    if (
        await places_taken(state, "sse", caller.user_id, local=held)
        >= state.settings.sse_max_streams
    ):
        raise RateLimited("too many open streams; close one first", retry_after=1)


async def event_stream(
    state: ServerState,
    caller: Caller,
    frames: AsyncIterator[tuple[str, bytes]],
    *,
    name: str,
) -> StreamingResponse:
    """An SSE response sending ``frames``: (stored event JSON, the bytes to send for it).

    The stream counts against the user's open streams (429 past
    ``TENET_SSE_MAX_STREAMS``), is closed by revoking its token, by shutdown or by
    its JWT's expiry, sends a keep-alive comment every ``TENET_WS_PING_S``, and
    passes each frame's event through the isolation guard. It ends when ``frames``
    does. Any protocol view of the event stream (tenet's own, AG-UI) is sent this way.
    """
    await check_stream_room(state, caller)
    limit = state.settings.sse_max_streams
    conn = SseStream(caller)
    place = new_id("con")

    async def pump() -> None:
        async for frame in frames:
            await conn.queue.put(frame)
        await conn.queue.put(_STOP)  # the frames ended: end the response now

    async def body() -> AsyncIterator[bytes]:
        # Registered only once the body runs: a response whose body never starts (the
        # client left first) has no finally to let its place go.
        session = state.service.sessions.get(caller.user_id)
        held = len(session.streams)
        if not await hold_place(state, "sse", caller.user_id, place, local=held, limit=limit):
            return  # others opened meanwhile: end at once
        session.streams.add(conn)
        state.live.add(conn)
        task = asyncio.create_task(pump(), name=name)
        expiry = None
        if caller.expires_at is not None:  # a JWT's stream ends when the JWT does
            delay = caller.expires_at + state.settings.auth_leeway_s - time.time()
            expiry = asyncio.get_running_loop().call_later(max(delay, 0), conn.request_close, 4401)
        try:
            yield b": stream open\n\n"
            while True:
                if task.done() and conn.queue.empty():
                    if not task.cancelled() and task.exception() is not None:
                        log.error("SSE follow failed", exc_info=task.exception())
                    return
                item = await conn.next(state.settings.ws_ping_s)
                if item is _STOP:
                    return
                if item is None:
                    yield b": ping\n\n"
                    continue
                assert isinstance(item, tuple)
                event, frame = item
                if state.guard.allows(caller.user_id, event, channel="sse"):
                    yield frame
        finally:
            if expiry is not None:
                expiry.cancel()
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
            await release_place(state, "sse", caller.user_id, place)
            state.live.remove(conn)
            session.streams.discard(conn)
            session.touch()
            conn._closed.set()

    return StreamingResponse(
        body(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
