"""Signing in with the product's own JWTs: users by (issuer, subject), on every path.

A real identity provider stand-in (:class:`tenet.testing_idp.LocalIdentityProvider`)
serves a JWKS and a discovery document over HTTP from its own thread; tokens are
signed with RSA and EC keys made by ``cryptography``.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import jwt
import pytest
from server_support import ServerFactory, http, new_user, ready, recv, send
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from tenet.audit import IsolationAudit
from tenet.client import Client
from tenet.settings import Settings, SettingsError
from tenet.testing import ServerHandle
from tenet.testing_idp import LocalIdentityProvider, SigningKey, sign

SECRET = "a-development-secret-of-at-least-32-chars"


@pytest.fixture
def idp() -> Iterator[LocalIdentityProvider]:
    with LocalIdentityProvider() as provider:
        yield provider


@pytest.fixture
async def jwt_server(
    server_factory: ServerFactory, idp: LocalIdentityProvider
) -> AsyncIterator[ServerHandle]:
    async with server_factory(**idp.settings()) as srv:
        yield srv


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def me(server: ServerHandle, token: str) -> httpx.Response:
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
        return await client.get("/v1/me", headers=bearer(token))


async def ws_close_code(server: ServerHandle, token: str, *, header: bool) -> int | None:
    """Open a socket with ``token`` (header or auth frame); the close code it gets, or None
    if it was let in."""
    headers = bearer(token) if header else None
    async with connect(server.ws_url, additional_headers=headers, open_timeout=5) as ws:
        if not header:
            await send(ws, {"type": "auth", "token": token})
        try:
            frame = await recv(ws, timeout=8)
        except ConnectionClosed as exc:
            return exc.rcvd.code if exc.rcvd else None
        assert frame["type"] == "ready", frame
        return None


async def close_code_while_pinging(ws: Any, within_s: float) -> int | None:
    """Ping an open socket until the server closes it (within ``within_s``); its close code."""
    with pytest.raises(ConnectionClosed) as closed:
        async with asyncio.timeout(within_s):
            while True:
                await send(ws, {"type": "ping"})
                await recv(ws)
                await asyncio.sleep(0.2)
    return closed.value.rcvd.code if closed.value.rcvd else None


# Settings ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "named"),
    [
        ({"auth": "jwt"}, "TENET_AUTH_JWKS_URL"),
        (
            {"auth": "jwt", "auth_jwks_url": "http://x/jwks", "auth_jwt_secret": SECRET},
            "exactly one",
        ),
        ({"auth": "jwt", "auth_jwks_url": "http://x/jwks", "auth_audience": "a"}, "ISSUER"),
        ({"auth": "both", "auth_jwks_url": "http://x/jwks", "auth_issuer": "i"}, "AUDIENCE"),
        (
            {
                "auth": "jwt",
                "auth_jwks_url": "http://x/jwks",
                "auth_issuer": "i",
                "auth_audience": "a",
                "auth_algorithms": "RS256,HS256",
            },
            "TENET_AUTH_ALGORITHMS",
        ),
        ({"auth": "jwt", "auth_jwt_secret": "short"}, "TENET_AUTH_JWT_SECRET"),
        ({"auth": "jwt", "auth_jwt_secret": SECRET, "auth_algorithms": "none"}, "ALGORITHMS"),
        ({"auth": "jwt", "auth_jwks_url": "file:///etc/passwd"}, "TENET_AUTH_JWKS_URL"),
        ({"auth": "jwt", "auth_jwt_secret": SECRET, "auth_user_claim": " "}, "USER_CLAIM"),
    ],
)
def test_settings_that_cannot_work_fail_at_start_naming_the_variable(
    values: dict[str, Any], named: str
) -> None:
    with pytest.raises(SettingsError) as caught:
        Settings(**values)
    message = str(caught.value)
    assert named in message
    assert SECRET not in message and "short" not in message.split("error")[-1]


def test_a_secret_alone_accepts_hs256() -> None:
    settings = Settings(auth="jwt", auth_jwt_secret=SECRET)
    assert settings.auth_algorithm_list == ["HS256"]


# Users ------------------------------------------------------------------------------------------


async def test_a_jwt_signs_in_its_subject_made_on_first_use(
    jwt_server: ServerHandle, idp: LocalIdentityProvider
) -> None:
    rsa_key, ec_key = idp.keys
    first = await me(jwt_server, idp.token("auth0|alice", key=rsa_key, name="Alice"))
    assert first.status_code == 200, first.text
    body = first.json()
    assert body["issuer"] == idp.issuer
    assert body["subject"] == "auth0|alice"
    assert body["name"] == "Alice"
    again = await me(jwt_server, idp.token("auth0|alice", key=ec_key, name="Alice Liddell"))
    assert again.status_code == 200, again.text
    assert again.json()["user_id"] == body["user_id"]
    assert again.json()["name"] == "Alice Liddell"  # the display name is kept current
    other = await me(jwt_server, idp.token("auth0|bob", email="bob@example.com"))
    assert other.json()["user_id"] != body["user_id"]
    assert other.json()["name"] == "bob@example.com"


async def test_the_same_subject_from_two_issuers_is_two_users(
    server_factory: ServerFactory,
) -> None:
    key = SigningKey.rsa()
    async with server_factory(auth="jwt", auth_jwt_secret=SECRET) as srv:

        def token(issuer: str) -> str:
            return jwt.encode(
                {"sub": "same", "iss": issuer, "exp": 4102444800}, SECRET, algorithm="HS256"
            )

        one = (await me(srv, token("https://one.example"))).json()
        two = (await me(srv, token("https://two.example"))).json()
        assert one["user_id"] != two["user_id"]
        assert (one["issuer"], two["issuer"]) == ("https://one.example", "https://two.example")
        assert key  # a second provider's key never matters: only (issuer, subject) does


async def test_a_subject_never_becomes_a_user_made_by_name(
    server_factory: ServerFactory, idp: LocalIdentityProvider
) -> None:
    async with server_factory(**{**idp.settings(), "auth": "both"}) as srv:
        alice = await new_user(srv, "alice")
        jwt_alice = (await me(srv, idp.token("alice", name="alice"))).json()
        assert jwt_alice["user_id"] != alice.user_id
        id_named = (await me(srv, idp.token(alice.user_id, name=alice.user_id))).json()
        assert id_named["user_id"] not in (alice.user_id, jwt_alice["user_id"])
        async with http(srv, alice) as client:  # the token user is still itself
            assert (await client.get("/v1/me")).json()["user_id"] == alice.user_id


async def test_the_configured_claims_name_the_user_and_its_display_name(
    server_factory: ServerFactory, idp: LocalIdentityProvider
) -> None:
    async with server_factory(
        **idp.settings(), auth_user_claim="uid", auth_name_claim="nickname"
    ) as srv:
        first = await me(srv, idp.token("same-sub", uid="u-1", nickname="Nick", name="Not This"))
        assert first.status_code == 200, first.text
        assert (first.json()["subject"], first.json()["name"]) == ("u-1", "Nick")
        other = (await me(srv, idp.token("same-sub", uid="u-2", email="two@example.com"))).json()
        assert other["user_id"] != first.json()["user_id"]  # the subject claim is not the key
        assert other["name"] == "two@example.com"  # no nickname: the email
        assert (await me(srv, idp.token("same-sub"))).status_code == 401  # no uid at all


async def test_both_mode_takes_tokens_and_jwts_and_jwt_mode_only_jwts(
    server_factory: ServerFactory, idp: LocalIdentityProvider
) -> None:
    async with server_factory(**idp.settings()) as srv:
        token_user = await new_user(srv)
        assert (await me(srv, token_user.token)).status_code == 401
        assert (await me(srv, idp.token("s1"))).status_code == 200
    async with server_factory(**{**idp.settings(), "auth": "both"}) as srv:
        token_user = await new_user(srv)
        assert (await me(srv, token_user.token)).status_code == 200
        assert (await me(srv, idp.token("s1"))).status_code == 200
    async with server_factory() as srv:  # tokens only: a JWT is just a wrong token
        assert (await me(srv, idp.token("s1"))).status_code == 401


async def test_revoking_the_current_jwt_is_refused(
    jwt_server: ServerHandle, idp: LocalIdentityProvider
) -> None:
    async with httpx.AsyncClient(base_url=jwt_server.url) as client:
        r = await client.delete("/v1/tokens/current", headers=bearer(idp.token("s")))
    assert r.status_code == 422
    assert r.json()["error"]["code"] == "invalid"


async def test_users_of_jwts_are_isolated(
    jwt_server: ServerHandle, idp: LocalIdentityProvider
) -> None:
    a, b = bearer(idp.token("a")), bearer(idp.token("b"))
    async with httpx.AsyncClient(base_url=jwt_server.url, timeout=10) as client:
        thread = (await client.post("/v1/threads", headers=a, json={})).json()
        assert (await client.get(f"/v1/threads/{thread['id']}", headers=a)).status_code == 200
        foreign = await client.get(f"/v1/threads/{thread['id']}", headers=b)
        assert foreign.status_code == 404
        assert (await client.get("/v1/threads", headers=b)).json() == []


# Every path -------------------------------------------------------------------------------------


async def test_a_jwt_works_on_every_path(
    jwt_server: ServerHandle, idp: LocalIdentityProvider
) -> None:
    token = idp.token("everywhere")
    async with httpx.AsyncClient(base_url=jwt_server.url, timeout=10) as client:
        thread = (await client.post("/v1/threads", headers=bearer(token), json={})).json()
        async with client.stream(
            "GET", f"/v1/threads/{thread['id']}/stream", headers=bearer(token)
        ) as sse:
            assert sse.status_code == 200
    for header in (True, False):
        assert await ws_close_code(jwt_server, token, header=header) is None


# Refusals ---------------------------------------------------------------------------------------


#: An AG-UI run a good token would start.
AG_UI_RUN = {
    "threadId": "t-1",
    "runId": "r-1",
    "state": {},
    "messages": [{"id": "m-1", "role": "user", "content": "hello"}],
    "tools": [],
    "context": [],
    "forwardedProps": {},
}


def _refused_tokens(idp: LocalIdentityProvider) -> dict[str, str]:
    rsa_key = idp.keys[0]
    stranger = SigningKey.rsa(kid=rsa_key.kid)  # same kid, a key the provider never published
    rs384 = SigningKey(rsa_key.kid, rsa_key.private, "RS384")
    header = jwt.utils.base64url_encode(json.dumps({"alg": "none", "typ": "JWT"}).encode())
    claims = {"sub": "x", "iss": idp.issuer, "aud": idp.audience, "exp": 4102444800}
    payload = jwt.utils.base64url_encode(json.dumps(claims).encode())
    # Key confusion: HS256 "signed" with the RSA public key (PEM) as the HMAC secret.
    signing_input = (
        jwt.utils.base64url_encode(
            json.dumps({"alg": "HS256", "typ": "JWT", "kid": rsa_key.kid}).encode()
        )
        + b"."
        + payload
    )
    mac = hmac.new(rsa_key.public_pem(), signing_input, hashlib.sha256).digest()
    key_confusion = (signing_input + b"." + jwt.utils.base64url_encode(mac)).decode()
    return {
        "alg none": (header + b"." + payload + b".").decode(),
        "HS256 with the RSA public key": key_confusion,
        "algorithm not allowed": sign(rs384, "x", issuer=idp.issuer, audience=idp.audience),
        "expired": idp.token("x", ttl_s=-120),
        "not yet valid": idp.token("x", nbf=4102444000),
        "wrong issuer": idp.token("x", issuer="https://evil.example"),
        "wrong audience": idp.token("x", audience="someone-else"),
        "missing subject": idp.token(None),
        "unknown kid": idp.token("x", kid="never-published"),
        "not signed by the provider": sign(stranger, "x", issuer=idp.issuer, audience=idp.audience),
        "garbage": "not.a.jwt",
        "garbage bytes": "eyJhbGciOiJSUzI1NiJ9.%%%%.@@@@",
        "100 KB": idp.token("x", padding="p" * 100_000),
    }


async def test_every_bad_token_is_refused_401_on_http_sse_and_ws_and_logged_without_it(
    jwt_server: ServerHandle, idp: LocalIdentityProvider, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    thread_id = "thr_whatever"
    for why, token in _refused_tokens(idp).items():
        async with httpx.AsyncClient(base_url=jwt_server.url, timeout=10) as client:
            r = await client.get("/v1/me", headers=bearer(token))
            assert r.status_code == 401, (why, r.status_code, r.text[:200])
            assert r.json()["error"]["code"] == "unauthorized", why
            sse = await client.get(f"/v1/threads/{thread_id}/stream", headers=bearer(token))
            assert sse.status_code == 401, (why, sse.status_code)
            assert sse.json()["error"]["code"] == "unauthorized", why
            ag_ui = await client.post(
                "/v1/agents/assistant/ag-ui", headers=bearer(token), json=AG_UI_RUN
            )
            assert ag_ui.status_code == 401, (why, ag_ui.status_code)
            assert ag_ui.json()["error"]["code"] == "unauthorized", why
        if len(token) < 60_000:  # a 100 KB frame or header is refused before auth is tried
            assert await ws_close_code(jwt_server, token, header=True) == 4401, why
        assert await ws_close_code(jwt_server, token, header=False) == 4401, why
        for record in caplog.records:
            assert token not in record.getMessage(), why
    refusals = [r.getMessage() for r in caplog.records if "JWT was refused" in r.getMessage()]
    assert refusals


async def test_an_unknown_kid_fetches_the_jwks_at_most_once_per_interval(
    jwt_server: ServerHandle, idp: LocalIdentityProvider
) -> None:
    assert (await me(jwt_server, idp.token("s"))).status_code == 200
    fetched = idp.jwks_requests
    tokens = [idp.token("s", kid=f"made-up-{i}") for i in range(30)]
    answers = await asyncio.gather(*(me(jwt_server, t) for t in tokens))
    assert {a.status_code for a in answers} == {401}
    assert idp.jwks_requests == fetched  # fetched moments ago: no new fetch at all


async def test_a_rotated_key_is_fetched_once_and_cached_keys_survive_the_provider(
    server_factory: ServerFactory, idp: LocalIdentityProvider
) -> None:
    old = idp.keys[0]
    async with server_factory(**idp.settings(), auth_jwks_refresh_s=0.2) as srv:
        assert (await me(srv, idp.token("s", key=old))).status_code == 200
        new = SigningKey.ec()
        idp.set_keys([old, new])
        await asyncio.sleep(0.3)  # let the refresh interval pass (no timing is asserted)
        before = idp.jwks_requests
        answers = await asyncio.gather(*(me(srv, idp.token("s", key=new)) for _ in range(20)))
        assert {a.status_code for a in answers} == {200}
        assert idp.jwks_requests - before == 1  # twenty callers, one fetch
        assert (
            answers[0].json()["user_id"]
            == (await me(srv, idp.token("s", key=old))).json()["user_id"]
        )
        idp.stop()  # down: the cached keys keep working, an unknown one is refused
        await asyncio.sleep(0.3)
        assert (await me(srv, idp.token("s", key=old))).status_code == 200
        assert (await me(srv, idp.token("s", kid="after-the-outage"))).status_code == 401
        async with httpx.AsyncClient(base_url=srv.url) as client:
            assert (await client.get("/healthz")).status_code == 200


async def test_a_slow_or_failing_provider_answers_401_in_bounded_time(
    server_factory: ServerFactory, idp: LocalIdentityProvider
) -> None:
    idp.set_delay(30)
    async with server_factory(**idp.settings(discovery=True)) as srv:
        async with httpx.AsyncClient(base_url=srv.url, timeout=5) as client:
            # The bound is the client's timeout: no key in 5 s is a 401, not a hang.
            probes = [client.get("/v1/me", headers=bearer(idp.token("s"))) for _ in range(5)]
            answers = await asyncio.gather(*probes, client.get("/healthz"))
            assert [a.status_code for a in answers] == [401] * 5 + [200]
    idp.set_delay(0)
    idp.set_failing(True)
    async with server_factory(**idp.settings(discovery=True)) as srv:
        assert (await me(srv, idp.token("s"))).status_code == 401


async def test_discovery_finds_the_keys(
    server_factory: ServerFactory, idp: LocalIdentityProvider
) -> None:
    async with server_factory(**idp.settings(discovery=True)) as srv:
        assert (await me(srv, idp.token("s"))).status_code == 200
    assert idp.discovery_requests == 1


# Expiry on an open socket ------------------------------------------------------------------------


async def test_an_open_socket_closes_when_its_jwt_expires(
    server_factory: ServerFactory, idp: LocalIdentityProvider
) -> None:
    async with server_factory(**idp.settings(), auth_leeway_s=0) as srv:
        async with connect(srv.ws_url, additional_headers=bearer(idp.token("s", ttl_s=2))) as ws:
            await ready(ws)
            assert await close_code_while_pinging(ws, within_s=10) == 4401


async def test_the_leeway_keeps_a_socket_open_past_exp_then_it_closes(
    server_factory: ServerFactory, idp: LocalIdentityProvider
) -> None:
    async with server_factory(**idp.settings(), auth_leeway_s=6) as srv:
        token = idp.token("s", ttl_s=0)  # exp is now: only the leeway lets it in
        async with connect(srv.ws_url, additional_headers=bearer(token)) as ws:
            await ready(ws)
            await send(ws, {"type": "ping"})
            assert (await recv(ws))["type"] == "pong"
            assert await close_code_while_pinging(ws, within_s=20) == 4401


async def test_a_fresh_token_keeps_the_socket_open_and_another_users_closes_it(
    server_factory: ServerFactory, idp: LocalIdentityProvider
) -> None:
    async with server_factory(**idp.settings(), auth_leeway_s=0) as srv:
        async with connect(srv.ws_url) as ws:
            await send(ws, {"type": "auth", "token": idp.token("s", ttl_s=4)})
            first = await ready(ws)
            await send(ws, {"type": "auth", "token": idp.token("s", ttl_s=600), "ref": "r1"})
            again = await ready(ws)
            assert again["user_id"] == first["user_id"] and again["ref"] == "r1"
            await asyncio.sleep(4.5)  # past the first token's exp
            await send(ws, {"type": "ping"})
            assert (await recv(ws))["type"] == "pong"
            await send(ws, {"type": "auth", "token": idp.token("someone-else")})
            with pytest.raises(ConnectionClosed) as closed:
                await recv(ws)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 4401


async def test_a_bad_token_on_an_open_socket_closes_it(
    jwt_server: ServerHandle, idp: LocalIdentityProvider
) -> None:
    async with connect(jwt_server.ws_url, additional_headers=bearer(idp.token("s"))) as ws:
        await ready(ws)
        await send(ws, {"type": "auth", "token": idp.token("s", ttl_s=-300)})
        with pytest.raises(ConnectionClosed) as closed:
            await recv(ws)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 4401


async def test_the_python_client_signs_in_with_a_jwt_and_refreshes_it_on_its_socket(
    server_factory: ServerFactory, idp: LocalIdentityProvider
) -> None:
    async with server_factory(**idp.settings(), auth_leeway_s=0) as srv:
        async with Client(srv.url, idp.token("client", ttl_s=5, name="C")) as client:
            assert (await client.me())["subject"] == "client"
            run = await client.run("assistant", "what is 6*7?")
            assert (await run.result())["status"] == "completed"
            await client.set_token(idp.token("client", ttl_s=600))
            await asyncio.sleep(5.5)  # past the first token's exp: the socket was signed in again
            run = await client.run("assistant", "what is 6*7?")
            assert (await run.result())["status"] == "completed"
            assert client.reconnects == 0


async def test_a_stream_opened_with_a_jwt_ends_when_it_expires(
    server_factory: ServerFactory, idp: LocalIdentityProvider
) -> None:
    async with server_factory(**idp.settings(), auth_leeway_s=0) as srv:
        token = idp.token("streamer", ttl_s=600)
        async with httpx.AsyncClient(base_url=srv.url, timeout=10) as client:
            thread = (await client.post("/v1/threads", headers=bearer(token), json={})).json()
            short = idp.token("streamer", ttl_s=3)
            async with client.stream(
                "GET", f"/v1/threads/{thread['id']}/stream", headers=bearer(short)
            ) as sse:
                assert sse.status_code == 200
                async with asyncio.timeout(10):  # ends by itself, though nothing else happens
                    async for _ in sse.aiter_bytes():
                        pass


async def test_a_refreshed_socket_follows_its_new_token_for_revocation(
    server: ServerHandle,
) -> None:
    alice = await new_user(server)
    async with http(server, alice) as client:
        second = (await client.post("/v1/tokens")).json()["token"]
    async with connect(server.ws_url, additional_headers=bearer(alice.token)) as ws:
        await ready(ws)
        await send(ws, {"type": "auth", "token": second})
        await ready(ws)
        async with httpx.AsyncClient(base_url=server.url) as client:
            gone = await client.delete("/v1/tokens/current", headers=bearer(alice.token))
            assert gone.status_code == 204
            await send(ws, {"type": "ping"})
            assert (await recv(ws))["type"] == "pong"  # no longer opened by the revoked token
            gone = await client.delete("/v1/tokens/current", headers=bearer(second))
            assert gone.status_code == 204
        with pytest.raises(ConnectionClosed) as closed:
            await recv(ws)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 4401


async def test_the_isolation_audit_passes_with_canaries_signed_in_by_jwt(
    server_factory: ServerFactory, idp: LocalIdentityProvider
) -> None:
    signed: list[str] = []

    def sign_canary(subject: str) -> str:
        signed.append(subject)
        return idp.token(subject, key=idp.keys[1], name=subject)

    async with server_factory(**idp.settings()) as srv:
        audit = IsolationAudit(srv.url, srv.admin_token, users=4, runs=1, sign_jwt=sign_canary)
        report = await audit.run()
        assert (await new_user(srv)).token  # users made by name exist, but cannot sign in here
    details = {name: c.violations[:5] for name, c in report.checks.items() if c.violations}
    assert report.ok, details
    assert len(signed) == 4
    assert all(check.checked > 0 for check in report.checks.values())


def _hs256(claims: dict[str, Any], headers: dict[str, Any] | None = None) -> str:
    """Signed with the server's secret, whatever the claims (PyJWT would refuse to make some)."""
    header = {"alg": "HS256", "typ": "JWT", **(headers or {})}
    signing_input = b".".join(
        jwt.utils.base64url_encode(json.dumps(part).encode()) for part in (header, claims)
    )
    mac = hmac.new(SECRET.encode(), signing_input, hashlib.sha256).digest()
    return (signing_input + b"." + jwt.utils.base64url_encode(mac)).decode()


