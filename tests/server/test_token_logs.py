"""No log line, at any level, holds a token or a piece of one.

A real ``tenet serve`` at DEBUG (where uvicorn and the WebSocket library log
headers and every frame) is given tokens every way a client may send them; its
whole log is then searched for each token and for every 8-character piece of
each.
"""

from __future__ import annotations

import asyncio
import json

import httpx
from websockets.asyncio.client import connect

from tenet.bench.procs import ServerProcess

ADMIN = "admin-" + "Q7x" * 12


def _pieces(token: str, size: int = 8) -> set[str]:
    secret = token.removeprefix("tnt_")
    return {secret[i : i + size] for i in range(len(secret) - size + 1)}


async def _use_tokens(server: ServerProcess) -> list[str]:
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as c:
        made = await c.post(
            "/v1/users", json={"name": "logged"}, headers={"Authorization": f"Bearer {ADMIN}"}
        )
        token = made.json()["token"]
        auth = {"Authorization": f"Bearer {token}"}
        second = (await c.post("/v1/tokens", headers=auth)).json()["token"]
        assert (await c.get("/v1/me", headers=auth)).status_code == 200
        thread = (await c.post("/v1/threads", headers=auth)).json()["id"]
        wrong = "tnt_" + "Wr0ngT0kenPiece" * 3
        assert (await c.get("/v1/me", headers={"Authorization": f"Bearer {wrong}"})).is_error
    ws_url = server.ws_url
    async with connect(ws_url, additional_headers=auth) as ws:  # the header
        assert json.loads(await ws.recv())["type"] == "ready"
    for extra in ({}, {"pad": "p" * 200}, {"ref": "r" * 100}):
        # A short auth frame, and long ones the library shortens to head...tail.
        async with connect(ws_url) as ws:
            await ws.send(json.dumps({"type": "auth", "token": second, **extra}))
            assert json.loads(await ws.recv())["type"] == "ready"
            await ws.send(json.dumps({"type": "subscribe", "thread_id": thread}))
            await ws.recv()
    async with connect(ws_url) as ws:  # a wrong token in an auth frame
        await ws.send(json.dumps({"type": "auth", "token": wrong, "pad": "w" * 150}))
        await asyncio.sleep(0.2)
    return [ADMIN, token, second, wrong]


def test_a_debug_log_holds_no_token_nor_any_piece_of_one() -> None:
    env = {"TENET_LOG_LEVEL": "DEBUG", "TENET_USER_RATE": "0"}
    with ServerProcess("tenet", admin_token=ADMIN, env=env) as server:
        tokens = asyncio.run(_use_tokens(server))
        log = (server.workdir / "server.log").read_text(errors="replace")
    assert "< TEXT" in log or "TEXT [" in log, "the server did not log frames at DEBUG"
    assert "Authorization" in log or "authorization" in log, "headers were not logged"
    for token in tokens:
        leaked = sorted(p for p in _pieces(token) if p in log)
        assert not leaked, f"pieces of a token are in the log: {leaked[:5]}"
