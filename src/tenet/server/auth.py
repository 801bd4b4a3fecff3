"""Who is calling: a user (by bearer token or JWT) or the admin (by the admin token).

Identity comes from the credential only, and whatever the credential, the
result is one :class:`Caller`: nothing downstream knows how the user signed in.
``TENET_AUTH`` says which credentials count: ``tokens`` (tenet's own), ``jwt``
(the product's JWTs, see :mod:`tenet.server.jwt_auth`) or ``both`` (a credential
shaped like a JWT is verified as one, anything else is looked up as a token).

A token is looked up by its hash; the caller gets the user id and the hash of
the token used, so that revoking "the token I am using" can also close that
token's open sockets. A JWT is refused or accepted with a reason that is logged
without the token. The admin token is compared in constant time and is not a
user: it opens user management and ``/metrics``, nothing else.
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
from .jwt_auth import JwtRefused, looks_like_jwt
from .state import ServerState

MISSING = "missing or malformed bearer token"
BAD_TOKEN = "invalid token"


@dataclass(frozen=True, slots=True)
class Caller:
    """An authenticated user, as resolved from the credential of one request or socket."""

    user_id: str
    name: str
    token_hash: str
    #: Set for a JWT: its issuer and subject (which key the user) and ``exp`` (Unix seconds).
    issuer: str | None = None
    subject: str | None = None
    expires_at: float | None = None


def bearer(value: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, or None."""
    if not value:
        return None
    scheme, _, token = value.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        return None
    return token


async def authenticate(state: ServerState, token: str | None) -> Caller:
    """The caller ``token`` (a tenet token or a JWT, as ``TENET_AUTH`` allows) proves, or 401."""
    if not token:
        raise Unauthorized(MISSING)
    jwt_users = state.jwt_users
    if jwt_users is not None and (state.settings.auth == "jwt" or looks_like_jwt(token)):
        try:
            identity, user = await jwt_users.identify(token)
        except JwtRefused as exc:
            state.jwt_refusals.refused(f"a JWT was refused: {exc.reason}")
            raise Unauthorized(f"{BAD_TOKEN}: {exc.reason}") from None
        return Caller(
            user_id=user.user_id,
            name=user.name,
            token_hash=identity.token_hash,
            issuer=identity.issuer,
            subject=identity.subject,
            expires_at=identity.expires_at,
        )
    if state.settings.auth == "jwt":
        raise Unauthorized(BAD_TOKEN)
    caller = await _caller_for_api_token(state.service.store, token)
    if caller is None:
        raise Unauthorized(BAD_TOKEN)
    return caller


async def caller_for_token(state: ServerState, token: str | None) -> Caller | None:
    """:func:`authenticate`, with None for a credential that is not accepted."""
    try:
        return await authenticate(state, token)
    except Unauthorized:
        return None


async def _caller_for_api_token(store: Store, token: str) -> Caller | None:
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
    caller = await authenticate(server_state(request), bearer(request.headers.get("authorization")))
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
