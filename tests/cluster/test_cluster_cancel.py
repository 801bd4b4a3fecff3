"""Cancel versus end in a 2-process cluster: decided once, in the store, answered truthfully.

The sweep of ``tests/cancel_sweep.py`` against two real ``tenet serve``
processes: the client talks to one process while its runs execute on either, and
cancels each run at another moment of its life (queued, being claimed, running,
finishing, finished), over WebSocket and HTTP. ``cancel_accepted`` (or a 202
with ``cancelling``/``cancelled``) is always followed by ``run_cancelled``; any
other answer is the run's terminal status; never a 5xx.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from cluster_support import cluster

from cancel_sweep import sweep

#: Rounds per process the client talks to: every moment, both channels, several times.
ROUNDS = 64


async def test_cancel_is_decided_once_across_processes(postgres_url: str, tmp_path: Path) -> None:
    # The sweep is one user asking as fast as the cluster answers: on an idle machine that
    # is beyond the default request rate, which is shared by the processes (Redis).
    async with cluster(postgres_url, tmp_path, nodes=2, user_rate="0") as c:
        _, token = await c.user("canceller")
        totals: dict[str, int] = {}
        for node in c.nodes:
            ws_url = node.url.replace("http://", "ws://") + "/v1/ws"
            outcomes = await sweep(node.url, ws_url, token, rounds=ROUNDS)
            for key, count in outcomes.items():
                totals[key] = totals.get(key, 0) + count
    print(f"\ncluster cancel outcomes: {totals}")
    assert totals.get("ws:cancelled") and totals.get("ws:completed"), totals
    assert totals.get("http:cancelled") and totals.get("http:completed"), totals


async def test_cancelling_a_queued_run_behind_a_busy_run_of_its_thread(
    postgres_url: str, tmp_path: Path
) -> None:
    """The queued run's ``run_cancelled`` shares its thread with a run writing on another
    process: the cancel is still answered ``cancelled`` (never a 5xx), numbering stays
    gap-free, and the run ahead ends normally."""
    import httpx

    from tenet.audit import thread_violations

    async with cluster(postgres_url, tmp_path, nodes=2, user_rate="0") as c:
        _, token = await c.user("queue-canceller")
        headers = {"Authorization": f"Bearer {token}"}
        statuses: dict[int, int] = {}
        async with (
            httpx.AsyncClient(base_url=c.nodes[0].url, headers=headers, timeout=30) as a,
            httpx.AsyncClient(base_url=c.nodes[1].url, headers=headers, timeout=30) as b,
        ):
            for i in range(12):
                thread = (await a.post("/v1/threads")).json()["id"]
                # The run ahead lasts about a second, so its thread's later runs are still
                # queued when their cancels arrive, even on a loaded machine.
                body = {"agent": "benchmark", "input": "events=50 latency_ms=20"}
                ahead = (await a.post(f"/v1/threads/{thread}/runs", json=body)).json()["id"]
                queued = []
                for _ in range(3):
                    r = await a.post(f"/v1/threads/{thread}/runs", json=body)
                    queued.append(r.json()["id"])
                for run_id in queued:
                    client = (a, b)[i % 2]
                    r = await client.post(f"/v1/runs/{run_id}/cancel")
                    statuses[r.status_code] = statuses.get(r.status_code, 0) + 1
                    assert r.status_code == 202, r.text
                    assert r.json()["status"] in ("cancelled", "cancelling"), r.json()
                for run_id in (ahead, *queued):  # all ended (bounded: 30 s each)
                    for _ in range(300):
                        run = (await a.get(f"/v1/runs/{run_id}")).json()
                        if run["status"] in ("completed", "failed", "cancelled"):
                            break
                        await asyncio.sleep(0.1)
                    assert run["status"] in ("completed", "cancelled"), run
                events = (await a.get(f"/v1/threads/{thread}/events")).json()
                assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
                assert thread_violations(events) == []
                ends = {e["run_id"]: e["type"] for e in events if e["type"] == "run_cancelled"}
                assert set(ends) == set(queued)
    print(f"\ncancel answers: {statuses}")
