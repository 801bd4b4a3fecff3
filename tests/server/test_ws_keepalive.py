"""Keep-alive: the server pings every ``TENET_WS_PING_S`` and drops a peer that never answers."""

from __future__ import annotations

import asyncio
import base64
import os

from server_support import new_user, ready, recv, send, ws_connect


async def test_a_peer_that_never_answers_pings_is_dropped(server_factory) -> None:
    async with server_factory(ws_ping_s=0.2) as srv:
        user = await new_user(srv, "mute")
        host, port = srv.url.removeprefix("http://").split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        key = base64.b64encode(os.urandom(16)).decode()
        writer.write(
            (
                "GET /v1/ws HTTP/1.1\r\n"
                f"Host: {host}:{port}\r\n"
                "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
                f"Authorization: Bearer {user.token}\r\n\r\n"
            ).encode()
        )
        status = await asyncio.wait_for(reader.readline(), 5)
        assert b" 101 " in status
        live = srv.app.state.tenet.live
        async with asyncio.timeout(5):
            while not live.of_user(user.user_id):
                await asyncio.sleep(0.02)
        # This peer reads frames but never answers a ping: it is dropped after a ping timeout.
        async with asyncio.timeout(5):
            while live.of_user(user.user_id):
                await asyncio.sleep(0.05)
        writer.close()


async def test_a_peer_that_answers_pings_stays(server_factory) -> None:
    async with server_factory(ws_ping_s=0.2) as srv:
        user = await new_user(srv, "chatty")
        async with ws_connect(srv, user) as ws:
            await ready(ws)
            await asyncio.sleep(1.0)  # several ping rounds, answered by the client library
            await send(ws, {"type": "ping"})
            assert await recv(ws) == {"type": "pong"}
