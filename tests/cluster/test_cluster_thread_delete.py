"""Deleting a thread in a cluster stops its runs on every process first.

The thread's running run executes on either process and more wait queued; the
delete is sent to a process chosen regardless. Every run is cancelled and
waited for before the thread goes: the delete answers 204, all of them are 404
afterwards, and no process fails to store an event of the deleted thread.
"""

from __future__ import annotations

import asyncio
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


async def test_a_thread_being_deleted_on_one_process_accepts_no_run_on_another(
    postgres_url: str, tmp_path: Path
) -> None:
    """While process A's delete waits for a run slow to stop, process B refuses a run (404).

    The run refused on B never runs; once the run stops, A's delete succeeds.
    """
    async with cluster(
        postgres_url,
        tmp_path,
        nodes=2,
        app="cluster_agents:registry",
        dead_after_beats="30",  # a loaded machine's slow heartbeat is no takeover here
    ) as c:
        _, token = await c.user("slow-deleter")
        headers = {"Authorization": f"Bearer {token}"}
        node_a, node_b = c.nodes
        async with (
            httpx.AsyncClient(base_url=node_a.url, headers=headers, timeout=60) as a,
            httpx.AsyncClient(base_url=node_b.url, headers=headers, timeout=60) as b,
        ):
            for round_ in range(3):
                gate = tmp_path / f"stop-{round_}"
                thread = (await a.post("/v1/threads")).json()["id"]
                body = {"agent": "slow_stop", "input": str(gate)}
                first = (await a.post(f"/v1/threads/{thread}/runs", json=body)).json()["id"]
                for _ in range(600):  # bounded: until the run's tool is running
                    events = (await a.get(f"/v1/threads/{thread}/events")).json()
                    if any(e["type"] == "tool_executing" for e in events):
                        break
                    await asyncio.sleep(0.02)
                else:
                    raise AssertionError("the run's tool never started")
                delete = asyncio.create_task(a.delete(f"/v1/threads/{thread}"))
                for _ in range(600):  # bounded: until A's delete has asked the run to stop
                    if (await a.get(f"/v1/runs/{first}")).json()["status"] == "cancelling":
                        break
                    await asyncio.sleep(0.02)
                else:
                    raise AssertionError("the delete never cancelled the run")
                r = await b.post(f"/v1/threads/{thread}/runs", json=body)
                assert r.status_code == 404, (round_, r.status_code, r.text)
                assert r.json()["error"]["code"] == "not_found"
                assert not delete.done()  # the delete was in progress all along
                gate.touch()
                r = await delete
                assert r.status_code == 204, r.text
                assert (await b.get(f"/v1/threads/{thread}")).status_code == 404
                for node in c.nodes:
                    assert await _executing(node.url, c.admin_token) == 0, node.url
        logs = "".join(node.log.read_text(errors="replace") for node in c.nodes)
    assert "ForeignKeyViolation" not in logs and "foreign key" not in logs
