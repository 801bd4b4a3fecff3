"""``tenet bench --paused N``: what runs waiting for a person cost, and how fast they resume.

A tenet server is started in its own process on a fresh SQLite file (so ``/proc``
gives its CPU and memory apart from this driver's). ``N`` ``benchmark`` runs with
``approve=1`` are started at once, each on a thread of its own, ``RUNS_PER_USER`` per
user over one WebSocket each; each pauses on its tool call's approval. Then:

- **memory**: the server's RSS once all ``N`` wait, minus its RSS before they were
  started (users made, sockets open, code warm), divided by ``N``: KiB per paused run
  (goal under 20 KiB). The client's subscriptions to the ``N`` threads are in it, so
  it is an upper bound;
- **CPU while waiting**: the server's CPU seconds over ``wait_s`` seconds of nothing
  but waiting, as milliseconds per second (goal: about 0), beside the same figure
  measured before the runs were started (what an idle server spends: its sweeps);
- **resume latency**: ``sample`` of the paused runs are approved one at a time (the
  others still waiting), each timed from sending the ``approve`` frame to the run's
  next event after it resumed (its ``tool_executing``), and to its
  ``approval_resolved``; p50 goal under 5 ms. Each sampled run ends before the next
  is answered, so the answers do not queue behind one another.

Figures are measured, never derived from the goals.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

import orjson
from websockets.asyncio.client import ClientConnection, connect

from .procs import ServerProcess, raise_file_limit
from .runner import MiB, Progress, _no_progress, _summary_ms, _Target, create_users

#: Runs each simulated user starts (one socket each; under TENET_WS_MAX_SUBSCRIPTIONS and
#: TENET_USER_MAX_QUEUED at their defaults).
RUNS_PER_USER = 50
#: Runs a user starts before reading until they wait.
WAVE = 10
INPUT = "approve=1 events=5"
GOAL_KIB_PER_RUN = 20.0
GOAL_RESUME_P50_MS = 5.0
_TERMINAL = frozenset({"agent_completed", "agent_error", "run_cancelled"})


@dataclass
class _User:
    ws: ClientConnection
    #: run id -> the call id waiting for approval (filled as approval_requested arrives)
    waiting: dict[str, str] = field(default_factory=dict)
    started: int = 0


async def _recv(ws: ClientConnection, timeout_s: float) -> dict[str, Any]:
    return orjson.loads(await asyncio.wait_for(ws.recv(), timeout_s))


async def _pause(user: _User, runs: int, timeout_s: float) -> None:
    """Start ``runs`` runs on new threads, ``WAVE`` at a time, until each waits for approval.

    Waves keep every user's socket read while the server works through the starts (a
    client that sent all its runs at once and then read nothing would be a slow reader).
    """
    while user.started < runs:
        wave = min(WAVE, runs - user.started)
        for _ in range(wave):
            ref = f"p{user.started}"
            user.started += 1
            frame = {"type": "run", "agent": "benchmark", "input": INPUT, "ref": ref}
            await user.ws.send(orjson.dumps(frame).decode())
        while len(user.waiting) < user.started:
            frame = await _recv(user.ws, timeout_s)
            if frame.get("type") == "error":
                raise RuntimeError(f"a run was refused: {frame}")
            if frame.get("type") == "approval_requested":
                user.waiting[frame["run_id"]] = frame["call_id"]


async def _resume_one(
    user: _User, run_id: str, call_id: str, timeout_s: float
) -> tuple[float, float]:
    """Approve one call; seconds to its ``approval_resolved`` and to its ``tool_executing``.

    Reads on until the run has ended, so the next sample starts on a quiet server.
    """
    frame = {"type": "approve", "run_id": run_id, "call_id": call_id, "approved": True}
    sent = time.perf_counter()
    await user.ws.send(orjson.dumps(frame).decode())
    resolved = resumed = 0.0
    while True:
        event = await _recv(user.ws, timeout_s)
        kind = event.get("type")
        if kind == "error":
            raise RuntimeError(f"an answer was refused: {event}")
        if event.get("run_id") != run_id:
            continue
        if kind == "approval_resolved" and not resolved:
            resolved = time.perf_counter() - sent
        elif kind == "tool_executing" and not resumed:
            resumed = time.perf_counter() - sent
        elif kind in _TERMINAL and event.get("depth", 0) == 0:
            if kind != "agent_completed" or not (resolved and resumed):
                raise RuntimeError(f"a resumed run ended {kind} ({event.get('error')})")
            return resolved, resumed


async def _cpu_over(server: ServerProcess, seconds: float) -> tuple[float, float]:
    """The server's CPU seconds over ``seconds`` of wall time, and the wall time itself."""
    cpu, wall = server.cpu_seconds(), time.perf_counter()
    await asyncio.sleep(seconds)
    return server.cpu_seconds() - cpu, time.perf_counter() - wall


