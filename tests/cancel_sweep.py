"""A sweep of cancels across a run's whole life, checking that every answer tells the truth.

Each round starts a short run and cancels it at a different moment: at once
(queued, or being claimed), after its first event (running), after its k-th
event (running, or finishing), or after its end (finished). The rule checked:
the decision between cancelled and ended is made once. ``cancel_accepted`` (a
WebSocket cancel) or a 202 with ``cancelling``/``cancelled`` (HTTP) comes only
when the run then ends with ``run_cancelled``; otherwise the answer is the run's
terminal status, which its terminal event and ``GET /v1/runs/{id}`` repeat.
Never a 5xx.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
from websockets.asyncio.client import connect

TERMINAL = {"agent_completed", "agent_error", "run_cancelled"}
ENDED = {"agent_completed": "completed", "agent_error": "failed", "run_cancelled": "cancelled"}


async def _recv(ws: Any, timeout: float = 20.0) -> dict[str, Any]:
    return json.loads(await asyncio.wait_for(ws.recv(), timeout))


def _is_end(frame: dict[str, Any], run_id: str) -> bool:
    return (
        frame.get("run_id") == run_id
        and frame.get("type") in TERMINAL
        and (frame["type"] == "run_cancelled" or frame.get("depth") == 0)
    )


async def sweep(
    http_url: str,
    ws_url: str,
    token: str,
    *,
    rounds: int,
    events: int = 6,
    latency_ms: float = 10,
) -> dict[str, int]:
    """Run ``rounds`` runs, cancel each at another moment, assert the rule; returns outcomes."""
    headers = {"Authorization": f"Bearer {token}"}
    outcomes: dict[str, int] = {}
    async with (
        connect(ws_url, additional_headers=headers, open_timeout=10) as ws,
        httpx.AsyncClient(base_url=http_url, headers=headers, timeout=20) as http,
    ):
        assert (await _recv(ws))["type"] == "ready"
        for i in range(rounds):
            moment = i % (events + 2)  # 0: at once; k: after the k-th event; last: after the end
            via_http = (i // (events + 2)) % 2 == 1
            await ws.send(
                json.dumps(
                    {
                        "type": "run",
                        "agent": "benchmark",
                        "input": f"events={events} latency_ms={latency_ms} n={i}",
                    }
                )
            )
            accepted = await _recv(ws)
            assert accepted["type"] == "run_accepted", accepted
            run_id = accepted["run_id"]
            seen = 0
            end: dict[str, Any] | None = None
            answer: dict[str, Any] | None = None
            frames: list[dict[str, Any]] = []

            async def cancel(
                run_id: str = run_id, via_http: bool = via_http, i: int = i
            ) -> dict[str, Any] | None:
                if via_http:
                    r = await http.post(f"/v1/runs/{run_id}/cancel")
                    assert r.status_code == 202, (r.status_code, r.text)
                    return {"http": r.json()}
                await ws.send(json.dumps({"type": "cancel", "run_id": run_id, "ref": f"c{i}"}))
                return None

            sent = moment == 0
            if sent:
                answer = await cancel()
            while end is None or answer is None:
                frame = await _recv(ws)
                frames.append(frame)
                if frame.get("ref") == f"c{i}":
                    answer = frame
                elif frame.get("run_id") == run_id:
                    seen += 1
                    if _is_end(frame, run_id):
                        end = frame
                    if not sent and (seen == moment or end is not None):
                        sent = True
                        answer = await cancel()
            run = (await http.get(f"/v1/runs/{run_id}")).json()
            assert end is not None and answer is not None
            ended = ENDED[end["type"]]
            assert run["status"] == ended, (i, run["status"], end)
            if "http" in answer:
                told = answer["http"]["status"]
                won = told in ("cancelling", "cancelled")
                assert won == (ended == "cancelled"), (i, moment, told, end["type"])
                if not won:
                    assert told == ended, (i, told, ended)
            else:
                won = answer["type"] == "cancel_accepted"
                assert won == (ended == "cancelled"), (i, moment, answer, end["type"])
                if not won:
                    assert answer["type"] == "error" and answer["code"] == "conflict", answer
                    assert answer["status"] == ended, (answer, ended)
                if won:  # accepted is sent before the run's run_cancelled
                    kinds = [f.get("type") for f in frames]
                    assert kinds.index("cancel_accepted") < kinds.index("run_cancelled"), kinds
            key = f"{'http' if via_http else 'ws'}:{'cancelled' if won else ended}"
            outcomes[key] = outcomes.get(key, 0) + 1
    return outcomes
