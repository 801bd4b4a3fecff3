"""Conversations and quotas in a cluster: both come from the shared store, not a process."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
from cluster_support import cluster


async def _run(http: httpx.AsyncClient, url: str, thread: str, text: str) -> httpx.Response:
    return await http.post(
        f"{url}/v1/threads/{thread}/runs", json={"agent": "assistant", "input": text}
    )


async def _finished(http: httpx.AsyncClient, url: str, run_id: str) -> dict[str, Any]:
    for _ in range(300):
        run = (await http.get(f"{url}/v1/runs/{run_id}")).json()
        if run["status"] in ("completed", "failed", "cancelled"):
            return run
        await asyncio.sleep(0.1)
    raise AssertionError(f"run {run_id} did not finish")


async def test_the_daily_quota_holds_across_processes(postgres_url: str, tmp_path: Path) -> None:
    async with cluster(postgres_url, tmp_path, nodes=2, user_tokens_per_day="1") as c:
        _, token = await c.user("remembers")
        _, other_token = await c.user("other")
        first, second = c.nodes[0].url, c.nodes[1].url
        auth = {"Authorization": f"Bearer {token}"}
        async with httpx.AsyncClient(headers=auth, timeout=30) as http:
            thread = (await http.post(f"{first}/v1/threads", json={})).json()["id"]
            accepted = await _run(http, first, thread, "the sky is green")
            assert accepted.status_code == 202
            assert (await _finished(http, first, accepted.json()["id"]))["status"] == "completed"
            # Every process reads the day's tokens from the store: none lets another run in.
            for url in (first, second):
                refused = await _run(http, url, thread, "what did I say first?")
                assert refused.status_code == 429, refused.text
                assert refused.json()["error"]["code"] == "quota_exceeded"
        async with httpx.AsyncClient(
            headers={"Authorization": f"Bearer {other_token}"}, timeout=30
        ) as http:
            thread = (await http.post(f"{first}/v1/threads", json={})).json()["id"]
            ok = await _run(http, second, thread, "my name is Oda")
            assert ok.status_code == 202  # another user's quota is their own
            await _finished(http, second, ok.json()["id"])
            # Its usage, summed from the store by another process, is its run alone.
            usage = (await http.get(f"{first}/v1/me/usage")).json()
            assert usage["runs"] == 1 and usage["usage"]["model_calls"] == 1


async def test_turn_two_on_another_process_is_sent_turn_one(
    postgres_url: str, tmp_path: Path
) -> None:
    async with cluster(postgres_url, tmp_path, nodes=2) as c:
        _, token = await c.user("wanderer")
        first, second = c.nodes[0].url, c.nodes[1].url
        async with httpx.AsyncClient(
            headers={"Authorization": f"Bearer {token}"}, timeout=30
        ) as http:
            thread = (await http.post(f"{first}/v1/threads", json={})).json()["id"]
            answers = []
            for i, text in enumerate(["the sky is green", "what is 2+2?", "what did I say first?"]):
                url = (first, second)[i % 2]
                run = (await _run(http, url, thread, text)).json()
                answers.append((await _finished(http, url, run["id"]))["output"])
    assert answers[-1] == "You first said: the sky is green"
