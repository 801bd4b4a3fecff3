"""``tenet bench``: the sweep, the reference servers, the idle and churn modes, the report.

For every number of users U and every target (tenet, the floor, the naive
design), a fresh server process is started on a fresh SQLite file, U users are
made through the admin API, their sockets are opened by the driver's worker
processes, and then, from one instant, every user does its runs. The server's
CPU seconds and RSS are read from ``/proc`` around that instant; the driver's
own CPU is reported too. Figures are measured, never derived from targets.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing as mp
import os
import platform
import queue
import secrets
import statistics
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx

from .driver import UserResult, WorkerJob, run_worker, worker_main
from .procs import RssSampler, ServerMeter, ServerProcess, raise_file_limit, rss_bytes

MiB = 1024 * 1024

#: (description, done, total) -> None; the CLI draws a progress bar with it.
Progress = Callable[[str, int, int | None], None]


def _no_progress(_description: str, _done: int, _total: int | None) -> None:
    return None


@dataclass
class BenchConfig:
    """Everything one ``tenet bench`` invocation measures."""

    users: Sequence[int] = (1, 10, 100, 1000)
    runs: int = 10
    latency_ms: float = 0.0
    events: int = 25
    targets: Sequence[str] = ("tenet", "floor", "naive")
    #: The "1,000 users with 100 ms latency vs 1 user" check: latency (0 skips it), runs.
    latency_check_ms: float = 100.0
    latency_check_runs: int = 3
    #: The history check: runs on threads holding this many turns vs empty ones (0 skips).
    history_turns: int = 50
    history_runs: int = 50
    idle: int = 10_000
    churn: int = 10_000
    churn_wave: int = 1000
    workers: int = 1
    #: No run is started after this long into a phase (the naive design at 1,000 users).
    phase_deadline_s: float = 60.0
    #: TENET_MAX_RUNS for the servers started here (0: the largest U, at least 256).
    max_runs: int = 0
    compression: bool = True
    url: str | None = None
    admin_token: str | None = None
    #: With ``url``: the server's PID on this machine (None: found from the port, else
    #: its CPU and RSS are read from its ``/metrics``).
    server_pid: int | None = None
    server_env: dict[str, str] = field(default_factory=dict)

    def run_input(self, latency_ms: float | None = None) -> str:
        latency = self.latency_ms if latency_ms is None else latency_ms
        return f"latency_ms={latency:g} events={self.events}"


# Statistics ------------------------------------------------------------------------------------


def percentile(values: Sequence[float], p: float) -> float | None:
    """Nearest-rank percentile of already-sorted values (None when empty)."""
    if not values:
        return None
    k = max(0, min(len(values) - 1, round(p / 100 * len(values) + 0.5) - 1))
    return values[k]


def _ms(value: float | None) -> float | None:
    return None if value is None else round(value * 1000, 3)


def _summary_ms(values: list[float], points: Sequence[float]) -> dict[str, float | None]:
    values = sorted(values)
    out = {f"p{p:g}": _ms(percentile(values, p)) for p in points}
    out["max"] = _ms(values[-1]) if values else None
    out["count"] = len(values)
    return out


# Servers and users ------------------------------------------------------------------------------


@contextlib.contextmanager
def _server(config: BenchConfig, kind: str, env: dict[str, str]) -> Iterator[_Target]:
    if config.url is not None:
        if not config.admin_token:
            raise ValueError("--admin-token is needed with --url")
        base = config.url.rstrip("/")
        ws = "ws" + base[4:] + "/v1/ws" if base.startswith("http") else base + "/v1/ws"
        meter = ServerMeter.for_url(base, config.admin_token, config.server_pid)
        yield _Target(kind, base, ws, config.admin_token, None, meter)
        return
    token = secrets.token_urlsafe(24)
    server = ServerProcess(kind, admin_token=token, env={**config.server_env, **env})
    server.start()
    try:
        yield _Target.started(kind, server, token)
    finally:
        server.stop()


@dataclass
class _Target:
    kind: str
    url: str
    ws_url: str
    admin_token: str
    #: The server this bench started (None with ``--url``).
    server: ServerProcess | None
    #: How its CPU and RSS are read (by PID on this machine, else from its ``/metrics``).
    meter: ServerMeter

    @classmethod
    def started(cls, kind: str, server: ServerProcess, admin_token: str) -> _Target:
        """A server this bench started, measured by its PID."""
        meter = ServerMeter("pid", server.pid)
        return cls(kind, server.url, server.ws_url, admin_token, server, meter)

    def cpu(self) -> float | None:
        return self.meter.cpu_seconds()

    def rss(self) -> int | None:
        return self.meter.rss_bytes()


def create_users(target: _Target, count: int, tag: str, progress: Progress) -> list[str]:
    """``count`` users through the admin API (32 requests in flight); returns their tokens."""

    async def go() -> list[str]:
        limits = httpx.Limits(max_connections=32, max_keepalive_connections=32)
        headers = {"Authorization": f"Bearer {target.admin_token}"}
        sem = asyncio.Semaphore(32)
        done = [0]
        async with httpx.AsyncClient(base_url=target.url, limits=limits, timeout=60) as http:

            async def one(i: int) -> str:
                async with sem:
                    r = await http.post("/v1/users", json={"name": f"{tag}-{i}"}, headers=headers)
                    r.raise_for_status()
                    done[0] += 1
                    if done[0] % 100 == 0 or done[0] == count:
                        progress(f"{target.kind}: creating users", done[0], count)
                    return str(r.json()["token"])

            return await asyncio.gather(*(one(i) for i in range(count)))

    return asyncio.run(go())


# One phase: connect, go, collect ----------------------------------------------------------------


@dataclass
class PhaseRaw:
    users: list[UserResult]
    connected: int
    connect_failures: list[str]
    wall_s: float
    client_cpu_s: float
    server_cpu_s: float | None
    #: How the server was measured: "pid" (``/proc``) or "metrics" (its ``/metrics``).
    server_meter: str
    rss_before: int | None
    rss_connected: int | None
    rss_peak: int | None
    workers: int


def run_phase(
    target: _Target,
    tokens: list[str],
    *,
    runs: int,
    input: str,
    config: BenchConfig,
    progress: Progress,
    label: str,
) -> PhaseRaw:
    """Connect every token's socket, do ``runs`` runs each from one instant, collect."""
    ctx = mp.get_context("spawn")
    n_workers = max(1, min(config.workers, len(tokens)))
    out: Any = ctx.Queue()
    go_evt, stop_evt = ctx.Event(), ctx.Event()
    shares = [tokens[i::n_workers] for i in range(n_workers)]
    procs = []
    for share in shares:
        job = WorkerJob(
            ws_url=target.ws_url,
            tokens=share,
            runs=runs,
            input=input,
            deadline_s=config.phase_deadline_s,
            compression=config.compression,
        )
        p = ctx.Process(target=worker_main, args=(job, out, go_evt, stop_evt), daemon=True)
        p.start()
        procs.append(p)
    try:
        rss_before = target.rss()
        connected, failures = 0, []
        progress(f"{label}: connecting", 0, len(tokens))
        for _ in range(n_workers):
            msg = _get(out, 600, procs)
            connected += msg[1]
            failures += msg[2]
            progress(f"{label}: connecting", connected, len(tokens))
        time.sleep(0.2)  # let the server settle what the handshakes left behind
        rss_connected = target.rss()
        total = connected * runs
        cpu0 = target.cpu()
        t0 = time.time()
        results: list[dict[str, Any]] = []
        pid = target.meter.pid
        sampler = RssSampler(pid) if pid is not None else None
        with sampler if sampler is not None else contextlib.nullcontext():
            go_evt.set()
            done = 0
            progress(f"{label}: running", 0, total)
            while len(results) < n_workers:
                msg = _get(out, config.phase_deadline_s + 300, procs)
                if msg[0] == "runs":
                    done += msg[1]
                    progress(f"{label}: running", done, total)
                elif msg[0] == "result":
                    results.append(msg[1])
        cpu1 = target.cpu()
        users = [u for r in results for u in r["users"]]
        ends = [u.finished for u in users] or [time.time()]
        starts = [r["go"] for r in results] or [t0]
        stop_evt.set()
        return PhaseRaw(
            users=users,
            connected=connected,
            connect_failures=failures,
            wall_s=max(ends) - min(starts),
            client_cpu_s=sum(r["cpu_s"] for r in results),
            server_cpu_s=None if cpu0 is None or cpu1 is None else cpu1 - cpu0,
            server_meter=target.meter.source,
            rss_before=rss_before,
            rss_connected=rss_connected,
            rss_peak=sampler.peak if sampler is not None else None,
            workers=n_workers,
        )
    finally:
        stop_evt.set()
        for p in procs:
            p.join(timeout=30)
            if p.is_alive():
                p.terminate()
                p.join(timeout=5)