async def _measure(
    server: ServerProcess,
    tokens: list[str],
    n: int,
    sample: int,
    wait_s: float,
    timeout_s: float,
    progress: Progress,
) -> dict[str, Any]:
    headers = [{"Authorization": f"Bearer {t}"} for t in tokens]
    sockets = [
        # No client pings: the server under measure answers none while it starts N runs.
        await connect(server.ws_url, additional_headers=h, max_size=2**24, ping_interval=None)
        for h in headers
    ]
    try:
        users = [_User(ws) for ws in sockets]
        for user in users:
            if (await _recv(user.ws, timeout_s)).get("type") != "ready":
                raise RuntimeError("no ready frame")
        # Warm-up: the first user pauses and resumes a few runs (nothing of it measured).
        warm = users[0]
        await _pause(warm, 3, timeout_s)
        for run_id, call_id in list(warm.waiting.items()):
            await _resume_one(warm, run_id, call_id, timeout_s)
        warm.waiting.clear()
        warm.started = 0
        await asyncio.sleep(1.0)

        idle_cpu, idle_wall = await _cpu_over(server, wait_s)
        rss_before = server.rss_bytes()
        progress(f"pausing {n} runs", 0, n)
        started = time.perf_counter()
        shares = [RUNS_PER_USER] * (n // RUNS_PER_USER)
        if n % RUNS_PER_USER:
            shares.append(n % RUNS_PER_USER)
        await asyncio.gather(
            *(_pause(u, k, timeout_s) for u, k in zip(users, shares, strict=False))
        )
        pause_s = time.perf_counter() - started
        progress(f"{n} runs waiting", n, n)
        await asyncio.sleep(2.0)  # the last writes and frames settle
        rss_paused = server.rss_bytes()

        cpu_waiting, wall_waiting = await _cpu_over(server, wait_s)

        resolved: list[float] = []
        resumed: list[float] = []
        picks = [(u, r, c) for u in users for r, c in u.waiting.items()][:sample]
        for i, (user, run_id, call_id) in enumerate(picks):
            a, b = await _resume_one(user, run_id, call_id, timeout_s)
            resolved.append(a)
            resumed.append(b)
            if (i + 1) % 20 == 0 or i + 1 == len(picks):
                progress("resuming one at a time", i + 1, len(picks))
    finally:
        await asyncio.gather(*(ws.close() for ws in sockets), return_exceptions=True)

    per_run = (rss_paused - rss_before) / n / 1024
    resume = _summary_ms(resumed, (50, 90, 99))
    return {
        "paused_runs": n,
        "users": len(tokens),
        "runs_per_user": RUNS_PER_USER,
        "input": INPUT,
        "pause_s": round(pause_s, 3),
        "rss_before_mib": round(rss_before / MiB, 2),
        "rss_paused_mib": round(rss_paused / MiB, 2),
        "rss_per_paused_run_kib": round(per_run, 2),
        "waiting_s": round(wall_waiting, 2),
        "server_cpu_waiting_s": round(cpu_waiting, 3),
        "server_cpu_waiting_ms_per_s": round(cpu_waiting * 1000 / wall_waiting, 3),
        "server_cpu_idle_ms_per_s": round(idle_cpu * 1000 / idle_wall, 3),
        "resume_sample": len(resumed),
        "resume_to_next_event_ms": resume,
        "answer_to_resolved_ms": _summary_ms(resolved, (50, 90, 99)),
        "goals": {
            "rss_per_paused_run_kib": f"< {GOAL_KIB_PER_RUN:g}",
            "server_cpu_waiting_ms_per_s": "~0",
            "resume_to_next_event_p50_ms": f"< {GOAL_RESUME_P50_MS:g}",
        },
        "ok": per_run < GOAL_KIB_PER_RUN
        and resume["p50"] is not None
        and resume["p50"] < GOAL_RESUME_P50_MS,
    }


def run_paused_bench(
    n: int = 10_000,
    *,
    sample: int = 200,
    wait_s: float = 10.0,
    timeout_s: float = 300.0,
    progress: Progress = _no_progress,
) -> dict[str, Any]:
    """The figures of the module docstring for ``n`` runs paused at once (a JSON-able dict)."""
    if n < 1:
        raise ValueError("--paused needs at least 1 run")
    raise_file_limit()
    token = secrets.token_urlsafe(24)
    users = -(-n // RUNS_PER_USER)
    server = ServerProcess("tenet", admin_token=token, env={"TENET_LOG_LEVEL": "WARNING"})
    server.start()
    try:
        target = _Target.started("tenet", server, token)
        tokens = create_users(target, users, f"paused-{secrets.token_hex(3)}", progress)
        return asyncio.run(_measure(server, tokens, n, min(sample, n), wait_s, timeout_s, progress))
    finally:
        server.stop()
