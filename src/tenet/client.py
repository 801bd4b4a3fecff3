"""An async Python client for tenet's HTTP and WebSocket API (PROTOCOL.md).

    async with Client("http://127.0.0.1:8000", token) as c:
        run = await c.run("assistant", "what is 6*7?")
        async for event in run.events():
            print(event["type"])
        print((await run.result())["output"])

HTTP calls are thin wrappers that return the parsed JSON body and raise
:class:`ClientError` for any error body. Live events travel over one WebSocket
per client, opened on first use, and that socket is what the client takes care
of for you:

* Every request frame carries a unique ``ref``; the reader task matches answers
  to requests by it, and routes events by ``thread_id`` to the listeners of that
  thread (a run's ``events()``, a ``subscribe()`` iterator).
* When the socket drops (a network blip, close 4008 because we read too slowly,
  1006, a server restart), the client reconnects by itself and resubscribes to
  every thread it listens to with ``after`` = the last ``seq`` it received, and
  drops any event it has already delivered. So an iterator loses and repeats
  nothing: the server stores every event before sending it.
* Closes that mean "stop" (4401 bad or revoked token, 4429 too many
  connections) are not retried: pending calls and iterators raise ClientError.

A ``run`` frame whose socket drops after it was sent is not resent (the server
may or may not have accepted it, and sending it again could start it twice): that
call raises ``ClientError(503, "unavailable", ...)``. Every other frame is safe
to repeat and is resent after a reconnect.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import httpx
import orjson
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from .events import EVENT_TYPES, is_terminal

log = logging.getLogger("tenet.client")

Event = dict[str, Any]
#: Decides a tool call waiting for approval (an ``approval_requested`` event): True or
#: False, or ``{"approved", "arguments"?, "note"?}``; None leaves it for someone else.
ApprovalHandler = Callable[[Event], Awaitable[bool | dict[str, Any] | None]]

#: WebSocket close codes that end the client's connection for good.
_FATAL_CLOSES = {4401: (401, "unauthorized"), 4429: (429, "rate_limited")}
#: The HTTP status each protocol error code comes with (for errors over WebSocket).
_STATUS_OF = {
    "not_found": 404,
    "unauthorized": 401,
    "invalid": 422,
    "too_large": 413,
    "rate_limited": 429,
    "conflict": 409,
    "unavailable": 503,
    "internal": 500,
}


class ClientError(Exception):
    """An error answer of the server (HTTP status, protocol code, message).

    Over WebSocket the status is the one HTTP would have used for that code;
    ``status`` 0 means no answer came (timeout, client closed).
    """

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message


# Listeners and feeds ---------------------------------------------------------------------------


class _Listener:
    """One consumer of a thread's events: a run's ``events()`` or a ``subscribe()``.

    ``received`` is the highest ``seq`` offered to it: older and repeated events
    are dropped, and a resubscription starts after it. A run's listener keeps
    its (few) events so that ``events()`` and ``result()`` can both read them;
    a subscription's consumer removes what it has read.
    """

    def __init__(self, *, received: int | None, run_id: str | None = None) -> None:
        self.received = received
        self.run_id = run_id
        self.items: list[Event | ClientError | None] = []
        self.finished = False
        self._changed = asyncio.Event()

    def offer(self, event: Event) -> None:
        """Take one event of the thread (reader task); sets ``finished`` at the run's end."""
        seq = event.get("seq")
        if not isinstance(seq, int) or (self.received is not None and seq <= self.received):
            return
        self.received = seq
        if self.run_id is not None and event.get("run_id") != self.run_id:
            return
        self._put(event)
        if self.run_id is not None and is_terminal(event):
            self.finished = True

    def end(self, error: ClientError | None = None) -> None:
        """No more events will come: ``error`` is raised by the iterator, None ends it."""
        if not self.finished:
            self.finished = True
            self._put(error)

    def _put(self, item: Event | ClientError | None) -> None:
        self.items.append(item)
        self._changed.set()
        self._changed = asyncio.Event()

    async def iterate(self, *, consume: bool) -> AsyncIterator[Event]:
        index = 0
        while True:
            while index < len(self.items):
                item = self.items[index]
                index += 1
                if consume:
                    del self.items[:index]
                    index = 0
                if item is None:
                    return
                if isinstance(item, ClientError):
                    raise item
                yield item
                if self.run_id is not None and is_terminal(item):
                    return
            await self._changed.wait()


