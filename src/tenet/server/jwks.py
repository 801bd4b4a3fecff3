"""An identity provider's signing keys: fetched from its JWKS, kept, refreshed sparingly.

The keys come from ``TENET_AUTH_JWKS_URL``, or from the ``jwks_uri`` of the
provider's OpenID Connect discovery document
(``TENET_AUTH_OIDC_ISSUER`` + ``/.well-known/openid-configuration``). They are
fetched lazily, on the first token that needs one, and kept in memory:

* A token naming a ``kid`` we do not hold triggers one fetch, but the JWKS is
  fetched at most once per ``TENET_AUTH_JWKS_REFRESH_S`` however many such tokens
  arrive (a stream of tokens with made-up ``kid``\\ s cannot turn tenet into a
  load generator against the provider). Concurrent callers share one fetch.
* Keys older than the interval are refreshed in the background while the cached
  ones keep answering, so a key the provider withdrew stops working within about
  one interval.
* A provider that is down or slow never blocks a request for long: a fetch gives
  up after :data:`FETCH_TIMEOUT_S`, the cached keys keep working, and a token
  whose key we do not hold is refused. Only while no key at all is held (the
  provider was unreachable when the server started) may the next fetch come
  sooner, after ``min(interval, RETRY_AFTER_FAILURE_S)``, so that such a server
  does not refuse everyone for a whole interval.

Keys are parsed by PyJWT (:class:`jwt.PyJWK`); no signature code lives here.
Symmetric (``oct``) keys and keys whose ``use`` is not ``sig`` are ignored: a
JWKS publishes public keys, and a shared secret found there is never trusted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

import httpx
import orjson
from jwt import PyJWK
from jwt.exceptions import PyJWKError

log = logging.getLogger("tenet.server.jwks")

#: How long one fetch (discovery and JWKS together) may take before it is given up.
FETCH_TIMEOUT_S = 3.0
#: While no key is held, a failed fetch may be retried this soon (or after the interval).
RETRY_AFTER_FAILURE_S = 10.0
#: A JWKS or discovery document larger than this is refused (they are a few KB).
MAX_DOCUMENT_BYTES = 1024 * 1024

#: Which ``kty`` (and ``crv``) each algorithm family verifies with.
_EC_CURVES = {"ES256": "P-256", "ES384": "P-384", "ES512": "P-521"}


def key_fits(jwk: dict[str, Any], alg: str) -> bool:
    """Whether ``alg`` may be verified with ``jwk`` (its type, curve and declared alg)."""
    declared = jwk.get("alg")
    if declared is not None and declared != alg:
        return False
    kty = jwk.get("kty")
    if alg.startswith(("RS", "PS")):
        return kty == "RSA"
    if alg in _EC_CURVES:
        return kty == "EC" and jwk.get("crv") == _EC_CURVES[alg]
    if alg == "EdDSA":
        return kty == "OKP"
    return False


class JwksKeys:
    """The public keys of one provider, by ``kid``; see the module docstring."""

    def __init__(
        self,
        *,
        jwks_url: str | None = None,
        oidc_issuer: str | None = None,
        refresh_s: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if (jwks_url is None) == (oidc_issuer is None):
            raise ValueError("give exactly one of jwks_url and oidc_issuer")
        self._jwks_url = jwks_url
        self._oidc_issuer = oidc_issuer.rstrip("/") if oidc_issuer else None
        self._refresh_s = refresh_s
        self._clock = clock
        self._client = httpx.AsyncClient(timeout=FETCH_TIMEOUT_S, follow_redirects=False)
        self._jwks: dict[str | None, dict[str, Any]] = {}
        self._parsed: dict[tuple[str | None, str], PyJWK] = {}
        self._attempted_at: float | None = None
        self._fetched_at: float | None = None
        self._last_failed = False
        self._inflight: asyncio.Task[None] | None = None
        #: How many fetches were started (tests and metrics read it).
        self.fetches = 0

    async def aclose(self) -> None:
        if self._inflight is not None:
            self._inflight.cancel()
            with contextlib.suppress(BaseException):
                await self._inflight
        await self._client.aclose()

    # Lookup -----------------------------------------------------------------------------------

    async def key(self, kid: str | None, alg: str) -> PyJWK | None:
        """The key that verifies a token with header ``kid`` and ``alg``, or None.

        Fetches the JWKS first when no key is held for ``kid`` and the refresh
        policy allows; waits at most :data:`FETCH_TIMEOUT_S` for it.
        """
        cached = self._parsed.get((kid, alg))
        if cached is not None:  # the common case: a key already used for this algorithm
            if self._stale():
                self._start_refresh()
            return cached
        jwk = self._find(kid)
        if jwk is None:
            if self._inflight is not None or self._may_fetch():
                await self._refresh()
                jwk = self._find(kid)
        elif self._stale():
            self._start_refresh()  # the cached key answers now; the next token sees new keys
        if jwk is None or not key_fits(jwk, alg):
            return None
        try:
            cached = PyJWK(jwk, algorithm=alg)
        except (PyJWKError, ValueError, TypeError):
            return None
        self._parsed[(kid, alg)] = cached
        return cached

    def _find(self, kid: str | None) -> dict[str, Any] | None:
        if kid is None and len(self._jwks) == 1:
            return next(iter(self._jwks.values()))  # a provider with one key may omit kid
        return self._jwks.get(kid)

    def _may_fetch(self) -> bool:
        if self._attempted_at is None:
            return True
        wait = self._refresh_s
        if self._last_failed and not self._jwks:  # holding no key at all: try again sooner
            wait = min(wait, RETRY_AFTER_FAILURE_S)
        return self._clock() - self._attempted_at >= wait

    def _stale(self) -> bool:
        return (
            self._inflight is None
            and self._fetched_at is not None
            and self._clock() - self._fetched_at >= self._refresh_s
            and self._may_fetch()
        )

    # Fetching ---------------------------------------------------------------------------------

    def _start_refresh(self) -> asyncio.Task[None]:
        if self._inflight is None:
            self._attempted_at = self._clock()
            self.fetches += 1
            self._inflight = asyncio.create_task(self._fetch(), name="jwks-fetch")
            self._inflight.add_done_callback(self._fetch_done)
        return self._inflight

    def _fetch_done(self, task: asyncio.Task[None]) -> None:
        if self._inflight is task:
            self._inflight = None

    async def _refresh(self) -> None:
        """Start a fetch (or join the one under way) and wait for it, bounded."""
        task = self._start_refresh()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(FETCH_TIMEOUT_S + 0.5):
                await asyncio.shield(task)

    async def _fetch(self) -> None:
        try:
            async with asyncio.timeout(FETCH_TIMEOUT_S):
                url = self._jwks_url or await self._discover()
                document = await self._get_json(url)
            keys = _signing_keys(document)
        except Exception as exc:  # any failure: keep what we have, refuse what we lack
            self._last_failed = True
            log.warning("fetching the JWKS failed (%s); the cached keys stay in use", _why(exc))
            return
        self._jwks = keys
        self._parsed = {}  # parsed again on use: a kid may now name another key
        self._fetched_at = self._clock()
        self._last_failed = False
        log.info("fetched the JWKS: %d signing key(s)", len(keys))

    async def _discover(self) -> str:
        assert self._oidc_issuer is not None
        document = await self._get_json(f"{self._oidc_issuer}/.well-known/openid-configuration")
        issuer = document.get("issuer")
        if not isinstance(issuer, str) or issuer.rstrip("/") != self._oidc_issuer:
            raise ValueError("the discovery document names another issuer")
        jwks_uri = document.get("jwks_uri")
        if not isinstance(jwks_uri, str) or not jwks_uri.startswith(("https://", "http://")):
            raise ValueError("the discovery document has no http(s) jwks_uri")
        return jwks_uri

    async def _get_json(self, url: str) -> dict[str, Any]:
        response = await self._client.get(url, headers={"Accept": "application/json"})
        response.raise_for_status()
        if len(response.content) > MAX_DOCUMENT_BYTES:
            raise ValueError("document too large")
        document = orjson.loads(response.content)
        if not isinstance(document, dict):
            raise ValueError("not a JSON object")
        return document


def _signing_keys(document: dict[str, Any]) -> dict[str | None, dict[str, Any]]:
    """The public signing keys of a JWKS document, by ``kid``; refuses a set with none."""
    raw = document.get("keys")
    if not isinstance(raw, list):
        raise ValueError("the JWKS has no keys list")
    keys: dict[str | None, dict[str, Any]] = {}
    for jwk in raw:
        if not isinstance(jwk, dict) or jwk.get("kty") not in ("RSA", "EC", "OKP"):
            continue
        if jwk.get("use", "sig") != "sig" or any(p in jwk for p in ("d", "p", "q", "k")):
            continue  # not for signatures, or holds private material: never use it
        kid = jwk.get("kid")
        if kid is not None and not isinstance(kid, str):
            continue
        try:
            PyJWK(jwk)  # parses, or the key is skipped
        except Exception:
            continue
        keys[kid] = jwk
    if not keys:
        raise ValueError("the JWKS holds no usable signing key")
    return keys


def _why(exc: BaseException) -> str:
    """A short reason for a failed fetch, without response bodies."""
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, httpx.HTTPStatusError):
        return f"HTTP {exc.response.status_code}"
    if isinstance(exc, httpx.HTTPError):
        return type(exc).__name__
    return str(exc)[:200] or type(exc).__name__
