"""Verifying the product's own JWTs (``TENET_AUTH=jwt|both``).

A JWT is accepted when PyJWT verifies its signature with a key we trust, with an
algorithm in ``TENET_AUTH_ALGORITHMS``, and its claims hold: ``exp`` present and
not passed, ``nbf`` passed, ``iss`` and ``aud`` as configured (each within
``TENET_AUTH_LEEWAY_S`` for times), and a non-empty subject in
``TENET_AUTH_USER_CLAIM``. The keys are either an HS256 secret
(``TENET_AUTH_JWT_SECRET``, for development) or a provider's public keys
(:class:`~tenet.server.jwks.JwksKeys`). Everything else is refused with
:class:`JwtRefused`, whose ``reason`` is safe to show and log: it never holds
the token or any part of it.

Key confusion is closed twice: the algorithm comes from the allow-list, never
from the token alone, and a public key only verifies the algorithms its type
allows (an RSA key never becomes an HMAC secret).

A token verified once is remembered (by its SHA-256) until it expires, in a
bounded map, so a client sending the same token on every request pays for the
signature once. That is also why a JWT cannot be revoked in tenet: it is good
until its ``exp`` (a provider revokes by issuing short-lived tokens).

Decoding is PyJWT's as shipped, segments, signature and claims alike: none of it
is rewritten here, even where it is slow (its per-character base64url check is
about a fifth of a new token's verification, see ``docs/benchmarks.md``).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import jwt
import orjson

from ..settings import Settings
from ..store.db import Store
from ..store.identities import ExternalIdentities, ExternalUser
from .jwks import JwksKeys

#: A longer token is refused before it is parsed (providers' tokens are 1 to 8 KB).
MAX_TOKEN_CHARS = 16 * 1024
#: Longest issuer and subject kept (they key users).
MAX_CLAIM_CHARS = 255
#: Verified tokens remembered at once.
VERIFIED_CACHE = 10_000

_REASONS: tuple[tuple[type[Exception], str], ...] = (
    (jwt.ExpiredSignatureError, "token expired"),
    (jwt.ImmatureSignatureError, "token not yet valid"),
    (jwt.InvalidIssuerError, "wrong issuer"),
    (jwt.InvalidAudienceError, "wrong audience"),
    (jwt.MissingRequiredClaimError, "a required claim is missing"),
    (jwt.InvalidAlgorithmError, "algorithm not allowed"),
    (jwt.InvalidSignatureError, "bad signature"),
)


class JwtRefused(Exception):
    """A token that is not accepted; ``reason`` is short and holds nothing of the token."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def looks_like_jwt(token: str) -> bool:
    """A compact JWS has three dot-separated parts; tenet's own tokens have none."""
    return token.count(".") == 2


@dataclass(frozen=True, slots=True)
class JwtIdentity:
    """Who a verified JWT names: the (issuer, subject) pair keys the user."""

    issuer: str
    subject: str
    name: str
    #: ``exp`` as Unix seconds.
    expires_at: float
    #: SHA-256 of the token, hex: registers the connections it opens.
    token_hash: str