@dataclass(eq=False)
class _Feed:
    """The client's subscription to one thread, shared by that thread's listeners."""

    thread_id: str
    listeners: list[_Listener] = field(default_factory=list)
    received: int | None = None  # the highest seq seen on this thread
    holds: int = 0  # run frames in flight for this thread: keep subscribed meanwhile

    def resume_after(self) -> int:
        return min((listener.received or 0 for listener in self.listeners), default=0)


@dataclass(eq=False)
class _Pending:
    """A request frame waiting for its answer."""

    build: Callable[[], dict[str, Any]]  # rebuilt on resend (a subscribe's ``after`` moves on)
    future: asyncio.Future[Any]
    retry: bool  # safe to send again after a reconnect
    kind: str = ""
    thread_id: str | None = None
    on_answer: Callable[[dict[str, Any]], Any] | None = None
    on_error: Callable[[], None] | None = None
    sent: bool = False


# The run handle --------------------------------------------------------------------------------


class Run:
    """A run started over the WebSocket; its events arrive on the client's socket."""

    def __init__(self, client: Client, accepted: dict[str, Any], listener: _Listener) -> None:
        self.client = client
        self.id: str = accepted["run_id"]
        self.thread_id: str = accepted["thread_id"]
        self._listener = listener

    async def events(self) -> AsyncIterator[Event]:
        """This run's events, from ``agent_started`` to its one terminal event.

        May be iterated again (or alongside ``result()``): each iteration starts
        from the run's first event.
        """
        async for event in self._listener.iterate(consume=False):
            yield event

    async def cancel(self) -> bool:
        """Ask the server to cancel; True if it did (the run then ends with ``run_cancelled``).

        False when the run had already ended (its end came before the cancel):
        the server answers ``conflict`` with the run's terminal status.
        """
        try:
            await self.client._request({"type": "cancel", "run_id": self.id}, retry=True)
        except ClientError as exc:
            if exc.code == "conflict":
                return False
            raise
        return True

    async def result(self) -> dict[str, Any]:
        """Wait for the terminal event, then return the run as stored (``GET /v1/runs/{id}``)."""
        async for _ in self.events():
            pass
        return await self.client.get_run(self.id)

    def __repr__(self) -> str:
        return f"Run({self.id!r}, thread_id={self.thread_id!r})"


# The client ------------------------------------------------------------------------------------