def _get(out: Any, timeout_s: float, procs: list[Any]) -> tuple[Any, ...]:
    """The next worker message; fails if every worker died or nothing came in time."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            msg = out.get(timeout=0.5)
        except queue.Empty:
            if not any(p.is_alive() for p in procs):
                raise RuntimeError("the driver's worker processes died") from None
            continue
        if msg[0] == "failed":
            raise RuntimeError(f"a driver worker failed: {msg[1]}")
        return tuple(msg)
    raise TimeoutError(f"no word from the driver's workers in {timeout_s:g}s")


def summarize(
    kind: str, users: int, runs: int, latency_ms: float, raw: PhaseRaw, config: BenchConfig
) -> dict[str, Any]:
    """The per-(target, U) figures the report and the JSON carry."""
    done_runs = sum(u.runs for u in raw.users)
    events = sum(u.events for u in raw.users)
    errors = [e for u in raw.users for e in u.errors] + raw.connect_failures
    wall = max(raw.wall_s, 1e-9)
    spans = sorted(u.finished - u.started for u in raw.users if u.runs)
    median_span = statistics.median(spans) if spans else 0.0
    first_ttfe = sorted(u.ttfe[0] for u in raw.users if u.ttfe)
    cpu = raw.server_cpu_s
    mib = lambda b: None if b is None else round(b / MiB, 2)  # noqa: E731
    rss_per_user = (
        None
        if raw.rss_connected is None or raw.rss_before is None or not raw.connected
        else round((raw.rss_connected - raw.rss_before) / raw.connected / 1024, 2)
    )
    return {
        "target": kind,
        "users": users,
        "connected": raw.connected,
        "runs_per_user": runs,
        "latency_ms": latency_ms,
        "events_per_run": config.events,
        "runs_completed": done_runs,
        "events_received": events,
        "errors": len(errors),
        "error_samples": sorted(set(errors))[:5],
        "stopped_early": done_runs < raw.connected * runs,
        "wall_s": round(wall, 3),
        "runs_per_s": round(done_runs / wall, 1),
        "events_per_s": round(events / wall, 1),
        "time_to_first_event_ms": {
            **_summary_ms([t for u in raw.users for t in u.ttfe], (50, 99)),
            "first_run_p50": _ms(percentile(first_ttfe, 50)),
        },
        "event_latency_ms": _summary_ms(
            [t for u in raw.users for t in u.event_latency], (50, 95, 99)
        ),
        "run_latency_ms": _summary_ms([t for u in raw.users for t in u.run_latency], (50, 99)),
        "fairness": round(spans[-1] / median_span, 3) if spans and median_span > 0 else None,
        "server_cpu_s": None if cpu is None else round(cpu, 3),
        "server_cpu_source": raw.server_meter,
        "server_cpu_ms_per_run": None
        if cpu is None or not done_runs
        else round(cpu * 1000 / done_runs, 3),
        "server_rss_before_mib": mib(raw.rss_before),
        "server_rss_connected_mib": mib(raw.rss_connected),
        "server_peak_rss_mib": mib(raw.rss_peak),
        "rss_per_connected_user_kib": rss_per_user,
        "driver_processes": raw.workers,
        "driver_cpu_s": round(raw.client_cpu_s, 3),
        "driver_cpu_us_per_event": round(raw.client_cpu_s * 1e6 / events, 2) if events else None,
    }


# The modes ------------------------------------------------------------------------------------------


def _warm(target: _Target, config: BenchConfig, progress: Progress) -> None:
    """A few runs before measuring, so imports, caches and the SQLite file are warm everywhere.

    Done in this process (no worker to spawn): nothing of it is measured.
    """
    tokens = create_users(target, 2, f"warm-{secrets.token_hex(3)}", _no_progress)
    progress(f"{target.kind}: warm-up", 0, None)
    job = WorkerJob(
        ws_url=target.ws_url,
        tokens=tokens,
        runs=3,
        input=config.run_input(0),
        deadline_s=config.phase_deadline_s,
        compression=config.compression,
    )
    out: queue.SimpleQueue[Any] = queue.SimpleQueue()
    go, stop = threading.Event(), threading.Event()
    go.set()
    stop.set()
    asyncio.run(run_worker(job, out, go, stop))


def _env_for(config: BenchConfig, users: int) -> dict[str, str]:
    max_runs = config.max_runs or max(256, users)
    return {"TENET_MAX_RUNS": str(max_runs)}


def sweep(
    config: BenchConfig,
    progress: Progress,
    *,
    latency_ms: float,
    runs: int,
    users: Sequence[int],
    targets: Sequence[str],
) -> list[dict[str, Any]]:
    phases = []
    for u in users:
        for kind in targets:
            with _server(config, kind, _env_for(config, u)) as target:
                _warm(target, config, progress)
                tokens = create_users(target, u, f"bench-{secrets.token_hex(3)}", progress)
                raw = run_phase(
                    target,
                    tokens,
                    runs=runs,
                    input=config.run_input(latency_ms),
                    config=config,
                    progress=progress,
                    label=f"{kind} U={u}" + (f" latency={latency_ms:g}ms" if latency_ms else ""),
                )
                phases.append(summarize(kind, u, runs, latency_ms, raw, config))
    return phases


def idle_mode(config: BenchConfig, kind: str, progress: Progress) -> dict[str, Any]:
    """N idle sockets, one per user: RSS per idle connected user."""
    n = config.idle
    env = {"TENET_WS_PING_S": "20"}
    with _server(config, kind, env) as target:
        _warm(target, config, progress)
        tokens = create_users(target, n, f"idle-{secrets.token_hex(3)}", progress)
        raw = run_phase(
            target,
            tokens,
            runs=0,
            input="",
            config=config,
            progress=progress,
            label=f"{kind} idle x{n}",
        )
        per_user = (
            None
            if raw.rss_connected is None or raw.rss_before is None or not raw.connected
            else round((raw.rss_connected - raw.rss_before) / raw.connected / 1024, 2)
        )
        return {
            "target": kind,
            "sockets": n,
            "connected": raw.connected,
            "connect_errors": len(raw.connect_failures),
            "error_samples": raw.connect_failures[:3],
            "rss_before_mib": None if raw.rss_before is None else round(raw.rss_before / MiB, 2),
            "rss_connected_mib": None
            if raw.rss_connected is None
            else round(raw.rss_connected / MiB, 2),
            "rss_per_idle_user_kib": per_user,
        }


def churn_mode(config: BenchConfig, progress: Progress) -> dict[str, Any]:
    """10,000 users come (made, connected), run, and go; does RSS return to its baseline?

    The baseline is taken after one warm-up wave of the same size has come and gone
    (allocator arenas and caches are then at their working size), and sessions are
    given time to be evicted (``TENET_SESSION_IDLE_S=1``) before each reading.
    """
    wave = max(1, min(config.churn_wave, config.churn))
    env = {"TENET_SESSION_IDLE_S": "1", **_env_for(config, wave)}
    with _server(config, "tenet", env) as target:
        if target.server is None:
            raise ValueError("churn mode needs a server started by the bench (no --url)")
        pid = target.server.pid
        fresh = rss_bytes(pid)
        input = config.run_input(0)

        def one_wave(label: str) -> int:
            tokens = create_users(target, wave, f"churn-{secrets.token_hex(3)}", progress)
            raw = run_phase(
                target, tokens, runs=1, input=input, config=config, progress=progress, label=label
            )
            return sum(u.runs for u in raw.users)

        one_wave("churn: warm-up wave")
        time.sleep(3)
        baseline = rss_bytes(pid)
        came = ran = 0
        waves = max(1, config.churn // wave)
        for i in range(waves):
            ran += one_wave(f"churn: wave {i + 1}/{waves}")
            came += wave
        time.sleep(3)
        after = rss_bytes(pid)
        return {
            "users": came,
            "runs": ran,
            "wave": wave,
            "rss_fresh_mib": round(fresh / MiB, 2),
            "rss_baseline_mib": round(baseline / MiB, 2),
            "rss_after_mib": round(after / MiB, 2),
            "growth_pct": round((after - baseline) * 100 / baseline, 2),
        }


# The whole run ---------------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    model = platform.processor() or "unknown"
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as fh:
        for line in fh:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "nproc": os.cpu_count(),
        "cpu": model,
        "python": platform.python_version(),
        "platform": platform.platform(),
        # The machine may be shared: its load says how much the figures can be trusted.
        "loadavg_at_start": [round(x, 2) for x in os.getloadavg()],
    }


def _by(phases: list[dict[str, Any]], kind: str, users: int) -> dict[str, Any] | None:
    return next((p for p in phases if p["target"] == kind and p["users"] == users), None)


def compare(phases: list[dict[str, Any]], users: Sequence[int]) -> list[dict[str, Any]]:
    out = []
    for u in users:
        t, f, n = _by(phases, "tenet", u), _by(phases, "floor", u), _by(phases, "naive", u)
        if t is None:
            continue
        row: dict[str, Any] = {"users": u, "tenet_events_per_s": t["events_per_s"]}
        if f is not None and f["events_per_s"]:
            row["floor_events_per_s"] = f["events_per_s"]
            row["fraction_of_floor"] = round(t["events_per_s"] / f["events_per_s"], 3)
        if n is not None and n["events_per_s"]:
            row["naive_events_per_s"] = n["events_per_s"]
            row["multiple_of_naive"] = round(t["events_per_s"] / n["events_per_s"], 2)
        out.append(row)
    return out


#: The performance targets (issue: "half the floor, and a thousand users as fast as the
#: stack allows"), each judged by :func:`targets` on one run's figures.
GOAL_FRACTION_OF_FLOOR = 0.5
GOAL_MANY_USERS_OVER_FLOOR = 1.2
GOAL_P99_MS = 25.0
GOAL_CPU_MS_PER_RUN = 0.5
GOAL_HISTORY_EXTRA_MS = 0.5
GOAL_IDLE_KIB = 32.0
GOAL_CHURN_PCT = 2.0


def _cpu_per_run(phases: list[dict[str, Any]], kind: str) -> tuple[float | None, int | None]:
    """The worst server CPU per 25-event run at zero latency, and at which U.

    CPU time has the kernel's 10 ms tick: a phase with a fraction of a second of CPU
    (U=1: ten runs) says nothing about 0.5 ms. Judged on the phases that measured
    at least a second, else on all.
    """
    measured = [
        p
        for p in phases
        if p["target"] == kind
        and p["server_cpu_ms_per_run"] is not None
        and p["events_per_run"] == 25
        and p["latency_ms"] == 0
    ]
    precise = [p for p in measured if (p.get("server_cpu_s") or 0) >= 1.0] or measured
    if not precise:
        return None, None
    worst = max(precise, key=lambda p: p["server_cpu_ms_per_run"])
    return worst["server_cpu_ms_per_run"], worst["users"]


def targets(report: dict[str, Any]) -> list[dict[str, Any]]:
    """Each performance target beside what was measured and the floor's same figure.

    ``met`` is None when this run did not measure the figure (a phase skipped, a
    mode turned off); ``floor`` is None where the floor has no such figure (it
    keeps no history and is not churned).
    """
    phases = report["phases"]
    rows: list[dict[str, Any]] = []

    def add(name: str, goal: str, value: Any, ok: bool | None, floor: Any = None) -> None:
        rows.append({"target": name, "goal": goal, "measured": value, "met": ok, "floor": floor})

    def judged(value: float | None, ok: Callable[[float], bool]) -> bool | None:
        return None if value is None else ok(value)

    t100, f100 = _by(phases, "tenet", 100), _by(phases, "floor", 100)
    frac = (
        round(t100["events_per_s"] / f100["events_per_s"], 3)
        if t100 and f100 and f100["events_per_s"]
        else None
    )
    add(
        "tenet / floor events/s, 100 users, zero latency (floor: its events/s)",
        f">= {GOAL_FRACTION_OF_FLOOR:g}",
        frac,
        judged(frac, lambda v: v >= GOAL_FRACTION_OF_FLOOR),
        f100 and f100["events_per_s"],
    )
    lc = report.get("latency_check")
    ratio, floor_ratio = (lc.get("ratio"), lc.get("floor_ratio")) if lc else (None, None)
    add(
        f"{lc['many_users'] if lc else 1000} users vs 1 user, "
        f"{lc['latency_ms'] if lc else 100:g} ms latency: run time ratio",
        f"<= {GOAL_MANY_USERS_OVER_FLOOR:g} x the floor's",
        ratio,
        None
        if ratio is None or floor_ratio is None
        else ratio <= GOAL_MANY_USERS_OVER_FLOOR * floor_ratio,
        floor_ratio,
    )
    t1000, f1000 = _by(phases, "tenet", 1000), _by(phases, "floor", 1000)
    p99 = t1000["event_latency_ms"]["p99"] if t1000 else None
    add(
        "per-event latency p99 (ms), 1000 users",
        f"<= {GOAL_P99_MS:g} ms",
        p99,
        judged(p99, lambda v: v <= GOAL_P99_MS),
        f1000["event_latency_ms"]["p99"] if f1000 else None,
    )
    cpu, at = _cpu_per_run(phases, "tenet")
    floor_cpu = None
    if at is not None and (fp := _by(phases, "floor", at)) is not None:
        floor_cpu = fp["server_cpu_ms_per_run"]
    add(
        f"server CPU per 25-event run (ms; worst U{'' if at is None else f', U={at}'})",
        f"<= {GOAL_CPU_MS_PER_RUN:g} ms",
        cpu,
        judged(cpu, lambda v: v <= GOAL_CPU_MS_PER_RUN),
        floor_cpu,
    )
    hist = report.get("history")
    extra = hist["history_cpu_ms_per_run"] if hist else None
    add(
        f"history: its CPU per run (ms), {hist['turns'] if hist else 50}-turn thread, "
        "against the same run not reading it",
        f"<= {GOAL_HISTORY_EXTRA_MS:g} ms",
        extra,
        judged(extra, lambda v: v <= GOAL_HISTORY_EXTRA_MS),
    )
    idle = {i["target"]: i for i in report.get("idle", [])}
    kib = idle["tenet"]["rss_per_idle_user_kib"] if "tenet" in idle else None
    add(
        f"RSS per idle connected user (KiB, {idle['tenet']['sockets'] if 'tenet' in idle else 10000} sockets)",
        f"<= {GOAL_IDLE_KIB:g} KiB",
        kib,
        judged(kib, lambda v: v <= GOAL_IDLE_KIB),
        idle["floor"]["rss_per_idle_user_kib"] if "floor" in idle else None,
    )
    churn = report.get("churn")
    g = churn["growth_pct"] if churn else None
    add(
        f"RSS growth (%) after {churn['users'] if churn else 10000} users came, ran, went",
        f"<= +{GOAL_CHURN_PCT:g} %",
        g,
        judged(g, lambda v: v <= GOAL_CHURN_PCT),
    )
    return rows


def run_bench(
    config: BenchConfig, progress: Progress = _no_progress, command: str | None = None
) -> dict[str, Any]:
    """Every measurement ``config`` asks for; returns the report (a JSON-able dict)."""
    raise_file_limit()
    started = time.time()
    kinds = [k for k in config.targets if config.url is None or k == "tenet"]
    report: dict[str, Any] = {
        "command": command or " ".join(["tenet", *sys.argv[1:]]),
        "machine": machine(),
        "config": {
            "users": list(config.users),
            "runs": config.runs,
            "latency_ms": config.latency_ms,
            "events": config.events,
            "targets": kinds,
            "workers": config.workers,
            "compression": config.compression,
            "phase_deadline_s": config.phase_deadline_s,
            "history_turns": config.history_turns,
            "history_runs": config.history_runs,
            "url": config.url,
            "server_pid": config.server_pid,
            "store": "sqlite (fresh file per server)" if config.url is None else "as served",
        },
    }
    report["phases"] = sweep(
        config,
        progress,
        latency_ms=config.latency_ms,
        runs=config.runs,
        users=config.users,
        targets=kinds,
    )
    report["comparison"] = compare(report["phases"], config.users)
    report["latency_check"] = None
    if config.latency_check_ms > 0 and "tenet" in kinds:
        many = max(config.users)
        lat = sweep(
            config,
            progress,
            latency_ms=config.latency_check_ms,
            runs=config.latency_check_runs,
            users=sorted({1, many}),
            # The floor, with the same latency, shows what the stack alone allows here.
            targets=[k for k in ("tenet", "floor") if k in kinds],
        )

        def ratio(kind: str) -> tuple[float | None, float | None, float | None]:
            mine = [p for p in lat if p["target"] == kind]
            if not mine:
                return None, None, None
            one, big = mine[0], mine[-1]
            r = round(big["wall_s"] / one["wall_s"], 3) if one["wall_s"] else None
            return one["wall_s"], big["wall_s"], r

        one_s, many_s, tenet_ratio = ratio("tenet")
        report["latency_check"] = {
            "latency_ms": config.latency_check_ms,
            "runs_per_user": config.latency_check_runs,
            "many_users": many,
            "one_user_wall_s": one_s,
            "many_users_wall_s": many_s,
            "ratio": tenet_ratio,
            "floor_ratio": ratio("floor")[2],
            "phases": lat,
        }
    report["idle"] = (
        [idle_mode(config, k, progress) for k in ("tenet", "floor") if k in kinds]
        if config.idle > 0
        else []
    )
    report["churn"] = (
        churn_mode(config, progress) if config.churn > 0 and config.url is None else None
    )
    report["history"] = None
    if config.history_turns > 0 and config.url is None and "tenet" in kinds:
        from .history import run_history_bench

        report["history"] = run_history_bench(config.history_turns, config.history_runs, progress)
    report["targets"] = targets(report)
    report["machine"]["loadavg_at_end"] = [round(x, 2) for x in os.getloadavg()]
    report["seconds"] = round(time.time() - started, 1)
    return report
