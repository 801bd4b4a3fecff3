"""``tenet bench --hostile``: does one hostile user slow everyone else down?

One ``tenet serve`` process (SQLite, in a temporary folder) serves the example
agents. Two phases run back to back against the same server, in one run:

1. **baseline**: ``--users`` normal users each run the ``assistant`` over their
   own WebSocket, one run after another with a short pause, while a probe user
   calls ``GET /v1/me`` every 20 ms;
2. **hostile**: the same, while one more user, in a process of its own, sends
   the worst inputs we know of, as fast as its limits let it: the longest input
   built to make a backtracking regular expression quadratic, an exponent
   tower for the calculator, the longest ``remember`` and ``recall`` inputs,
   frames over the frame limit, bursts of sockets that never authenticate, and
   subscriptions that replay its threads.

The report gives the normal users' run latency (p50, p99) and the probe's
``GET /v1/me`` latency (p50, p99) in both phases, and what the hostile user
added to each p99. The goal: under 20 ms.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson
from websockets.asyncio.client import ClientConnection, connect

from .procs import ServerProcess, raise_file_limit

#: The hostile user's goal: what it may add to the others' p99 (ms).
GOAL_MS = 20.0
TERMINAL = frozenset({"agent_completed", "agent_error", "run_cancelled"})


@dataclass
class HostileConfig:
    users: int = 50
    seconds: float = 20.0
    #: A normal user's pause between two runs (seconds).
    pause_s: float = 0.2
    #: The probe's pause between two ``GET /v1/me`` (seconds).
    probe_every_s: float = 0.02
    max_input_chars: int = 32_000
    max_frame_bytes: int = 64 * 1024
    #: What the hostile user does: worst-input runs, oversized frames, anonymous socket bursts.
    attacks: tuple[str, ...] = ("runs", "oversized", "anonymous")


@dataclass
class PhaseResult:
    run_ms: list[float] = field(default_factory=list)
    probe_ms: list[float] = field(default_factory=list)
    errors: int = 0
    error_samples: list[str] = field(default_factory=list)
    hostile_actions: int = 0

    def error(self, what: str) -> None:
        self.errors += 1
        if len(self.error_samples) < 5:
            self.error_samples.append(what[:200])


def percentile(values: list[float], p: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))]


def worst_inputs(max_chars: int) -> list[str]:
    """The hostile run inputs: each the worst case of one rule or tool, at the length limit."""
    return [
        ("1+" * max_chars)[: max_chars - 1] + "x",  # the arithmetic pattern, at its longest
        ("1" * (max_chars - 1)) + "+",  # digits the pattern must give up on
        "use calculator expression=(((9**99)**99)**99)**10",  # an exponent tower
        "use calculator expression=9**99**99",
        "use calculator expression=" + "9" * 150 + "*" + "9" * 40,
        "remember " + "n" * (max_chars - 9),  # the longest note
        "recall " + ("what is my " * max_chars)[: max_chars - 7],  # the longest search
        "use " + "a=b " * (max_chars // 4 - 2),  # the use-pattern's arguments, at length
    ]


# The normal users and the probe (in the bench process) -----------------------------------------


async def _normal_user(
    ws_url: str, token: str, config: HostileConfig, until: float, out: PhaseResult
) -> None:
    headers = {"Authorization": f"Bearer {token}"}
    async with connect(ws_url, additional_headers=headers, max_size=None) as ws:
        await _ready(ws)
        n = 0
        while time.monotonic() < until:
            n += 1
            sent = time.perf_counter()
            await ws.send(
                orjson.dumps(
                    {"type": "run", "agent": "assistant", "input": f"what is {n} + 2"}
                ).decode()
            )
            run_id = None
            try:
                async with asyncio.timeout(30):
                    while True:
                        frame = orjson.loads(await ws.recv())
                        kind = frame.get("type")
                        if kind == "run_accepted":
                            run_id = frame["run_id"]
                        elif kind == "error":
                            out.error(f"error frame: {frame.get('code')}: {frame.get('message')}")
                            break
                        elif (
                            kind in TERMINAL
                            and frame.get("run_id") == run_id
                            and frame.get("depth", 0) == 0
                        ):
                            out.run_ms.append((time.perf_counter() - sent) * 1000)
                            break
            except TimeoutError:
                out.error("a run did not end within 30 s")
            await asyncio.sleep(config.pause_s)


async def _probe(
    url: str, token: str, config: HostileConfig, until: float, out: PhaseResult
) -> None:
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=30) as http:
        while time.monotonic() < until:
            sent = time.perf_counter()
            r = await http.get("/v1/me")
            if r.status_code == 200:
                out.probe_ms.append((time.perf_counter() - sent) * 1000)
            else:
                out.error(f"GET /v1/me: {r.status_code}")
            await asyncio.sleep(config.probe_every_s)


async def _ready(ws: ClientConnection) -> None:
    frame = orjson.loads(await asyncio.wait_for(ws.recv(), 30))
    if frame.get("type") != "ready":
        raise RuntimeError(f"expected ready, got {frame!r}")


async def _phase(
    url: str, tokens: list[str], probe_token: str, config: HostileConfig
) -> PhaseResult:
    out = PhaseResult()
    ws_url = url.replace("http", "ws", 1) + "/v1/ws"
    until = time.monotonic() + config.seconds
    tasks = [_normal_user(ws_url, t, config, until, out) for t in tokens]
    tasks.append(_probe(url, probe_token, config, until, out))
    results = await asyncio.gather(*tasks, return_exceptions=True)
    for r in results:
        if isinstance(r, BaseException):
            out.error(f"{type(r).__name__}: {r}")
    return out


# The hostile user (in a process of its own) -------------------------------------------------------


async def _hostile(url: str, token: str, config: HostileConfig, stop: Any, counter: Any) -> None:
    ws_url = url.replace("http", "ws", 1) + "/v1/ws"
    headers = {"Authorization": f"Bearer {token}"}
    inputs = worst_inputs(config.max_input_chars)
    threads: list[str] = []

    async def drain(ws: ClientConnection) -> None:
        with contextlib.suppress(Exception):
            async for raw in ws:
                frame = orjson.loads(raw)
                if frame.get("type") == "run_accepted" and len(threads) < 50:
                    threads.append(frame["thread_id"])

    async def runs() -> None:
        while not stop.is_set():
            with contextlib.suppress(Exception):
                async with connect(ws_url, additional_headers=headers, max_size=None) as ws:
                    reader = asyncio.create_task(drain(ws))
                    i = 0
                    while not stop.is_set() and not reader.done():
                        text = inputs[i % len(inputs)]
                        i += 1
                        frame = {"type": "run", "agent": "assistant", "input": text}
                        await ws.send(orjson.dumps(frame).decode())
                        if threads and i % 5 == 0:
                            again = {"type": "subscribe", "thread_id": threads[i % len(threads)]}
                            await ws.send(orjson.dumps(again).decode())
                        counter.value += 1
                        await asyncio.sleep(0.01)
                    reader.cancel()
            await asyncio.sleep(0.1)

    async def oversized() -> None:
        blob = "x" * (config.max_frame_bytes * 16)
        while not stop.is_set():
            with contextlib.suppress(Exception):
                async with connect(ws_url) as ws:
                    await ws.send(blob)
                    await asyncio.wait_for(ws.recv(), 5)
            counter.value += 1
            await asyncio.sleep(0.05)

    async def anonymous() -> None:
        while not stop.is_set():
            sockets = []
            with contextlib.suppress(Exception):
                for _ in range(20):
                    sockets.append(await connect(ws_url, open_timeout=5))
                    counter.value += 1
            await asyncio.sleep(1.0)
            for ws in sockets:
                with contextlib.suppress(Exception):
                    await ws.close()

    chosen = {"runs": runs, "oversized": oversized, "anonymous": anonymous}
    await asyncio.gather(*(chosen[name]() for name in config.attacks))


def _hostile_main(url: str, token: str, config: HostileConfig, stop: Any, counter: Any) -> None:
    asyncio.run(_hostile(url, token, config, stop, counter))


# The whole bench --------------------------------------------------------------------------------


async def _users(url: str, admin: str, count: int, tag: str) -> list[str]:
    headers = {"Authorization": f"Bearer {admin}"}
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=30) as http:
        tokens = []
        for i in range(count):
            r = await http.post("/v1/users", json={"name": f"{tag}-{i}-{secrets.token_hex(3)}"})
            r.raise_for_status()
            tokens.append(r.json()["token"])
    return tokens


def _summary(result: PhaseResult) -> dict[str, Any]:
    return {
        "runs": len(result.run_ms),
        "run_p50_ms": percentile(result.run_ms, 50),
        "run_p99_ms": percentile(result.run_ms, 99),
        "probes": len(result.probe_ms),
        "me_p50_ms": percentile(result.probe_ms, 50),
        "me_p99_ms": percentile(result.probe_ms, 99),
        "errors": result.errors,
        "error_samples": result.error_samples,
    }


def run_hostile(
    config: HostileConfig, progress: Callable[[str], None] = lambda _m: None
) -> dict[str, Any]:
    """Both phases against one fresh ``tenet serve``; the report (see the module doc)."""
    raise_file_limit()
    admin = secrets.token_urlsafe(16)
    env = {
        "TENET_MAX_INPUT_CHARS": str(config.max_input_chars),
        "TENET_WS_MAX_FRAME_BYTES": str(config.max_frame_bytes),
    }
    with ServerProcess("tenet", admin_token=admin, env=env) as server:
        tokens = asyncio.run(_users(server.url, admin, config.users + 2, "hostile-bench"))
        normal, probe, hostile_token = tokens[: config.users], tokens[-2], tokens[-1]
        progress(f"baseline: {config.users} users for {config.seconds:g}s")
        baseline = asyncio.run(_phase(server.url, normal, probe, config))
        ctx = multiprocessing.get_context("spawn")
        stop, counter = ctx.Event(), ctx.Value("q", 0)
        attacker = ctx.Process(
            target=_hostile_main,
            args=(server.url, hostile_token, config, stop, counter),
            daemon=True,
        )
        attacker.start()
        try:
            progress(f"hostile: the same, with one hostile user, for {config.seconds:g}s")
            time.sleep(1.0)  # the attack is under way before the measure starts
            attacked = asyncio.run(_phase(server.url, normal, probe, config))
        finally:
            stop.set()
            attacker.join(10)
            if attacker.is_alive():
                attacker.kill()
        attacked.hostile_actions = int(counter.value)
        alive = server.proc is not None and server.proc.poll() is None
    before, during = _summary(baseline), _summary(attacked)
    added = {
        key: (during[key] - before[key])
        if during[key] is not None and before[key] is not None
        else None
        for key in ("run_p99_ms", "me_p99_ms")
    }
    return {
        "users": config.users,
        "seconds": config.seconds,
        "baseline": before,
        "hostile": {**during, "hostile_actions": attacked.hostile_actions},
        "added_ms": added,
        "goal_ms": GOAL_MS,
        "server_survived": alive,
        "met": alive and all(v is not None and v < GOAL_MS for v in added.values()),
    }


def print_hostile(report: dict[str, Any], console: Any) -> None:
    """The report as a table: each figure without and with the hostile user."""
    from rich.table import Table

    table = Table(
        title=f"{report['users']} users, {report['seconds']:g}s a phase, one hostile user"
    )
    for column in ("figure", "baseline", "with the hostile user", "added"):
        table.add_column(column, justify="right" if column != "figure" else "left")

    def ms(value: float | None) -> str:
        return "-" if value is None else f"{value:.1f} ms"

    before, during, added = report["baseline"], report["hostile"], report["added_ms"]
    for key, label in (
        ("run_p50_ms", "run latency p50"),
        ("run_p99_ms", "run latency p99"),
        ("me_p50_ms", "GET /v1/me p50"),
        ("me_p99_ms", "GET /v1/me p99"),
    ):
        table.add_row(label, ms(before[key]), ms(during[key]), ms(added.get(key)))
    for key in ("runs", "probes", "errors"):
        table.add_row(key, str(before[key]), str(during[key]), "")
    table.add_row("hostile actions", "", str(during["hostile_actions"]), "")
    console.print(table)
    verdict = "[green]met[/]" if report["met"] else "[red]not met[/]"
    survived = "" if report["server_survived"] else " (the server did not survive)"
    console.print(
        f"goal: the hostile user adds under {report['goal_ms']:g} ms to p99: {verdict}{survived}"
    )
