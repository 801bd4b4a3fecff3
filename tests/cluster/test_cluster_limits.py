"""Per-user limits hold across the processes of a cluster, under concurrent requests."""

from __future__ import annotations

import asyncio
from pathlib import Path

import asyncpg
import httpx
from cluster_support import cluster
from sqlalchemy.engine import make_url


async def _burst(urls: list[str], token: str, path: str, n: int) -> list[int]:
    """``n`` POSTs at once, spread over every process; their status codes."""
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(headers=headers, timeout=30) as http:
        answers = await asyncio.gather(
            *(http.post(urls[i % len(urls)] + path, json={}) for i in range(n))
        )
    return [a.status_code for a in answers]


async def test_token_and_thread_caps_are_exact_across_two_processes(
    postgres_url: str, tmp_path: Path
) -> None:
    async with cluster(
        postgres_url,
        tmp_path,
        nodes=2,
        max_tokens_per_user="3",
        max_threads_per_user="5",
        user_rate="0",
    ) as c:
        urls = [n.url for n in c.nodes]
        _, token = await c.user("capped")
        _, other = await c.user("neighbour")
        for _ in range(3):  # several rounds: the race, when there is one, shows in one
            await _burst(urls, token, "/v1/tokens", 30)
            await _burst(urls, token, "/v1/threads", 30)
        async with httpx.AsyncClient(headers={"Authorization": f"Bearer {token}"}) as http:
            threads = (await http.get(urls[0] + "/v1/threads", params={"limit": 100})).json()
        dsn = make_url(postgres_url).set(drivername="postgresql")
        conn = await asyncpg.connect(dsn.render_as_string(hide_password=False))
        try:
            tokens = await conn.fetchval(
                "SELECT count(*) FROM tokens t JOIN users u ON u.id = t.user_id"
                " WHERE u.name = 'capped'"
            )
        finally:
            await conn.close()
        assert tokens == 3, "the first token and two more"
        assert len(threads["data"] if isinstance(threads, dict) else threads) == 5
        # The neighbour is not limited by the first user's caps.
        assert set(await _burst(urls, other, "/v1/threads", 4)) == {201}


async def test_request_rate_and_connection_limits_are_per_user_across_processes(
    postgres_url: str, tmp_path: Path
) -> None:
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed

    async with cluster(
        postgres_url,
        tmp_path,
        nodes=2,
        user_rate="0.1",
        user_burst="20",
        ws_max_connections="2",
        sse_max_streams="1",
    ) as c:
        urls = [n.url for n in c.nodes]
        _, token = await c.user("limited")
        _, other = await c.user("unaffected")
        headers = {"Authorization": f"Bearer {token}"}
        async with httpx.AsyncClient(headers=headers, timeout=30) as http:
            codes = [(await http.get(urls[i % 2] + "/v1/me")).status_code for i in range(60)]
        # One bucket of 20 for the user, not one per process (40 before).
        assert codes.count(200) <= 21 and codes.count(429) >= 39, codes.count(200)
        async with httpx.AsyncClient(
            headers={"Authorization": f"Bearer {other}"}, timeout=30
        ) as http:
            assert (await http.get(urls[1] + "/v1/me")).status_code == 200

        _, token = await c.user("sockets")
        headers = {"Authorization": f"Bearer {token}"}
        ws_urls = [u.replace("http://", "ws://") + "/v1/ws" for u in urls]
        async with (
            connect(ws_urls[0], additional_headers=headers) as first,
            connect(ws_urls[0], additional_headers=headers) as second,
        ):
            for ws in (first, second):
                assert '"ready"' in await ws.recv()
            async with connect(ws_urls[1], additional_headers=headers) as third:
                try:
                    await asyncio.wait_for(third.recv(), 10)
                    code = None
                except ConnectionClosed as exc:
                    code = exc.rcvd.code if exc.rcvd else None
                assert code == 4429, "the user's third socket, on another process"
        async with httpx.AsyncClient(headers=headers, timeout=30) as http:
            thread = (await http.post(urls[0] + "/v1/threads", json={})).json()["id"]
            path = f"/v1/threads/{thread}/stream"
            async with http.stream("GET", urls[0] + path) as open_stream:
                assert open_stream.status_code == 200
                chunks = open_stream.aiter_bytes()  # kept: a dropped iterator ends the stream
                await chunks.__anext__()  # the stream is registered once it has begun
                second_stream = await http.get(urls[1] + path)
                assert second_stream.status_code == 429
            # Closed: its place is given back at once, on any process.
            for _ in range(100):
                async with http.stream("GET", urls[1] + path) as again:
                    if again.status_code == 200:
                        break
                await asyncio.sleep(0.05)
            assert again.status_code == 200
