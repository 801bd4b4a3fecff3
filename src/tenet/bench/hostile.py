"""``tenet bench --hostile``: does one hostile user slow everyone else down?

One ``tenet serve`` process (SQLite, in a temporary folder) serves the example
agents. Two phases run against the same server, in one run, alternating in
``rounds`` (each figure pools its rounds, so a shared machine's load drifting
during the bench weighs on both alike):

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
added to each p99. The goal: under 20 ms. So that a reader can tell an added
figure from noise, it also gives each baseline round's p99 and their spread, and
what each round's hostile phase added to its own round's baseline; and, per
second of each phase, the server's CPU, how long its threads waited for a CPU
(the machine's load), and the CPU of the hostile process and of this one.

With ``--hostile-inputs ordinary`` (the control), the extra user floods with the
normal users' own input and does nothing else: what it adds is what one more
user at its limits costs the others whatever it sends, so the part of the
hostile figure that is the inputs' is the difference of the two.

The hostile user's process runs on the same machine as the server, where a real
one would not: its own start (a Python process importing its libraries takes a
CPU-second or two) and its own CPU would be counted against the server. So the
measure starts only once it is attacking (its first run accepted), and it runs
at a lower CPU priority (``nice`` :data:`ATTACKER_NICE`) than the server and the
normal users.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import os
import secrets
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson
from websockets.asyncio.client import ClientConnection, connect

from .procs import ServerProcess, cpu_seconds, cpu_wait_seconds, raise_file_limit

#: The hostile user's goal: what it may add to the others' p99 (ms).
GOAL_MS = 20.0
#: The hostile process's CPU priority, lower than the server's (see the module doc).
ATTACKER_NICE = 10
#: Longest wait for the hostile process to be attacking before the measure starts (s).
ATTACKER_READY_S = 120.0
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
    #: Rounds of (baseline, hostile), each ``seconds / rounds`` long, results pooled:
    #: alternating cancels out a shared machine's load drifting during the bench.
    rounds: int = 3
    #: What the hostile user does: worst-input runs, oversized frames, anonymous socket bursts.
    attacks: tuple[str, ...] = ("runs", "oversized", "anonymous")
    #: ``worst``: its runs send :func:`worst_inputs`; ``ordinary`` (the control): they send
    #: what the normal users send, as fast as its limits let it, and nothing else (set
    #: ``attacks`` to ``("runs",)``): what one more user flooding costs the others,
    #: whatever the inputs.
    inputs: str = "worst"


@dataclass
class PhaseResult:
    run_ms: list[float] = field(default_factory=list)
    probe_ms: list[float] = field(default_factory=list)
    errors: int = 0
    error_samples: list[str] = field(default_factory=list)
    hostile_actions: int = 0
    #: The server process's CPU seconds (all threads) during this phase's rounds.
    server_cpu_s: float = 0.0
    #: Seconds the server's threads waited for a CPU (the machine's load, not its work).
    server_wait_s: float = 0.0
    #: CPU seconds of the hostile user's process, and of this process (the normal users).
    attacker_cpu_s: float = 0.0
    driver_cpu_s: float = 0.0
    seconds: float = 0.0
    #: Each round's p99 (ms) of the runs and of ``GET /v1/me``: the spread between rounds.
    round_run_p99: list[float | None] = field(default_factory=list)
    round_me_p99: list[float | None] = field(default_factory=list)

    def error(self, what: str) -> None:
        self.errors += 1
        if len(self.error_samples) < 5:
            self.error_samples.append(what[:200])

    def add_round(self, other: PhaseResult) -> None:
        """Pool one round's figures into this phase's."""
        self.run_ms += other.run_ms
        self.probe_ms += other.probe_ms
        for what in other.error_samples:
            self.error(what)
        self.errors += other.errors - len(other.error_samples)
        self.server_cpu_s += other.server_cpu_s
        self.server_wait_s += other.server_wait_s
        self.attacker_cpu_s += other.attacker_cpu_s
        self.driver_cpu_s += other.driver_cpu_s
        self.seconds += other.seconds
        self.round_run_p99.append(percentile(other.run_ms, 99))
        self.round_me_p99.append(percentile(other.probe_ms, 99))


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
    url: str, tokens: list[str], probe_token: str, config: HostileConfig, out: PhaseResult
) -> PhaseResult:
    """One round of the normal users and the probe, adding to ``out``."""
    ws_url = url.replace("http", "ws", 1) + "/v1/ws"
    until = time.monotonic() + config.seconds / config.rounds
    tasks = [_normal_user(ws_url, t, config, until, out) for t in tokens]
    tasks.append(_probe(url, probe_token, config, until, out))
    results = await asyncio.gather(*tasks, return_exceptions=True)
    for r in results:
        if isinstance(r, BaseException):
            out.error(f"{type(r).__name__}: {r}")
    return out


# The hostile user (in a process of its own) -------------------------------------------------------


@dataclass
class AttackerSwitches:
    """How the bench drives the hostile process (``multiprocessing`` events, a counter).

    ``active`` set: attack; cleared: send nothing more, and set ``idle`` once none of
    its runs is queued or running on the server any more (so a baseline round measures
    no leftover of the attack). ``ready``: its first run was answered.
    """

    stop: Any
    active: Any
    idle: Any
    ready: Any
    counter: Any


async def _hostile(url: str, token: str, config: HostileConfig, sw: AttackerSwitches) -> None:
    ws_url = url.replace("http", "ws", 1) + "/v1/ws"
    headers = {"Authorization": f"Bearer {token}"}
    inputs = (
        worst_inputs(config.max_input_chars)
        if config.inputs == "worst"
        else [f"what is {n} + 2" for n in range(1, 101)]
    )
    threads: list[str] = []
    in_flight: set[str] = set()

    async def attacking() -> bool:
        """Wait while paused; False once the bench stops."""
        while not sw.active.is_set() and not sw.stop.is_set():
            sw.idle.set()  # no socket: nothing of it is followed any more
            await asyncio.sleep(0.05)
        return not sw.stop.is_set()

    async def drain(ws: ClientConnection) -> None:
        with contextlib.suppress(Exception):
            async for raw in ws:
                frame = orjson.loads(raw)
                kind = frame.get("type")
                if kind == "run_accepted":
                    in_flight.add(frame["run_id"])
                    if len(threads) < 50:
                        threads.append(frame["thread_id"])
                elif kind in TERMINAL and frame.get("depth", 0) == 0:
                    in_flight.discard(frame.get("run_id"))
                if kind in ("run_accepted", "error"):
                    sw.ready.set()

    async def runs() -> None:
        while await attacking():
            with contextlib.suppress(Exception):
                async with connect(ws_url, additional_headers=headers, max_size=None) as ws:
                    in_flight.clear()  # runs of a lost socket are not followed any more
                    reader = asyncio.create_task(drain(ws))
                    i = 0
                    while not reader.done() and not sw.stop.is_set():
                        if not sw.active.is_set():  # paused: idle once no run is left
                            (sw.idle.clear if in_flight else sw.idle.set)()
                            await asyncio.sleep(0.05)
                            continue
                        sw.idle.clear()
                        text = inputs[i % len(inputs)]
                        i += 1
                        frame = {"type": "run", "agent": "assistant", "input": text}
                        await ws.send(orjson.dumps(frame).decode())
                        if threads and i % 5 == 0:
                            again = {"type": "subscribe", "thread_id": threads[i % len(threads)]}
                            await ws.send(orjson.dumps(again).decode())
                        sw.counter.value += 1
                        await asyncio.sleep(0.01)
                    reader.cancel()
            await asyncio.sleep(0.1)

    async def oversized() -> None:
        blob = "x" * (config.max_frame_bytes * 16)
        while await attacking():
            with contextlib.suppress(Exception):
                async with connect(ws_url) as ws:
                    await ws.send(blob)
                    await asyncio.wait_for(ws.recv(), 5)
            sw.counter.value += 1
            await asyncio.sleep(0.05)

    async def anonymous() -> None:
        while await attacking():
            sockets = []
            with contextlib.suppress(Exception):
                for _ in range(20):
                    sockets.append(await connect(ws_url, open_timeout=5))
                    sw.counter.value += 1
            await asyncio.sleep(1.0)
            for ws in sockets:
                with contextlib.suppress(Exception):
                    await ws.close()

    chosen = {"runs": runs, "oversized": oversized, "anonymous": anonymous}
    await asyncio.gather(*(chosen[name]() for name in config.attacks))


def _hostile_main(url: str, token: str, config: HostileConfig, sw: AttackerSwitches) -> None:
    with contextlib.suppress(OSError):
        os.nice(ATTACKER_NICE)
    if "runs" not in config.attacks:
        sw.ready.set()
        sw.idle.set()
    asyncio.run(_hostile(url, token, config, sw))


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


def _measured(
    pids: tuple[int, int],
    url: str,
    normal: list[str],
    probe: str,
    config: HostileConfig,
    out: PhaseResult,
) -> None:
    """One round of a phase, with the CPU time of the server, the attacker and this process."""
    server, attacker = pids
    round_ = PhaseResult()
    cpu, wait, wall = cpu_seconds(server), cpu_wait_seconds(server), time.monotonic()
    theirs, ours = cpu_seconds(attacker), time.process_time()
    asyncio.run(_phase(url, normal, probe, config, round_))
    round_.server_cpu_s = cpu_seconds(server) - cpu
    round_.server_wait_s = cpu_wait_seconds(server) - wait
    round_.attacker_cpu_s = cpu_seconds(attacker) - theirs
    round_.driver_cpu_s = time.process_time() - ours
    round_.seconds = time.monotonic() - wall
    out.add_round(round_)


def _summary(result: PhaseResult) -> dict[str, Any]:
    def per_s(value: float) -> float | None:
        return value / result.seconds if result.seconds else None

    return {
        "server_cpu_per_s": per_s(result.server_cpu_s),
        "server_cpu_wait_per_s": per_s(result.server_wait_s),
        "attacker_cpu_per_s": per_s(result.attacker_cpu_s),
        "driver_cpu_per_s": per_s(result.driver_cpu_s),
        "runs": len(result.run_ms),
        "run_p50_ms": percentile(result.run_ms, 50),
        "run_p99_ms": percentile(result.run_ms, 99),
        "probes": len(result.probe_ms),
        "me_p50_ms": percentile(result.probe_ms, 50),
        "me_p99_ms": percentile(result.probe_ms, 99),
        "round_run_p99_ms": result.round_run_p99,
        "round_me_p99_ms": result.round_me_p99,
        "errors": result.errors,
        "error_samples": result.error_samples,
    }


def _spread(before: list[float | None], during: list[float | None]) -> dict[str, float | None]:
    """How far apart the baseline rounds' p99 are, and what each round's hostile phase added.

    ``baseline_spread``: the largest minus the smallest baseline round: how much the
    figure moves with no hostile user at all. ``added_median``/``min``/``max``: the
    hostile phase's p99 minus its own round's baseline (the two run back to back, so
    the machine's load drifts least between them). An added figure inside the
    baseline's spread is not told apart from noise.
    """
    base = [b for b in before if b is not None]
    pairs = sorted(
        d - b for b, d in zip(before, during, strict=False) if b is not None and d is not None
    )
    return {
        "baseline_spread": max(base) - min(base) if base else None,
        "added_median": statistics.median(pairs) if pairs else None,
        "added_min": pairs[0] if pairs else None,
        "added_max": pairs[-1] if pairs else None,
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
    baseline, attacked = PhaseResult(), PhaseResult()
    with ServerProcess("tenet", admin_token=admin, env=env) as server:
        tokens = asyncio.run(_users(server.url, admin, config.users + 2, "hostile-bench"))
        normal, probe, hostile_token = tokens[: config.users], tokens[-2], tokens[-1]
        ctx = multiprocessing.get_context("spawn")
        sw = AttackerSwitches(
            stop=ctx.Event(),
            active=ctx.Event(),
            idle=ctx.Event(),
            ready=ctx.Event(),
            counter=ctx.Value("q", 0),
        )
        attacker = ctx.Process(
            target=_hostile_main, args=(server.url, hostile_token, config, sw), daemon=True
        )
        attacker.start()
        assert attacker.pid is not None
        pids = (server.pid, attacker.pid)
        try:
            sw.active.set()  # its first runs: it is started and attacking
            if not sw.ready.wait(ATTACKER_READY_S):
                raise RuntimeError("the hostile user's process did not start attacking")
            sw.active.clear()
            each = config.seconds / config.rounds
            for n in range(1, config.rounds + 1):
                if not sw.idle.wait(ATTACKER_READY_S):
                    baseline.error("the hostile user's runs did not end before a baseline round")
                progress(f"round {n}/{config.rounds}: baseline, {config.users} users, {each:g}s")
                _measured(pids, server.url, normal, probe, config, baseline)
                sw.active.set()
                time.sleep(1.0)  # the attack is under way before the measure starts
                progress(f"round {n}/{config.rounds}: the same with the hostile user")
                _measured(pids, server.url, normal, probe, config, attacked)
                sw.active.clear()
        finally:
            sw.stop.set()
            attacker.join(10)
            if attacker.is_alive():
                attacker.kill()
        attacked.hostile_actions = int(sw.counter.value)
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
        "rounds": config.rounds,
        "baseline": before,
        "hostile": {**during, "hostile_actions": attacked.hostile_actions},
        "added_ms": added,
        "rounds_ms": {
            "run_p99_ms": _spread(before["round_run_p99_ms"], during["round_run_p99_ms"]),
            "me_p99_ms": _spread(before["round_me_p99_ms"], during["round_me_p99_ms"]),
        },
        "goal_ms": GOAL_MS,
        "inputs": config.inputs,
        "server_survived": alive,
        "met": alive and all(v is not None and v < GOAL_MS for v in added.values()),
    }


def print_hostile(report: dict[str, Any], console: Any) -> None:
    """The report as a table: each figure without and with the hostile user."""
    from rich.table import Table

    table = Table(
        title=f"{report['users']} users, {report['seconds']:g}s a phase in "
        f"{report.get('rounds', 1)} rounds, one hostile user"
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
    for key, label in (
        ("server_cpu_per_s", "server CPU (s/s)"),
        ("server_cpu_wait_per_s", "server waiting for a CPU (s/s)"),
        ("attacker_cpu_per_s", "hostile process CPU (s/s)"),
        ("driver_cpu_per_s", "normal users' process CPU (s/s)"),
    ):
        a, b = before.get(key), during.get(key)
        if a is not None and b is not None:
            table.add_row(label, f"{a:.2f}", f"{b:.2f}", f"{b - a:+.2f}")
    for key in ("runs", "probes", "errors"):
        table.add_row(key, str(before[key]), str(during[key]), "")
    table.add_row("hostile actions", "", str(during["hostile_actions"]), "")
    console.print(table)
    for key, label in (("run_p99_ms", "run latency p99"), ("me_p99_ms", "GET /v1/me p99")):
        spread = report.get("rounds_ms", {}).get(key)
        if not spread or spread["added_median"] is None:
            continue
        rounds = ", ".join(ms(v) for v in before[f"round_{key}"])
        console.print(
            f"{label}, round by round: baseline {rounds} (spread {ms(spread['baseline_spread'])}); "
            f"added {ms(spread['added_median'])} median "
            f"({ms(spread['added_min'])} to {ms(spread['added_max'])})"
        )
    verdict = "[green]met[/]" if report["met"] else "[red]not met[/]"
    survived = "" if report["server_survived"] else " (the server did not survive)"
    console.print(
        f"goal: the hostile user adds under {report['goal_ms']:g} ms to p99: {verdict}{survived}"
    )
    spreads = [
        s["baseline_spread"]
        for s in report.get("rounds_ms", {}).values()
        if s and s["baseline_spread"] is not None
    ]
    if spreads and max(spreads) > report["goal_ms"]:
        console.print(
            f"[yellow]the baseline's own rounds spread up to {ms(max(spreads))}: this run "
            f"cannot tell {report['goal_ms']:g} ms apart[/]"
        )
