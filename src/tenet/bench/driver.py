"""The load driver: simulated users on real WebSockets, in worker processes.

On a 2-core machine the driver competes with the server for CPU, so it runs in
its own process(es), measures its own CPU time (``getrusage``) and reports it
beside the server's: a figure that the driver itself limited is visible as such.

One worker drives a share of the users through four steps, each waited on by
the coordinating process so that every phase is measured from the same instant:

1. connect: every user opens its socket (``Authorization`` header) and waits for
   ``ready``; the worker reports ``connected``;
2. go: every user does its runs one after another (``run`` frame, then frames
   until its run's terminal event), recording receipt times;
3. the worker reports its raw measurements (``result``);
4. stop: sockets are closed and the worker exits.

Every wait has a deadline, so a wedged server ends the phase instead of the bench.
"""

from __future__ import annotations

import asyncio
import contextlib
import resource
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson

#: Event types that end a run (with depth 0 for agent_completed/agent_error).
_TERMINAL = frozenset({"agent_completed", "agent_error", "run_cancelled"})
_EVENT_TYPES = frozenset(
    {
        "agent_started",
        "agent_thinking",
        "message_delta",
        "tool_executing",
        "tool_completed",
        "agent_completed",
        "agent_error",
        "run_cancelled",
    }
)


@dataclass
class WorkerJob:
    """What one worker process does."""

    ws_url: str
    tokens: list[str]
    runs: int
    input: str
    #: No run is started after this many seconds from "go" (in-flight runs finish).
    deadline_s: float
    connect_timeout_s: float = 120.0
    run_timeout_s: float = 120.0
    compression: bool = True


@dataclass
class UserResult:
    """Raw measurements of one simulated user (times are ``time.time()`` seconds)."""

    started: float = 0.0
    finished: float = 0.0
    runs: int = 0
    errors: list[str] = field(default_factory=list)
    ttfe: list[float] = field(default_factory=list)
    run_latency: list[float] = field(default_factory=list)
    event_latency: list[float] = field(default_factory=list)
    events: int = 0


class _Clock:
    """Event ``timestamp`` (RFC 3339, ms) to epoch seconds, parsing each second only once."""

    def __init__(self) -> None:
        self._seconds: dict[str, float] = {}

    def epoch(self, stamp: str) -> float:
        prefix = stamp[:19]
        base = self._seconds.get(prefix)
        if base is None:
            if len(self._seconds) > 4096:
                self._seconds.clear()
            base = self._seconds[prefix] = datetime.fromisoformat(prefix + "+00:00").timestamp()
        return base + int(stamp[20:23]) / 1000


async def _connect(job: WorkerJob, token: str) -> Any:
    from websockets.asyncio.client import connect

    ws = await connect(
        job.ws_url,
        additional_headers={"Authorization": f"Bearer {token}"},
        compression="deflate" if job.compression else None,
        ping_interval=None,  # the server pings; answering is enough
        max_size=16 * 1024 * 1024,
        open_timeout=job.connect_timeout_s,
        close_timeout=5,
    )
    ready = orjson.loads(await asyncio.wait_for(ws.recv(), job.connect_timeout_s))
    if ready.get("type") != "ready":
        await ws.close()
        raise RuntimeError(f"expected ready, got {ready.get('type')!r}")
    return ws


async def _user(
    ws: Any, job: WorkerJob, go: float, clock: _Clock, counter: list[int]
) -> UserResult:
    result = UserResult(started=time.time())
    request: dict[str, Any] = {"type": "run", "agent": "benchmark", "input": job.input}
    frame = orjson.dumps(request).decode()
    try:
        for _ in range(job.runs):
            if time.time() - go > job.deadline_s:
                break
            sent = time.time()
            await ws.send(frame)
            first = True
            async with asyncio.timeout(job.run_timeout_s):
                while True:
                    raw = await ws.recv()
                    now = time.time()
                    msg = orjson.loads(raw)
                    kind = msg.get("type")
                    if kind in _EVENT_TYPES:
                        result.events += 1
                        result.event_latency.append(now - clock.epoch(msg["timestamp"]))
                        if first:
                            result.ttfe.append(now - sent)
                            first = False
                        if kind in _TERMINAL and msg.get("depth", 0) == 0:
                            result.run_latency.append(now - sent)
                            result.runs += 1
                            counter[0] += 1
                            if kind != "agent_completed":
                                result.errors.append(f"run ended with {kind}")
                            break
                    elif kind == "run_accepted" and "thread_id" not in request:
                        # Later runs continue the conversation, as a user's would.
                        request["thread_id"] = msg["thread_id"]
                        frame = orjson.dumps(request).decode()
                    elif kind == "error":
                        result.errors.append(f"{msg.get('code')}: {msg.get('message')}")
                        counter[0] += 1
                        break
    except Exception as exc:  # a dropped socket or a timeout ends this user only
        result.errors.append(f"{type(exc).__name__}: {exc}"[:300])
    result.finished = time.time()
    return result


async def _wait_event(event: Any, timeout_s: float) -> bool:
    """Wait on a multiprocessing.Event without blocking the loop (polled; bounded)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if event.is_set():
            return True
        await asyncio.sleep(0.01)
    return event.is_set()


async def run_worker(job: WorkerJob, out: Any, go_evt: Any, stop_evt: Any) -> None:
    limit = asyncio.Semaphore(64)  # handshakes in flight; the server's backlog is finite

    async def open_one(token: str) -> Any:
        async with limit:
            return await _connect(job, token)

    opened = await asyncio.gather(*(open_one(t) for t in job.tokens), return_exceptions=True)
    sockets = [s for s in opened if not isinstance(s, BaseException)]
    failures = [f"{type(e).__name__}: {e}"[:300] for e in opened if isinstance(e, BaseException)]
    out.put(("connected", len(sockets), failures[:5]))
    try:
        if not await _wait_event(go_evt, 3600):
            return
        cpu0 = _cpu()
        go = time.time()
        clock = _Clock()
        counter = [0]
        tasks = [asyncio.create_task(_user(ws, job, go, clock, counter)) for ws in sockets]
        reported = 0
        pending: set[asyncio.Task[UserResult]] = set(tasks)
        while pending:
            _done, pending = await asyncio.wait(pending, timeout=0.1)
            if counter[0] != reported:
                out.put(("runs", counter[0] - reported))
                reported = counter[0]
        users = [t.result() for t in tasks]
        out.put(("result", {"go": go, "cpu_s": _cpu() - cpu0, "users": users}))
        await _wait_event(stop_evt, 3600)
    finally:
        await asyncio.gather(*(_close(ws) for ws in sockets))


async def _close(ws: Any) -> None:
    with contextlib.suppress(Exception):
        async with asyncio.timeout(10):
            await ws.close()


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def worker_main(job: WorkerJob, out: Any, go_evt: Any, stop_evt: Any) -> None:
    """Entry point of a worker process (spawned; see the module docstring)."""
    from .procs import raise_file_limit

    raise_file_limit()
    try:
        import uvloop

        runner: Any = uvloop.run
    except ImportError:  # pragma: no cover - uvicorn[standard] brings uvloop
        runner = asyncio.run
    try:
        runner(run_worker(job, out, go_evt, stop_evt))
    except BaseException as exc:
        out.put(("failed", f"{type(exc).__name__}: {exc}"))
        raise
