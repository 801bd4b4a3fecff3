"""``tenet bench --auth jwt``: what signing in with a JWT costs per request.

Three measurements, in this process, against a real provider stand-in
(:class:`~tenet.testing_idp.LocalIdentityProvider` serving its JWKS over HTTP):

* ``verify``: :meth:`JwtVerifier.verify` of a token never seen before whose key
  is cached (the signature is checked every time), for RS256 and ES256: the cost
  each new token pays once. Goal: p50 under 100 µs. Measured token by token,
  interleaved (so load on the machine hits all alike), with:

  * ``signature``: the library's signature check alone on the same token
    (PyJWT's algorithm, i.e. ``cryptography``): the floor no verifier built on
    it can go under; ``overhead_us`` is the verifier's p50 above it.
* ``verify_repeat``: the same token again (what a client sending one token on
  every request pays): a hash and a lookup.
* ``sign_in``: the whole sign-in of a request (``authenticate``, on a running
  server's state) with a tenet token (a store lookup), with a new JWT each time
  (signature checked, user found) and with one JWT repeated, and the ratio of the
  new JWT's median to the token's.

The JWKS is fetched once for the whole run (``jwks_fetches``), however many
tokens are verified.
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import jwt

from ..server.auth import authenticate
from ..server.jwt_auth import JwtVerifier
from ..settings import Settings
from ..testing import running_server
from ..testing_idp import LocalIdentityProvider, SigningKey

#: The p50 a cached-key verification should stay under (µs).
VERIFY_P50_GOAL_US = 100.0


def _percentiles_us(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)

    def at(p: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(p * len(ordered)))] * 1e6, 1)

    return {"p50_us": at(0.5), "p90_us": at(0.9), "p99_us": at(0.99)}


async def _verify_costs(idp: LocalIdentityProvider, requests: int) -> dict[str, Any]:
    verifier = JwtVerifier(Settings(**idp.settings()))
    try:
        result: dict[str, Any] = {}
        for key in idp.keys:
            tokens = [idp.token(f"user-{i}", key=key, jti=str(i)) for i in range(requests)]
            await verifier.verify(tokens[0])  # the JWKS fetch, outside the timing
            public = jwt.PyJWK(key.public_jwk(), algorithm=key.alg)

            def signature_only(token: str, public: jwt.PyJWK = public) -> None:
                signing_input, _, signature = token.encode().rpartition(b".")
                if not public.Algorithm.verify(
                    signing_input, public.key, jwt.utils.base64url_decode(signature)
                ):
                    raise AssertionError("a token of the provider did not verify")

            fresh, floor = [], []
            for token in tokens[1:]:  # interleaved: load on the machine hits both
                started = time.perf_counter()
                signature_only(token)
                floor.append(time.perf_counter() - started)
                started = time.perf_counter()
                await verifier.verify(token)
                fresh.append(time.perf_counter() - started)
            repeat = []
            for _ in range(requests):
                started = time.perf_counter()
                await verifier.verify(tokens[0])
                repeat.append(time.perf_counter() - started)
            result[key.alg] = {
                "verify": _percentiles_us(fresh),
                "signature": _percentiles_us(floor),
                "overhead_us": round(
                    (statistics.median(fresh) - statistics.median(floor)) * 1e6, 1
                ),
                "verify_repeat": _percentiles_us(repeat),
            }
        assert verifier.keys is not None
        result["jwks_fetches"] = verifier.keys.fetches
        return result
    finally:
        await verifier.aclose()


async def _sign_in_costs(idp: LocalIdentityProvider, requests: int) -> dict[str, Any]:
    """:func:`~tenet.server.auth.authenticate` as a request runs it, on a real server's state:
    a tenet token (a store lookup), a new JWT each time, and one JWT again and again."""
    with tempfile.TemporaryDirectory(prefix="tenet-bench-auth-") as folder:
        settings = Settings(
            database_url=f"sqlite+aiosqlite:///{Path(folder) / 'bench.db'}",
            **{**idp.settings(), "auth": "both"},
        )
        async with running_server(settings) as server:
            state = server.app.state.tenet
            _user_id, api_token = await server.create_user("bench")
            jwts = [idp.token("bench-jwt", jti=str(i)) for i in range(requests + 1)]
            await authenticate(state, jwts[0])  # makes the user and fetches the JWKS

            async def timed(token: str) -> float:
                started = time.perf_counter()
                await authenticate(state, token)
                return time.perf_counter() - started

            token_s, jwt_s, repeat_s = [], [], []
            for i in range(requests):  # interleaved, so load on the machine hits all three
                token_s.append(await timed(api_token))
                jwt_s.append(await timed(jwts[i + 1]))
                repeat_s.append(await timed(jwts[0]))
    token_p50 = statistics.median(token_s)
    return {
        "token": _percentiles_us(token_s),
        "jwt_new": _percentiles_us(jwt_s),
        "jwt_repeat": _percentiles_us(repeat_s),
        "jwt_new_over_token": round(statistics.median(jwt_s) / token_p50, 2),
    }


def run_auth_bench(requests: int = 2000) -> dict[str, Any]:
    """Measure; see the module docstring. ``requests`` per measurement."""
    with LocalIdentityProvider([SigningKey.rsa(), SigningKey.ec()]) as idp:
        verify = asyncio.run(_verify_costs(idp, requests))
        sign_in = asyncio.run(_sign_in_costs(idp, max(100, requests // 4)))
    worst = max(verify[alg]["verify"]["p50_us"] for alg in ("RS256", "ES256"))
    return {
        "requests": requests,
        "verify": verify,
        "sign_in": sign_in,
        "goal_p50_us": VERIFY_P50_GOAL_US,
        "ok": worst < VERIFY_P50_GOAL_US,
        "worst_p50_us": worst,
    }
