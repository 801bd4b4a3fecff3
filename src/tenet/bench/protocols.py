"""``tenet bench --protocol ag-ui``: events/s over AG-UI against tenet's own SSE, one server.

One ``tenet serve`` process (fresh SQLite file) and ``users`` users, each doing
``runs`` runs of the benchmark agent one after another, all users at once, once
per protocol, in the order tenet, AG-UI, AG-UI, tenet (so drift in the machine's
load falls on both alike):

* **tenet SSE**: the user opens ``GET /v1/threads/{id}/stream?after=<last seq>``,
  submits ``POST /v1/threads/{id}/runs`` and reads until the run's terminal event;
* **AG-UI**: the user sends ``POST /v1/agents/benchmark/ag-ui`` and reads until
  ``RUN_FINISHED``.

Both deliver the same tenet events (each AG-UI message group carries the seq of
the tenet event it was made from), so the figure compared is tenet events
delivered per second over the whole phase; the AG-UI events sent for them are
reported too. The ratio AG-UI / tenet is the result (goal: at least 0.8). The
clients run in this process; their CPU time is reported beside the server's.
"""

from __future__ import annotations

import asyncio
import resource
import secrets
import time
from typing import Any

import httpx
import orjson

from .procs import ServerProcess, raise_file_limit
from .runner import Progress, _no_progress, _Target, create_users

#: The goal of the comparison: AG-UI within 80% of tenet's own SSE.
GOAL_RATIO = 0.8
_TERMINAL = frozenset({"agent_completed", "agent_error", "run_cancelled"})


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def _sse_messages(response: httpx.Response) -> Any:
    """Each SSE message of ``response`` as ``(id or None, data)``."""
    event_id: str | None = None
    data: str | None = None
    async for line in response.aiter_lines():
        if not line:
            if data is not None:
                yield event_id, data
            event_id, data = None, None
        elif line.startswith("id: "):
            event_id = line[4:]
        elif line.startswith("data: "):
            data = line[6:]


async def _tenet_user(http: httpx.AsyncClient, token: str, runs: int, input: str) -> list[int]:
    headers = {"Authorization": f"Bearer {token}"}
    thread = (await http.post("/v1/threads", json={}, headers=headers)).json()["id"]
    last = 0
    counts = [0, 0]  # tenet events, messages
    for _ in range(runs):
        async with http.stream(
            "GET", f"/v1/threads/{thread}/stream", params={"after": last}, headers=headers
        ) as r:
            r.raise_for_status()
            submitted = await http.post(
                f"/v1/threads/{thread}/runs",
                json={"agent": "benchmark", "input": input},
                headers=headers,
            )
            submitted.raise_for_status()
            run_id = submitted.json()["id"]
            async for _id, data in _sse_messages(r):
                event = orjson.loads(data)
                counts[0] += 1
                counts[1] += 1
                last = event["seq"]
                if event["run_id"] == run_id and event["type"] in _TERMINAL:
                    if event["type"] != "agent_completed" or event.get("depth") == 0:
                        break
    return counts


async def _ag_ui_user(http: httpx.AsyncClient, token: str, runs: int, input: str) -> list[int]:
    headers = {"Authorization": f"Bearer {token}"}
    thread = "bench-" + secrets.token_hex(4)
    counts = [0, 0]
    for i in range(runs):
        body = {
            "threadId": thread,
            "runId": f"r{i}",
            "messages": [{"id": f"m{i}", "role": "user", "content": input}],
            "tools": [],
            "context": [],
        }
        async with http.stream(
            "POST", "/v1/agents/benchmark/ag-ui", json=body, headers=headers
        ) as r:
            r.raise_for_status()
            async for event_id, data in _sse_messages(r):
                counts[1] += 1
                if event_id is not None:
                    counts[0] += 1  # one tenet event delivered (its group ends here)
                if orjson.loads(data)["type"] in ("RUN_FINISHED", "RUN_ERROR"):
                    break
    return counts


async def _phase(
    protocol: str, url: str, tokens: list[str], runs: int, input: str
) -> dict[str, Any]:
    one = _tenet_user if protocol == "tenet" else _ag_ui_user
    limits = httpx.Limits(max_connections=2 * len(tokens) + 8, max_keepalive_connections=None)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=120) as http:
        cpu0, t0 = _cpu(), time.perf_counter()
        results = await asyncio.gather(*(one(http, t, runs, input) for t in tokens))
        wall, cpu = time.perf_counter() - t0, _cpu() - cpu0
    events = sum(r[0] for r in results)
    messages = sum(r[1] for r in results)
    return {
        "protocol": protocol,
        "wall_s": round(wall, 3),
        "tenet_events": events,
        "messages": messages,
        "events_per_s": round(events / wall, 1) if wall else None,
        "messages_per_s": round(messages / wall, 1) if wall else None,
        "client_cpu_s": round(cpu, 2),
    }


def run_protocol_bench(
    *, users: int = 100, runs: int = 5, events: int = 25, progress: Progress = _no_progress
) -> dict[str, Any]:
    """The comparison (see the module docstring); returns the report (JSON-able)."""
    raise_file_limit()
    token = secrets.token_urlsafe(24)
    env = {"TENET_MAX_RUNS": str(max(256, users))}
    input = f"latency_ms=0 events={events}"
    with ServerProcess("tenet", admin_token=token, env=env) as server:
        target = _Target.started("tenet", server, token)
        tokens = create_users(target, users, f"proto-{secrets.token_hex(3)}", progress)
        asyncio.run(_phase("ag-ui", server.url, tokens[:2], 1, input))  # warm both paths
        asyncio.run(_phase("tenet", server.url, tokens[:2], 1, input))
        phases = []
        for i, protocol in enumerate(("tenet", "ag-ui", "ag-ui", "tenet")):
            progress(f"{protocol} x{users}", i, 4)
            cpu0 = server.cpu_seconds()
            phase = asyncio.run(_phase(protocol, server.url, tokens, runs, input))
            phase["server_cpu_s"] = round(server.cpu_seconds() - cpu0, 2)
            phases.append(phase)
    totals: dict[str, dict[str, float]] = {}
    for phase in phases:
        t = totals.setdefault(phase["protocol"], {"events": 0, "wall_s": 0.0, "messages": 0})
        t["events"] += phase["tenet_events"]
        t["messages"] += phase["messages"]
        t["wall_s"] += phase["wall_s"]
    rate = {p: t["events"] / t["wall_s"] for p, t in totals.items() if t["wall_s"]}
    ratio = round(rate["ag-ui"] / rate["tenet"], 3) if rate.get("tenet") else None
    return {
        "users": users,
        "runs_per_user": runs,
        "events_per_run": events,
        "phases": phases,
        "tenet_sse_events_per_s": round(rate.get("tenet", 0.0), 1),
        "ag_ui_events_per_s": round(rate.get("ag-ui", 0.0), 1),
        "ratio": ratio,
        "goal": GOAL_RATIO,
        "ok": ratio is not None and ratio >= GOAL_RATIO,
    }