class JwtVerifier:
    """Turns a JWT into a :class:`JwtIdentity` or raises :class:`JwtRefused`."""

    def __init__(self, settings: Settings) -> None:
        self.algorithms = settings.auth_algorithm_list
        self.issuer = settings.jwt_issuer
        self.audience = settings.auth_audience
        self.leeway_s = settings.auth_leeway_s
        self.user_claim = settings.auth_user_claim
        self.name_claim = settings.auth_name_claim
        self._secret = settings.auth_jwt_secret
        self.keys: JwksKeys | None = None
        if self._secret is None:
            self.keys = JwksKeys(
                jwks_url=settings.auth_jwks_url,
                oidc_issuer=settings.auth_oidc_issuer,
                refresh_s=settings.auth_jwks_refresh_s,
            )
        self._verified: OrderedDict[str, JwtIdentity] = OrderedDict()
        self._decoder = jwt.PyJWT()
        required = ["exp", self.user_claim]
        if self.issuer:
            required.append("iss")
        if self.audience:
            required.append("aud")
        self._options: dict[str, Any] = {"require": required, "verify_aud": bool(self.audience)}

    async def aclose(self) -> None:
        if self.keys is not None:
            await self.keys.aclose()

    async def verify(self, token: str) -> JwtIdentity:
        """The identity ``token`` proves; :class:`JwtRefused` says why not."""
        if len(token) > MAX_TOKEN_CHARS:
            raise JwtRefused("token too long")
        digest = hashlib.sha256(token.encode()).hexdigest()
        known = self._verified.get(digest)
        if known is not None:
            if time.time() <= known.expires_at + self.leeway_s:
                return known
            del self._verified[digest]
        header = _header(token)
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in self.algorithms:
            raise JwtRefused("algorithm not allowed")
        key: Any = self._secret
        if self.keys is not None:
            kid = header.get("kid")
            if kid is not None and not isinstance(kid, str):
                raise JwtRefused("malformed token")
            key = await self.keys.key(kid, alg)
            if key is None:
                raise JwtRefused("no key for this token")
        try:
            claims = self._decoder.decode(
                token,
                key,
                algorithms=[alg],
                audience=self.audience,
                issuer=self.issuer,
                leeway=self.leeway_s,
                options=self._options,  # type: ignore[arg-type]
            )
        except Exception as exc:
            raise JwtRefused(_reason(exc)) from None
        identity = self._identity(claims, digest)
        self._remember(digest, identity)
        return identity

    def _identity(self, claims: dict[str, Any], digest: str) -> JwtIdentity:
        subject = claims.get(self.user_claim)
        if not isinstance(subject, str) or not subject or len(subject) > MAX_CLAIM_CHARS:
            raise JwtRefused("the token names no subject")
        issuer = claims.get("iss", "")
        if not isinstance(issuer, str) or len(issuer) > MAX_CLAIM_CHARS:
            raise JwtRefused("wrong issuer")
        exp = claims.get("exp")
        if not isinstance(exp, int | float) or isinstance(exp, bool) or not exp < 2**53:
            raise JwtRefused("a required claim is missing")  # absent, or no time at all
        name = claims.get(self.name_claim)
        if not isinstance(name, str) or not name.strip():
            name = claims.get("email")
        if not isinstance(name, str) or not name.strip():
            name = subject
        return JwtIdentity(
            issuer=issuer,
            subject=subject,
            name=name.strip()[:200],
            expires_at=float(exp),
            token_hash=digest,
        )

    def _remember(self, digest: str, identity: JwtIdentity) -> None:
        self._verified[digest] = identity
        if len(self._verified) > VERIFIED_CACHE:
            self._verified.popitem(last=False)


def _header(token: str) -> dict[str, Any]:
    """The token's JOSE header, read only to pick the key and algorithm.

    PyJWT parses it again and the signature covers it, so nothing read here is
    trusted on its own; this is 25 times cheaper than ``jwt.get_unverified_header``.
    """
    encoded, dot, _rest = token.partition(".")
    try:
        if not dot or len(encoded) > 2048:
            raise ValueError
        header = orjson.loads(base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)))
    except (ValueError, TypeError, binascii.Error, orjson.JSONDecodeError):
        raise JwtRefused("malformed token") from None
    if not isinstance(header, dict):
        raise JwtRefused("malformed token")
    return header


def _reason(exc: Exception) -> str:
    for kind, reason in _REASONS:
        if isinstance(exc, kind):
            return reason
    return "invalid token"


class JwtUsers:
    """Verified JWTs -> tenet users, by (issuer, subject); one per app.

    The mapping of an (issuer, subject) to its user never changes once made, so
    it is remembered (bounded); the store is written only for a new subject or a
    changed display name.
    """

    def __init__(self, settings: Settings, store: Store) -> None:
        self.verifier = JwtVerifier(settings)
        self._identities = ExternalIdentities(store)
        self._users: OrderedDict[tuple[str, str], ExternalUser] = OrderedDict()

    async def aclose(self) -> None:
        await self.verifier.aclose()

    async def identify(self, token: str) -> tuple[JwtIdentity, ExternalUser]:
        """The token's identity and its user; :class:`JwtRefused` if the token is not good."""
        identity = await self.verifier.verify(token)
        key = (identity.issuer, identity.subject)
        user = self._users.get(key)
        if user is None or user.name != identity.name:
            user = await self._identities.user_for(identity.issuer, identity.subject, identity.name)
            self._users[key] = user
            if len(self._users) > VERIFIED_CACHE:
                self._users.popitem(last=False)
        return identity, user