async def test_odd_claims_and_headers_are_refused_401_never_500(
    server_factory: ServerFactory,
) -> None:
    far = 4102444800
    odd = {
        "exp beyond floats": _hs256({"sub": "s", "exp": 10**400}),
        "exp a string": _hs256({"sub": "s", "exp": "tomorrow"}),
        "exp true": _hs256({"sub": "s", "exp": True}),
        "no exp": _hs256({"sub": "s"}),
        "sub a number": _hs256({"sub": 7, "exp": far}),
        "sub empty": _hs256({"sub": "", "exp": far}),
        "sub too long": _hs256({"sub": "s" * 300, "exp": far}),
        "iss a list": _hs256({"sub": "s", "iss": ["a"], "exp": far}),
        "nbf far away": _hs256({"sub": "s", "exp": far, "nbf": 10**400}),
        "kid a number": _hs256({"sub": "s", "exp": far}, {"kid": 5}),
        "header not an object": "WzFd.eyJzdWIiOiJzIn0.c2ln",
        "not base64": "!!!.???.***",
        "two parts": "abc.def",
    }
    async with server_factory(auth="jwt", auth_jwt_secret=SECRET) as srv:
        for why, token in odd.items():
            r = await me(srv, token)
            assert r.status_code == 401, (why, r.status_code, r.text[:200])
            assert r.json()["error"]["code"] == "unauthorized", why
        ok = await me(srv, _hs256({"sub": "s", "exp": far, "name": ["not", "a", "name"]}))
        assert ok.status_code == 200 and ok.json()["name"] == "s"  # falls back to the subject
        assert await ws_close_code(srv, "éé.éé.éé", header=False) == 4401  # HTTP can't carry it
