"""Who is calling: a user (by bearer token) or the admin (by the admin token).

Identity comes from the credential only. A token is looked up by its hash; the
caller gets the user id and the hash of the token used, so that revoking
"the token I am using" can also close that token's open sockets. The admin token
is compared in constant time and is not a user: it opens user management and
``/metrics``, nothing else.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from ..errors import RateLimited, Unauthorized
from ..store.db import Store
from .cluster_limits import take_request
from .state import ServerState

MISSING = "missing or malformed bearer token"
BAD_TOKEN = "invalid token"


@dataclass(frozen=True, slots=True)
class Caller:
    """An authenticated user, as resolved from the credential of one request or socket."""

    user_id: str
    name: str
    token_hash: str


def bearer(value: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, or None."""
    if not value:
        return None
    scheme, _, token = value.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        return None
    return token


async def caller_for_token(store: Store, token: str | None) -> Caller | None:
    if not token:
        return None
    found = await store.user_for_token(token)
    if found is None:
        return None
    user, digest = found
    return Caller(user_id=user.id, name=user.name, token_hash=digest)


def is_admin(state: ServerState, token: str | None) -> bool:
    expected = state.settings.admin_token
    if not expected or not token:
        return False
    return hmac.compare_digest(token.encode(), expected.encode())


def server_state(request: Request) -> ServerState:
    state: ServerState = request.app.state.tenet
    return state


async def state_dependency(request: Request) -> ServerState:
    """:func:`server_state` as a FastAPI dependency (async: a sync one costs a thread hop)."""
    return server_state(request)


#: Declares bearer auth in OpenAPI; the header is read (and checked) below.
bearer_scheme = HTTPBearer(auto_error=False, description="A user's API token.")


async def current_caller(
    request: Request,
    _declared: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)] = None,
) -> Caller:
    """FastAPI dependency: the user making this request, or 401."""
    token = bearer(request.headers.get("authorization"))
    if token is None:
        raise Unauthorized(MISSING)
    caller = await caller_for_token(server_state(request).service.store, token)
    if caller is None:
        raise Unauthorized(BAD_TOKEN)
    length = request.headers.get("content-length", "")
    size = int(length) if length.isdigit() and len(length) < 12 else 0
    await check_rate(server_state(request), caller.user_id, size)
    request.state.caller = caller
    return caller


async def check_rate(state: ServerState, user_id: str, size_bytes: int = 0) -> None:
    """Spend one of the user's requests (``TENET_USER_RATE``/``TENET_USER_BURST``; a large
    body costs more, see ``cluster_limits.request_cost``), or 429."""
    wait = await take_request(state, user_id, size_bytes=size_bytes)
    if wait is not None:
        raise RateLimited("too many requests; slow down", retry_after=wait)


async def require_admin(
    request: Request,
    _declared: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)] = None,
) -> None:
    """FastAPI dependency: the admin token, or 401."""
    token = bearer(request.headers.get("authorization"))
    if not is_admin(server_state(request), token):
        raise Unauthorized(MISSING if token is None else BAD_TOKEN)
