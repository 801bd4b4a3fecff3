"""The JWKS refresh policy, on a clock the test turns, against a real provider over HTTP."""

from __future__ import annotations

from tenet.server.jwks import RETRY_AFTER_FAILURE_S, JwksKeys
from tenet.testing_idp import LocalIdentityProvider, SigningKey


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_unknown_kids_fetch_once_per_interval_and_a_keyless_server_retries_sooner() -> None:
    key, rotated = SigningKey.rsa(), SigningKey.ec()
    clock = Clock()
    idp = LocalIdentityProvider([key]).start()
    idp.stop()  # down from the start: the server holds no key
    keys = JwksKeys(jwks_url=idp.jwks_url, refresh_s=300, clock=clock)
    try:
        assert await keys.key(key.kid, "RS256") is None
        assert await keys.key(key.kid, "RS256") is None
        assert keys.fetches == 1  # failed, and not retried at once
        idp.start()
        clock.now += RETRY_AFTER_FAILURE_S
        assert await keys.key(key.kid, "RS256") is not None  # keyless: retried sooner
        assert keys.fetches == 2

        idp.set_keys([key, rotated])
        for i in range(50):
            assert await keys.key(f"unknown-{i}", "RS256") is None
        clock.now += RETRY_AFTER_FAILURE_S  # holding keys: no early retry, however many ask
        assert await keys.key(rotated.kid, "ES256") is None
        assert keys.fetches == 2
        clock.now += 300
        assert await keys.key(rotated.kid, "ES256") is not None  # one fetch per interval
        assert keys.fetches == 3
        assert idp.jwks_requests == 2  # the first fetch never reached the provider

        idp.stop()
        clock.now += 300  # stale: refreshed in the background, the cached key still answers
        assert await keys.key(key.kid, "RS256") is not None
        assert await keys.key(rotated.kid, "ES256") is not None
    finally:
        await keys.aclose()
        idp.stop()
