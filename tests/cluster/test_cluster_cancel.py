"""Cancel versus end in a 2-process cluster: decided once, in the store, answered truthfully.

The sweep of ``tests/cancel_sweep.py`` against two real ``tenet serve``
processes: the client talks to one process while its runs execute on either, and
cancels each run at another moment of its life (queued, being claimed, running,
finishing, finished), over WebSocket and HTTP. ``cancel_accepted`` (or a 202
with ``cancelling``/``cancelled``) is always followed by ``run_cancelled``; any
other answer is the run's terminal status; never a 5xx.
"""

from __future__ import annotations

from pathlib import Path

from cluster_support import cluster

from cancel_sweep import sweep

#: Rounds per process the client talks to: every moment, both channels, several times.
ROUNDS = 64


async def test_cancel_is_decided_once_across_processes(postgres_url: str, tmp_path: Path) -> None:
    async with cluster(postgres_url, tmp_path, nodes=2) as c:
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
