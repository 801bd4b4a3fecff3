"""The one error body of the protocol, for every failure an HTTP request can meet.

``{"error": {"code", "message"}}`` with the status that matches the code, whether
the failure is a :class:`~tenet.errors.TenetError` raised by the core, a request
FastAPI could not validate, a route that does not exist, a body that is too large
or a bug. A bug answers a fixed message: a 500 never shows a stack trace, an
exception text or another user's data.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..errors import NotFound, RateLimited, TenetError, Unavailable
from ..text import ESCAPED_SURROGATE

log = logging.getLogger("tenet.server")

#: The one 404 body: a foreign id and a missing one answer these exact bytes.
NOT_FOUND_MESSAGE = NotFound().message
INTERNAL_MESSAGE = "internal error"
STORE_DOWN_MESSAGE = "the store is unreachable; try again shortly"

_CODE_OF_STATUS = {
    401: "unauthorized",
    404: "not_found",
    405: "not_found",
    409: "conflict",
    413: "too_large",
    422: "invalid",
    429: "rate_limited",
    503: "unavailable",
}


async def remove_refused_thread(removal: Awaitable[Any], user_id: str, thread_id: str) -> None:
    """Await ``removal`` of the thread made for a run then refused; a failure is logged.

    The refusal is what the client gets either way: a thread that could not be
    removed is only an empty thread left in the user's list.
    """
    try:
        await removal
    except Exception as gone:
        log.warning(
            "a refused run's new thread could not be removed: %s",
            type(gone).__name__,
            extra={"user_id": user_id, "thread_id": thread_id},
        )


def error_body(code: str, message: str) -> bytes:
    return orjson.dumps({"error": {"code": code, "message": message}})


def error_response(
    status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> Response:
    return Response(
        error_body(code, message),
        status_code=status,
        media_type="application/json",
        headers=headers,
    )


def tenet_error_response(exc: TenetError) -> Response:
    headers: dict[str, str] = {}
    if isinstance(exc, RateLimited) and exc.retry_after is not None:
        headers["Retry-After"] = str(max(1, math.ceil(exc.retry_after)))
    if exc.status == 401:
        headers["WWW-Authenticate"] = "Bearer"
    status = exc.status if exc.status in _CODE_OF_STATUS or exc.status == 500 else 500
    code = exc.code if status != 500 else "internal"
    message = exc.message if status != 500 else INTERNAL_MESSAGE
    return error_response(status, code, message, headers)


async def _on_tenet_error(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, TenetError)
    if exc.status >= 500 and exc.status != 503:
        log.error("request failed: %s", exc.code)
    return tenet_error_response(exc)


async def _on_validation_error(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    return error_response(422, "invalid", _describe(exc.errors()))


async def _on_http_error(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    status = exc.status_code
    code = _CODE_OF_STATUS.get(status)
    if code is None:
        # Any other status FastAPI or Starlette raises is a request we cannot serve as sent.
        status, code = 422, "invalid"
    message = NOT_FOUND_MESSAGE if status == 404 else _http_message(status, exc.detail)
    return error_response(status, code, message, dict(exc.headers or {}))


def _http_message(status: int, detail: Any) -> str:
    if status == 405:
        return "method not allowed"
    return detail if isinstance(detail, str) else "request not accepted"


def _describe(errors: Any) -> str:
    """A short, safe description of what was wrong with a request (no echo of its values)."""
    parts = []
    for err in list(errors)[:5]:
        loc = ".".join(str(p) for p in err.get("loc", ()) if p != "body") or "body"
        parts.append(f"{loc}: {err.get('msg', 'invalid')}")
    return "; ".join(parts) or "invalid request"


def _outage_types() -> tuple[type[BaseException], ...]:
    import sqlite3

    from sqlalchemy import exc as sa

    types: list[type[BaseException]] = [
        OSError,  # refused, reset, unreachable, DNS: every socket-level failure
        sa.OperationalError,
        sa.InterfaceError,
        sa.DisconnectionError,
        sa.TimeoutError,  # the pool had no connection to give in time
        sqlite3.OperationalError,  # locked, unreadable file
    ]
    try:
        import asyncpg
    except ImportError:  # pragma: no cover - the postgres extra is not installed
        pass
    else:
        types += [
            asyncpg.PostgresConnectionError,
            asyncpg.InterfaceError,
            asyncpg.exceptions.CannotConnectNowError,
            asyncpg.exceptions.TooManyConnectionsError,
            asyncpg.exceptions.AdminShutdownError,
        ]
    return tuple(types)


#: Exception types that mean "the store is unreachable" (immutable, built once at import).
_OUTAGE_TYPES = _outage_types()


def is_store_outage(exc: BaseException) -> bool:
    """Whether ``exc`` (or what caused it) means the store is unreachable, not a bug.

    Such failures answer 503 ``unavailable``: the request may succeed once the
    database is back, and the server goes on serving meanwhile.
    """
    from sqlalchemy.exc import DBAPIError

    seen = 0
    current: BaseException | None = exc
    while current is not None and seen < 8:
        if isinstance(current, (Unavailable, *_OUTAGE_TYPES)):
            return True
        if isinstance(current, DBAPIError) and current.connection_invalidated:
            return True
        current = current.__cause__ or current.__context__
        seen += 1
    return False


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(TenetError, _on_tenet_error)
    app.add_exception_handler(RequestValidationError, _on_validation_error)
    app.add_exception_handler(StarletteHTTPException, _on_http_error)


#: What is wrong with a body or frame that escapes a lone UTF-16 surrogate.
NOT_UNICODE = "holds text that is not valid Unicode (an unpaired surrogate)"


def unpaired_surrogate(body: bytes) -> bool:
    """Whether a JSON body escapes a UTF-16 surrogate that has no partner (``"\\ud83d"``).

    A lenient JSON parser turns such an escape into a string UTF-8 cannot encode,
    which fails wherever it is stored or sent. Only bodies that escape a surrogate
    at all are parsed here (strictly), so other bodies cost one scan.
    """
    if not body or ESCAPED_SURROGATE.search(body) is None:
        return False
    try:
        orjson.loads(body)
    except orjson.JSONDecodeError:
        return True
    return False


class GuardMiddleware:
    """Outermost HTTP layer: caps request bodies (413) and turns any bug into a bare 500.

    The body is read here, up to ``max_body_bytes``, before any route sees it, so a
    route never has to care about size and a chunked upload cannot slip past a
    Content-Length check. A bug is logged with its traceback and answered with the
    generic 500 body; the traceback goes to the log only.
    """

    def __init__(self, app: ASGIApp, *, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    def __call__(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        # Not a coroutine itself: a WebSocket (or lifespan) gets the inner app's awaitable as
        # is, so an open socket holds no frame of this layer for as long as it lives.
        if scope["type"] != "http":
            return self.app(scope, receive, send)
        return self._http(scope, receive, send)

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    too_big = int(value) > self.max_body_bytes
                except ValueError:
                    too_big = False
                if too_big:
                    await self._too_large(scope, receive, send)
                    return
        body = b""
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > self.max_body_bytes:
                await self._too_large(scope, receive, send)
                return
        if unpaired_surrogate(body):
            message = f"the body {NOT_UNICODE}"
            await error_response(422, "invalid", message)(scope, receive, send)
            return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, replay, tracking_send)
        except Exception as exc:
            if is_store_outage(exc):
                log.warning(
                    "store unreachable in %s %s: %s",
                    scope.get("method"),
                    scope.get("path"),
                    type(exc).__name__,
                )
                if started:
                    return
                await error_response(503, "unavailable", STORE_DOWN_MESSAGE)(scope, replay, send)
                return
            log.exception("unhandled error in %s %s", scope.get("method"), scope.get("path"))
            if started:
                raise
            await error_response(500, "internal", INTERNAL_MESSAGE)(scope, replay, send)

    async def _too_large(self, scope: Scope, receive: Receive, send: Send) -> None:
        message = f"the request body is larger than {self.max_body_bytes} bytes"
        await error_response(413, "too_large", message)(scope, receive, send)