class Client:
    """One user's connection to a tenet server: HTTP calls and one lazily opened WebSocket."""

    def __init__(
        self,
        url: str,
        token: str,
        *,
        timeout_s: float = 30.0,
        reconnect_for_s: float = 30.0,
        on_approval: ApprovalHandler | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        #: Called for each ``approval_requested`` event of a thread this client follows
        #: (a run it started, a subscription); its decision is sent with :meth:`approve`.
        self.on_approval = on_approval
        self._approving: set[tuple[str, str]] = set()
        #: Calls whose ``approval_resolved`` this client has seen (a replay holds both).
        self._resolved: set[tuple[str, str]] = set()
        self._approval_tasks: set[asyncio.Task[None]] = set()
        self.timeout_s = timeout_s
        self.reconnect_for_s = reconnect_for_s
        #: How often the socket was reopened after a drop (for tests and the bench).
        self.reconnects = 0
        self._token = token
        self._http = httpx.AsyncClient(
            base_url=self.url,
            headers={"Authorization": f"Bearer {token}"},
            timeout=timeout_s,
        )
        self._refs = itertools.count(1)
        self._pending: dict[str, _Pending] = {}
        self._feeds: dict[str, _Feed] = {}
        self._outbox: asyncio.Queue[tuple[dict[str, Any] | None, _Pending | None]] | None = None
        self._ws: ClientConnection | None = None
        self._failure: ClientError | None = None
        self._state_changed = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._closing = False
        self._ever_ready = False

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the socket and the HTTP pool; open iterators end."""
        self._closing = True
        if self._ws is not None:
            # A clean close first, so the server sees 1000 rather than a dropped connection.
            with contextlib.suppress(Exception):
                await self._ws.close()
        for task in [*self._tasks, *self._approval_tasks]:
            task.cancel()
        for task in [*self._tasks, *self._approval_tasks]:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()
        self._approval_tasks.clear()
        closed = ClientError(0, "closed", "the client was closed")
        self._fail_all(closed, end_subscriptions=True)
        await self._http.aclose()

    # HTTP ------------------------------------------------------------------------------------

    async def _call(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: dict[str, Any] | None = None,
    ) -> Any:
        if params:
            params = {k: v for k, v in params.items() if v is not None}
        try:
            response = await self._http.request(method, path, json=json, params=params)
        except httpx.TransportError as exc:
            raise ClientError(0, "unavailable", f"{self.url}: {type(exc).__name__}") from exc
        return _answer(response)

    async def me(self) -> dict[str, Any]:
        return await self._call("GET", "/v1/me")

    async def set_token(self, token: str) -> None:
        """Use ``token`` from now on, e.g. a fresh JWT before the current one expires.

        HTTP calls send it at once and a reconnecting socket opens with it. An open
        socket is signed in again with an ``auth`` frame (answered ``ready``), so the
        server does not close it at the old token's ``exp``; a token of another user
        closes it (4401) and the client gives up, like any refused credential.
        """
        self._token = token
        self._http.headers["Authorization"] = f"Bearer {token}"
        if self._ws is not None and self._failure is None:
            await self._request(lambda: {"type": "auth", "token": self._token}, retry=True)

    async def agents(self) -> list[dict[str, Any]]:
        return await self._call("GET", "/v1/agents")

    async def create_thread(self, metadata: dict[str, Any] | None = None) -> dict[str, Any]:
        body = {"metadata": metadata} if metadata is not None else {}
        return await self._call("POST", "/v1/threads", json=body)

    async def threads(
        self, limit: int | None = None, before: str | None = None
    ) -> list[dict[str, Any]]:
        params = {"limit": limit, "before": before}
        return await self._call("GET", "/v1/threads", params=params)

    async def thread(self, thread_id: str) -> dict[str, Any]:
        return await self._call("GET", f"/v1/threads/{_seg(thread_id)}")

    async def delete_thread(self, thread_id: str) -> None:
        await self._call("DELETE", f"/v1/threads/{_seg(thread_id)}")

    async def messages(self, thread_id: str) -> list[dict[str, Any]]:
        return await self._call("GET", f"/v1/threads/{_seg(thread_id)}/messages")

    async def create_run(
        self,
        thread_id: str,
        agent: str,
        input: str,
        metadata: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Start a run over HTTP (202); follow it with ``subscribe`` or ``events``."""
        body: dict[str, Any] = {"agent": agent, "input": input}
        if metadata is not None:
            body["metadata"] = metadata
        return await self._call("POST", f"/v1/threads/{_seg(thread_id)}/runs", json=body)

    async def get_run(self, run_id: str) -> dict[str, Any]:
        return await self._call("GET", f"/v1/runs/{_seg(run_id)}")

    async def cancel_run(self, run_id: str) -> dict[str, Any]:
        return await self._call("POST", f"/v1/runs/{_seg(run_id)}/cancel")

    async def runs(self, status: str, limit: int | None = None) -> list[dict[str, Any]]:
        """The caller's runs in ``status`` (``"requires_action"``: those waiting for them)."""
        return await self._call("GET", "/v1/runs", params={"status": status, "limit": limit})

    async def approve(
        self,
        run_id: str,
        call_id: str,
        approved: bool,
        arguments: dict[str, Any] | None = None,
        note: str | None = None,
    ) -> dict[str, Any]:
        """Approve or deny a tool call a run waits on (``arguments``: run it with these
        instead). Returns the run; 404 when it is not the caller's, 409 once answered."""
        body: dict[str, Any] = {"approved": approved}
        if arguments is not None:
            body["arguments"] = arguments
        if note is not None:
            body["note"] = note
        path = f"/v1/runs/{_seg(run_id)}/approvals/{_seg(call_id)}"
        return await self._call("POST", path, json=body)

    async def respond(self, run_id: str, request_id: str, value: Any) -> dict[str, Any]:
        """Answer a question a run asked (``input_requested``); returns the run."""
        path = f"/v1/runs/{_seg(run_id)}/inputs/{_seg(request_id)}"
        return await self._call("POST", path, json={"value": value})

    async def events(self, thread_id: str, after: int = 0, limit: int | None = None) -> list[Event]:
        """Stored events of a thread with ``seq > after``, ascending (no socket needed)."""
        params = {"after": after, "limit": limit}
        return await self._call("GET", f"/v1/threads/{_seg(thread_id)}/events", params=params)

    async def create_token(self) -> str:
        return (await self._call("POST", "/v1/tokens"))["token"]

    async def revoke_current_token(self) -> None:
        """Revoke the token this client uses: it stops working at once, sockets included."""
        await self._call("DELETE", "/v1/tokens/current")

    @staticmethod
    async def create_user(url: str, admin_token: str, name: str) -> dict[str, Any]:
        """Admin: a new user; the answer holds its first ``token`` (shown only once)."""
        async with httpx.AsyncClient(
            base_url=url.rstrip("/"), headers={"Authorization": f"Bearer {admin_token}"}
        ) as http:
            return _answer(await http.post("/v1/users", json={"name": name}))

    # WebSocket: the public part ---------------------------------------------------------------

    async def run(self, agent: str, input: str, thread_id: str | None = None) -> Run:
        """Start a run over the socket; without ``thread_id`` the server makes a new thread.

        The listener for the run's events is registered by the reader the moment
        ``run_accepted`` arrives, before any event of the run can be read.
        """
        frame: dict[str, Any] = {"type": "run", "agent": agent, "input": input}
        if thread_id is not None:
            frame["thread_id"] = thread_id
            self._feed(thread_id).holds += 1

        def accepted(answer: dict[str, Any]) -> tuple[dict[str, Any], _Listener]:
            feed = self._feed(answer["thread_id"])
            if thread_id is not None:
                feed.holds -= 1
            listener = _Listener(received=feed.received, run_id=answer["run_id"])
            feed.listeners.append(listener)
            return answer, listener

        def refused() -> None:
            if thread_id is not None and (feed := self._feeds.get(thread_id)) is not None:
                feed.holds -= 1
                self._drop_feed_if_unused(feed)

        answer, listener = await self._request(
            frame, retry=False, on_answer=accepted, on_error=refused
        )
        return Run(self, answer, listener)

    async def subscribe(self, thread_id: str, after: int = 0) -> AsyncIterator[Event]:
        """Every event of the thread with ``seq > after``, then live ones, until closed.

        Survives reconnects without loss or repetition. Ends when the client closes;
        raises ClientError if the thread is not the caller's or the token stops working.
        """
        feed = self._feed(thread_id)
        listener = _Listener(received=after)
        feed.listeners.append(listener)
        try:
            await self._request(self._subscribe_frame(feed), retry=True)
            async for event in listener.iterate(consume=True):
                yield event
        finally:
            self._remove_listener(feed, listener)

    async def ping(self) -> None:
        """A round trip over the socket (opens it if needed)."""
        await self._request({"type": "ping"}, retry=True)

    # WebSocket: the machinery -----------------------------------------------------------------

    def _feed(self, thread_id: str) -> _Feed:
        feed = self._feeds.get(thread_id)
        if feed is None:
            feed = self._feeds[thread_id] = _Feed(thread_id)
        return feed

    def _subscribe_frame(self, feed: _Feed) -> Callable[[], dict[str, Any]]:
        """A subscribe frame, built when sent: it starts after the listener furthest behind.

        Listeners further ahead drop what they already have, so one frame serves
        a new ``subscribe()`` and a resumption after a reconnect alike.
        """
        return lambda: {
            "type": "subscribe",
            "thread_id": feed.thread_id,
            "after": feed.resume_after(),
        }

    def _remove_listener(self, feed: _Feed, listener: _Listener) -> None:
        with contextlib.suppress(ValueError):
            feed.listeners.remove(listener)
        self._drop_feed_if_unused(feed)

    def _drop_feed_if_unused(self, feed: _Feed) -> None:
        if feed.listeners or feed.holds or self._feeds.get(feed.thread_id) is not feed:
            return
        del self._feeds[feed.thread_id]
        if self._outbox is not None and self._failure is None and not self._closing:
            # Through the outbox, so it cannot overtake a run frame sent before it.
            self._outbox.put_nowait(({"type": "unsubscribe", "thread_id": feed.thread_id}, None))

    async def _request(
        self,
        frame: dict[str, Any] | Callable[[], dict[str, Any]],
        *,
        retry: bool,
        on_answer: Callable[[dict[str, Any]], Any] | None = None,
        on_error: Callable[[], None] | None = None,
    ) -> Any:
        """Send one frame and wait for the answer with its ``ref``."""
        build = frame if callable(frame) else (lambda: frame)
        try:
            self._start()
            if self._failure is not None:
                raise self._failure
        except ClientError:
            if on_error is not None:
                on_error()
            raise
        ref = f"r{next(self._refs)}"
        first = build()
        pending = _Pending(
            build=build,
            future=asyncio.get_running_loop().create_future(),
            retry=retry,
            kind=str(first.get("type")),
            thread_id=first.get("thread_id"),
            on_answer=on_answer,
            on_error=on_error,
        )
        self._pending[ref] = pending
        assert self._outbox is not None
        self._outbox.put_nowait(({"ref": ref}, pending))
        try:
            return await asyncio.wait_for(asyncio.shield(pending.future), self.timeout_s)
        except (TimeoutError, asyncio.CancelledError) as exc:
            if self._pending.pop(ref, None) is not None and on_error is not None:
                on_error()
            if isinstance(exc, asyncio.CancelledError):
                raise
            raise ClientError(0, "timeout", f"no answer within {self.timeout_s:g}s") from None

    def _start(self) -> None:
        if self._outbox is None:
            if self._closing:
                raise ClientError(0, "closed", "the client was closed")
            self._outbox = asyncio.Queue()
            self._tasks.append(asyncio.create_task(self._socket_loop(), name="tenet-client socket"))
            self._tasks.append(asyncio.create_task(self._write_loop(), name="tenet-client writer"))

    def _notify(self) -> None:
        self._state_changed.set()
        self._state_changed = asyncio.Event()

    async def _connected(self) -> ClientConnection:
        while True:
            if self._failure is not None:
                raise self._failure
            if self._ws is not None:
                return self._ws
            await self._state_changed.wait()

    async def _write_loop(self) -> None:
        """Sends the outbox in order; a frame that could not be sent waits for the next socket."""
        assert self._outbox is not None
        while True:
            head, pending = await self._outbox.get()
            while True:
                try:
                    ws = await self._connected()
                except ClientError:
                    return
                if pending is not None:
                    if pending.future.done():
                        break  # answered or given up meanwhile
                    frame = {**pending.build(), **(head or {})}
                else:
                    frame = head or {}
                try:
                    await ws.send(orjson.dumps(frame).decode())
                except ConnectionClosed:
                    # Not sent: wait until the socket loop has replaced this socket (it
                    # may already have), then send it on the new one.
                    while self._ws is ws and self._failure is None:
                        await self._state_changed.wait()
                    continue
                if pending is not None:
                    pending.sent = True
                break

    async def _socket_loop(self) -> None:
        """Connect, read until the socket drops, reconnect; until closed or refused for good."""
        ws_url = "ws" + self.url.removeprefix("http") + "/v1/ws"
        dropped_at: float | None = None
        delay = 0.05
        while not self._closing:
            headers = {"Authorization": f"Bearer {self._token}"}  # the latest: see set_token
            try:
                ws = await connect(
                    ws_url, additional_headers=headers, open_timeout=self.timeout_s, max_size=None
                )
            except InvalidStatus as exc:
                status = exc.response.status_code
                if status in (401, 403, 429):
                    code = "rate_limited" if status == 429 else "unauthorized"
                    self._give_up(ClientError(status, code, "the server refused the WebSocket"))
                    return
                reason = f"HTTP {status}"
            except (OSError, TimeoutError, InvalidHandshake) as exc:
                reason = type(exc).__name__
            else:
                reason = await self._serve(ws)
                if reason is None:
                    return  # refused for good, or closing
                dropped_at = None
                delay = 0.05
            if dropped_at is None:
                dropped_at = time.monotonic()
            if time.monotonic() - dropped_at > self.reconnect_for_s:
                self._give_up(
                    ClientError(503, "unavailable", f"could not reconnect to {self.url}: {reason}")
                )
                return
            log.info("tenet client: socket lost (%s); reconnecting", reason)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)

    async def _serve(self, ws: ClientConnection) -> str | None:
        """Run one open socket: wait for ``ready``, resume, read. The reason it ended, or None."""
        try:
            ready = orjson.loads(await asyncio.wait_for(ws.recv(), self.timeout_s))
            if not isinstance(ready, dict) or ready.get("type") != "ready":
                await ws.close()
                return f"unexpected first frame {str(ready)[:80]}"
            if self._ever_ready:
                self.reconnects += 1
            self._ever_ready = True
            self._resume_after_reconnect()
            self._ws = ws
            self._notify()
            async for raw in ws:
                self._dispatch(raw)
        except ConnectionClosed:
            pass
        except (TimeoutError, orjson.JSONDecodeError) as exc:
            await ws.close()
            return type(exc).__name__
        finally:
            self._ws = None
        code = ws.close_code
        if code in _FATAL_CLOSES:
            status, name = _FATAL_CLOSES[code]
            self._give_up(ClientError(status, name, ws.close_reason or f"closed with {code}"))
            return None
        if self._closing:
            return None
        self._after_drop()
        return f"closed with {code}"

    def _after_drop(self) -> None:
        """A sent ``run`` may or may not have reached the server: fail it rather than guess."""
        for ref, pending in list(self._pending.items()):
            if pending.sent and not pending.retry:
                del self._pending[ref]
                if pending.on_error is not None:
                    pending.on_error()
                if not pending.future.done():
                    pending.future.set_exception(
                        ClientError(503, "unavailable", "the connection dropped before an answer")
                    )
        self._notify()

    def _resume_after_reconnect(self) -> None:
        """Queue, before anything else is sent: resubscriptions, then repeatable requests."""
        assert self._outbox is not None
        resend = [(ref, p) for ref, p in self._pending.items() if p.sent]
        subscribing = {p.thread_id for p in self._pending.values() if p.kind == "subscribe"}
        queued: list[tuple[dict[str, Any] | None, _Pending | None]] = []
        for feed in self._feeds.values():
            if feed.listeners and feed.thread_id not in subscribing:
                queued.append((self._subscribe_frame(feed)(), None))
        for ref, pending in resend:
            pending.sent = False
            queued.append(({"ref": ref}, pending))
        # Put them ahead of frames queued while the socket was down.
        rest: list[tuple[dict[str, Any] | None, _Pending | None]] = []
        while not self._outbox.empty():
            rest.append(self._outbox.get_nowait())
        for item in queued + rest:
            self._outbox.put_nowait(item)

    def _dispatch(self, raw: str | bytes) -> None:
        try:
            frame = orjson.loads(raw)
        except orjson.JSONDecodeError:
            log.warning("tenet client: a frame that is not JSON")
            return
        if not isinstance(frame, dict):
            return
        kind = frame.get("type")
        if "event_id" in frame or kind in EVENT_TYPES:
            self._deliver(frame)
            return
        ref = frame.get("ref")
        pending = self._pending.pop(ref, None) if isinstance(ref, str) else None
        if pending is None:
            if kind == "error":
                log.warning("tenet client: error frame %s", frame)
            return
        if kind == "error":
            if pending.on_error is not None:
                pending.on_error()
            error = _ws_error(frame)
            if not pending.future.done():
                pending.future.set_exception(error)
            if pending.kind == "subscribe" and error.code == "not_found" and pending.thread_id:
                # The thread is gone (deleted meanwhile, or never the caller's): so are its feeds.
                feed = self._feeds.pop(pending.thread_id, None)
                for listener in feed.listeners if feed else ():
                    listener.end(error)
            return
        result = pending.on_answer(frame) if pending.on_answer is not None else frame
        if not pending.future.done():
            pending.future.set_result(result)

    def _deliver(self, event: Event) -> None:
        feed = self._feeds.get(event.get("thread_id", ""))
        seq = event.get("seq")
        if feed is None or not isinstance(seq, int):
            return
        feed.received = max(feed.received or 0, seq)
        if event.get("type") == "approval_requested" and self.on_approval is not None:
            self._ask_approval(event)
        elif event.get("type") == "approval_resolved" and self.on_approval is not None:
            self._resolved.add((str(event.get("run_id")), str(event.get("call_id"))))
        for listener in list(feed.listeners):
            listener.offer(event)
            if listener.finished:
                self._remove_listener(feed, listener)

    def _ask_approval(self, event: Event) -> None:
        key = (str(event.get("run_id")), str(event.get("call_id")))
        if key in self._approving:  # delivered again after a reconnect
            return
        self._approving.add(key)
        task = asyncio.create_task(self._approval(event), name=f"approval {key[1]}")
        self._approval_tasks.add(task)
        task.add_done_callback(self._approval_tasks.discard)

    async def _still_waiting(self, event: Event) -> bool:
        """Whether the call of ``event`` may still be answered: a subscription's replay
        (a reload, a second device) delivers requests answered long ago, which must not
        reach the person again. The run no longer waiting settles it; a run that waits
        again (a later turn, other calls) is told by the call's ``approval_resolved``,
        which the replay delivers while the run is read."""
        key = (str(event.get("run_id")), str(event.get("call_id")))
        if key in self._resolved:
            return False
        try:
            run = await self.get_run(key[0])
        except ClientError as exc:
            if exc.code == "not_found":  # its thread was deleted meanwhile
                return False
            raise
        return run.get("status") == "requires_action" and key not in self._resolved

    async def _approval(self, event: Event) -> None:
        assert self.on_approval is not None
        try:
            if not await self._still_waiting(event):
                return
            decision = await self.on_approval(event)
            if decision is None:
                return
            if isinstance(decision, bool):
                decision = {"approved": decision}
            await self.approve(str(event["run_id"]), str(event["call_id"]), **decision)
        except ClientError as exc:
            if exc.code != "conflict":  # answered elsewhere first: nothing to do
                log.warning("tenet client: answering an approval failed: %s", exc)
        except Exception:
            log.exception("tenet client: on_approval failed")

    def _give_up(self, error: ClientError) -> None:
        self._failure = error
        self._fail_all(error, end_subscriptions=False)
        self._notify()

    def _fail_all(self, error: ClientError, *, end_subscriptions: bool) -> None:
        for pending in self._pending.values():
            if not pending.future.done():
                pending.future.set_exception(error)
        self._pending.clear()
        for feed in self._feeds.values():
            for listener in feed.listeners:
                closing_quietly = end_subscriptions and listener.run_id is None
                listener.end(None if closing_quietly else error)
        self._feeds.clear()


def _answer(response: httpx.Response) -> Any:
    """The JSON body of a success, or the protocol's error body as ClientError."""
    if response.status_code >= 400:
        try:
            error = response.json()["error"]
            code, message = str(error["code"]), str(error["message"])
        except (ValueError, KeyError, TypeError):
            code, message = "internal", response.text[:200]
        raise ClientError(response.status_code, code, message)
    if response.status_code == 204 or not response.content:
        return None
    return response.json()


def _seg(value: str) -> str:
    """An ID as one path segment: whatever it holds, it cannot reach another route."""
    return quote(value, safe="")


def _ws_error(frame: dict[str, Any]) -> ClientError:
    code = str(frame.get("code", "internal"))
    return ClientError(_STATUS_OF.get(code, 400), code, str(frame.get("message", "")))
