"""Deleting a thread in a cluster stops its runs on every process first.

The thread's running run executes on either process and more wait queued; the
delete is sent to a process chosen regardless. Every run is cancelled and
waited for before the thread goes: the delete answers 204, all of them are 404
afterwards, and no process fails to store an event of the deleted thread.
"""

from __future__ import annotations

from pathlib import Path

import httpx
from cluster_support import cluster


async def _executing(url: str, admin_token: str) -> float:
    """Runs a process is executing now (its ``tenet_runs`` running and cancelling)."""
    async with httpx.AsyncClient(base_url=url, timeout=10) as http:
        r = await http.get("/metrics", headers={"Authorization": f"Bearer {admin_token}"})
    total = 0.0
    for line in r.text.splitlines():
        if line.startswith("tenet_runs{") and (
            'status="running"' in line or 'status="cancelling"' in line
        ):
            total += float(line.rsplit(" ", 1)[1])
    return total


async def test_a_delete_cancels_and_waits_for_runs_on_every_process(
    postgres_url: str, tmp_path: Path
) -> None:
    async with cluster(postgres_url, tmp_path, nodes=2) as c:
        _, token = await c.user("deleter")
        headers = {"Authorization": f"Bearer {token}"}
        for round_ in range(4):
            node_a, node_b = c.nodes[round_ % 2], c.nodes[(round_ + 1) % 2]
            async with (
                httpx.AsyncClient(base_url=node_a.url, headers=headers, timeout=30) as a,
                httpx.AsyncClient(base_url=node_b.url, headers=headers, timeout=30) as b,
            ):
                thread = (await a.post("/v1/threads")).json()["id"]
                body = {"agent": "benchmark", "input": "latency_ms=3000 events=8"}
                runs = [
                    (await a.post(f"/v1/threads/{thread}/runs", json=body)).json()["id"]
                    for _ in range(3)
                ]
                for _ in range(200):  # bounded: until the first run has been claimed
                    if (await a.get(f"/v1/runs/{runs[0]}")).json()["status"] == "running":
                        break
                r = await b.delete(f"/v1/threads/{thread}")
                assert r.status_code == 204, r.text
                # Nothing of the thread still executes, on either process.
                for node in c.nodes:
                    assert await _executing(node.url, c.admin_token) == 0, node.url
                for run_id in runs:
                    assert (await a.get(f"/v1/runs/{run_id}")).status_code == 404
                    assert (await b.get(f"/v1/runs/{run_id}")).status_code == 404
                assert (await a.get(f"/v1/threads/{thread}/events")).status_code == 404
        logs = "".join(node.log.read_text(errors="replace") for node in c.nodes)
    assert "could not store" not in logs
    assert "ForeignKeyViolation" not in logs and "foreign key" not in logs
