"""Limits that protect the many from the one, each checked on a real server."""

from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path

from server_support import close_code, http, new_user, ready, recv, send, ws_connect

from tenet import Settings
from tenet.testing import running_server

README = Path(__file__).resolve().parents[2] / "README.md"


async def test_body_frame_and_input_sizes_are_refused_and_the_socket_stays_open(
    make_settings,
) -> None:
    settings = make_settings(max_body_bytes=4096, ws_max_frame_bytes=2048, max_input_chars=100)
    async with running_server(settings) as server:
        alice = await new_user(server)
        async with http(server, alice) as c:
            thread = (await c.post("/v1/threads")).json()["id"]
            big = await c.post(f"/v1/threads/{thread}/runs", content=b"x" * 5000)
            assert (big.status_code, big.json()["error"]["code"]) == (413, "too_large")
            long = await c.post(
                f"/v1/threads/{thread}/runs", json={"agent": "assistant", "input": "y" * 101}
            )
            assert (long.status_code, long.json()["error"]["code"]) == (413, "too_large")
        async with ws_connect(server, alice) as ws:
            await ready(ws)
            await send(ws, {"type": "run", "agent": "assistant", "input": "q" * 101, "ref": "r"})
            assert (await recv(ws))["code"] == "too_large"
            await send(ws, {"type": "ping", "ref": "alive"})
            assert await recv(ws) == {"type": "pong", "ref": "alive"}


async def test_threads_tokens_and_connections_per_user_are_capped_for_that_user_only(
    make_settings,
) -> None:
    settings = make_settings(max_threads_per_user=2, max_tokens_per_user=2, ws_max_connections=2)
    async with running_server(settings) as server:
        alice, bob = await new_user(server), await new_user(server)
        async with http(server, alice) as a, http(server, bob) as b:
            assert [(await a.post("/v1/threads")).status_code for _ in range(3)] == [201, 201, 429]
            assert (await b.post("/v1/threads")).status_code == 201  # bob is not affected
            codes = [(await a.post("/v1/tokens")).status_code for _ in range(2)]
            assert codes == [201, 429]  # the first token counts: two in all
            assert (await b.post("/v1/tokens")).status_code == 201
        async with ws_connect(server, alice) as ws1, ws_connect(server, alice) as ws2:
            await ready(ws1)
            await ready(ws2)
            async with ws_connect(server, alice) as ws3:
                assert await close_code(ws3) == 4429
            async with ws_connect(server, bob) as other:
                await ready(other)  # another user still gets in


async def test_request_rate_is_limited_per_user_with_retry_after(make_settings) -> None:
    settings = make_settings(user_rate=1.0, user_burst=5)
    async with running_server(settings) as server:
        alice, bob = await new_user(server), await new_user(server)
        async with http(server, alice) as a, http(server, bob) as b:
            codes = [(await a.get("/v1/me")).status_code for _ in range(5)]
            assert codes == [200] * 5
            limited = await a.get("/v1/me")
            assert limited.status_code == 429
            assert limited.json()["error"]["code"] == "rate_limited"
            assert int(limited.headers["Retry-After"]) >= 1
            assert (await b.get("/v1/me")).status_code == 200  # bob has his own bucket
            # WebSocket frames draw on the same bucket.
            async with ws_connect(server, alice) as ws:
                await ready(ws)
                await send(ws, {"type": "ping", "ref": "p"})
                frame = await recv(ws)
                assert (frame["type"], frame["code"]) == ("error", "rate_limited")
                await asyncio.sleep(1.1)  # 1/s: a token is back
                await send(ws, {"type": "ping", "ref": "p2"})
                assert await recv(ws) == {"type": "pong", "ref": "p2"}
            await asyncio.sleep(1.1)
            assert (await a.get("/v1/me")).status_code == 200


def test_token_bucket_refills_at_the_rate_and_caps_at_the_burst() -> None:
    from tenet.sessions import UserSession

    s = UserSession("usr_x")
    now = time.monotonic()
    assert all(s.take(2.0, 3, now) is None for _ in range(3))
    wait = s.take(2.0, 3, now)
    assert wait is not None and 0.4 < wait <= 0.5
    assert s.take(2.0, 3, now + 0.5) is None  # one token back after 1/rate
    assert [s.take(2.0, 3, now + 100) is None for _ in range(4)] == [True, True, True, False]
    assert UserSession("usr_y").take(0.0, 1, now) is None  # rate 0: no limit


def test_every_setting_is_documented_in_the_readme() -> None:
    documented = set(re.findall(r"TENET_[A-Z_]+", README.read_text()))
    missing = {f"TENET_{name.upper()}" for name in Settings.model_fields} - documented
    assert not missing, f"settings missing from README's table: {sorted(missing)}"


async def test_defaults_are_sensible() -> None:
    s = Settings()
    assert s.user_rate > 0 and s.user_burst >= s.user_rate
    assert s.shutdown_grace_s > 0
    assert s.cors_origins is None
    assert s.max_body_bytes <= 1024 * 1024 and s.ws_max_frame_bytes <= 1024 * 1024
