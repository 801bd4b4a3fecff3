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
