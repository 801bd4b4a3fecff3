"""``tenet bench --soak MINUTES``: a long mixed workload that must lose nothing.

One ``tenet serve`` process (SQLite, in a temporary folder) serves the example
agents plus a ``flaky`` agent whose runs succeed, call a tool that fails, call a
tool that times out, raise, or outlive the run timeout. Simulated users, each on
its own WebSocket, do random things until the time is up: start runs on new and
old threads, cancel them, drop the connection mid-run and come back with
``subscribe`` + ``after``, and read slowly enough to overflow their queue (4008)
and resume. Every user records what it received per thread.

At the end every user's received events are compared with the stored ones,
thread by thread: an event stored and never received is *lost*, one received
twice is *duplicated*, one received out of order (a gap in ``seq``) is a *gap*,
one whose bytes differ from the stored ones is *mismatched*. All must be 0. The
report's ``faults`` names up to 10 faulty threads: the events missing, the stored
events around them, and the user's trace of the thread (its requests, the
answers, the ranges of events received on each socket, opens and closes), which
is what tells a server fault from the client's own bookkeeping. The
server's resident memory is sampled every second; its slope (least-squares fit
over the run, first minute excluded when there is more) shows a leak. Errors are
counted by kind: close codes, error frames, and how runs ended.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import secrets
import shutil
import socket
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson

from ..agents import Agent
from ..context import RunContext
from ..errors import ToolFailed
from ..registry import AgentRegistry
from ..tools import tool
from .procs import ServerProcess, raise_file_limit, rss_bytes

SOAK_APP = "tenet.bench.soak:registry"
TERMINAL = frozenset({"run_cancelled", "agent_completed", "agent_error"})
#: Threads a user keeps following; older ones whose runs all ended are unsubscribed (their
#: record is complete) so that a reconnect resubscribes a few threads, not hundreds.
ACTIVE_THREADS = 6
#: Entries of a thread's trace kept (the latest): enough to see how its last runs went.
TRACE_MAX = 400

#: Server settings of the soak: short timeouts so that timeouts happen. Slow
#: readers overflow the default socket queue with runs of 20,000 events.
SERVER_ENV = {
    "TENET_RUN_TIMEOUT_S": "3",
    "TENET_TOOL_TIMEOUT_S": "0.5",
    "TENET_USER_MAX_RUNS": "2",
    "TENET_SESSION_IDLE_S": "5",
}


# The server side: a flaky agent ----------------------------------------------------------------


@tool
async def fail(reason: str) -> str:
    """Always fails (a tool that breaks)."""
    raise ToolFailed("tool_broke", f"failed on purpose: {reason}")


@tool
async def stall(seconds: float) -> str:
    """Sleeps (longer than the tool timeout of the soak)."""
    await asyncio.sleep(seconds)
    return "woke up"


class FlakyAgent(Agent):
    """``mode=ok|tool_fail|tool_timeout|raise|timeout events=N`` in the input."""

    def __init__(self) -> None:
        super().__init__(
            name="flaky",
            description="Succeeds, fails, times out: for the soak.",
            tools=[fail, stall],
        )

    async def run(self, ctx: RunContext, input: str) -> str:
        opts = dict(part.partition("=")[::2] for part in input.split())
        mode = opts.get("mode", "ok")
        events = min(max(int(opts.get("events", "10") or 10), 1), 20_000)
        await ctx.think(f"mode {mode}")
        if mode == "tool_fail":
            with contextlib.suppress(ToolFailed):
                await ctx.call_tool("fail", reason="soak")
        elif mode == "tool_timeout":
            with contextlib.suppress(ToolFailed):
                await ctx.call_tool("stall", seconds=5.0)
        for i in range(events):
            await ctx.say(f"t{i} ")
            if i % 20 == 19 and events < 1000:
                await asyncio.sleep(0.01)
        if mode == "raise":
            raise RuntimeError("the flaky agent broke")
        if mode == "timeout":
            await asyncio.sleep(60)
        return f"{mode} done"


def _registry() -> AgentRegistry:
    from ..examples import default_registry

    return AgentRegistry([*default_registry(), FlakyAgent()])


def __getattr__(name: str) -> AgentRegistry:
    # Built on access (``--app tenet.bench.soak:registry``): no state at import.
    if name == "registry":
        return _registry()
    raise AttributeError(name)


# The client side ---------------------------------------------------------------------------------


@dataclass
class ThreadLog:
    """What one user received of one thread, and how (for the report of a fault)."""

    received: dict[int, str] = field(default_factory=dict)
    last_seq: int = 0
    #: The thread's story as this user saw it: ``[seconds, socket number, what, ...]`` per
    #: request, answer and close; consecutive events on one socket share one
    #: ``[.., "events", first seq, last seq]`` entry, a run's end has one of its own.
    trace: list[list[Any]] = field(default_factory=list)
    #: Events received twice, and ``seq`` skipped, on this thread.
    faults: int = 0

    def note(self, conn: int, *what: Any) -> None:
        self.trace.append([round(time.monotonic() % 100_000, 3), conn, *what])
        if len(self.trace) > TRACE_MAX:
            del self.trace[: len(self.trace) - TRACE_MAX]

    def note_event(self, conn: int, seq: int) -> None:
        last = self.trace[-1] if self.trace else None
        if last is not None and last[1] == conn and last[2] == "events" and last[4] + 1 == seq:
            last[4] = seq
        else:
            self.note(conn, "events", seq, seq)


@dataclass
class SoakTotals:
    errors: Counter[str] = field(default_factory=Counter)
    outcomes: Counter[str] = field(default_factory=Counter)
    runs_started: int = 0
    reconnects: int = 0
    duplicated: int = 0
    gaps: int = 0


@dataclass
class SoakConfig:
    minutes: float = 1.0
    users: int = 20
    seed: int = 1
    url: str | None = None
    admin_token: str | None = None
    #: Where the whole server log is copied when the soak fails (None: only its tail is kept).
    server_log: str | None = None


class SoakUser:
    """One simulated user: one socket at a time, many threads, random behaviour."""

    def __init__(self, ws_url: str, token: str, rng: random.Random, totals: SoakTotals) -> None:
        self.ws_url = ws_url
        self.token = token
        self.rng = rng
        self.totals = totals
        self.threads: dict[str, ThreadLog] = {}
        self.open_runs: set[str] = set()
        self.run_thread: dict[str, str] = {}
        self.active: list[str] = []
        #: Threads the current socket follows (its subscribe was answered, or a run started
        #: there on it). A run on any other thread would start the socket's stream at that
        #: run, skipping what the thread got meanwhile (PROTOCOL.md), so runs go only here.
        self.followed: set[str] = set()
        self.ended_runs: set[str] = set()
        #: Runs this user knows it started (their ``run_accepted`` came, or they ended).
        self.known_runs: set[str] = set()
        #: Run requests not answered yet, by ``ref``: the thread they name (None: a new one).
        #: A late answer still counts (the run exists), and until it comes its thread is
        #: busy: retiring it would stop the run's events reaching this socket.
        self.unanswered: dict[str, str | None] = {}
        self._answers: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._next_ref = 0
        #: How long a run request waits for its answer before the user moves on.
        self.answer_timeout_s = 10.0
        self.ws: Any = None
        self.reader: asyncio.Task[None] | None = None
        self.paused = asyncio.Event()
        self.paused.set()
        self._later: set[asyncio.Task[None]] = set()
        #: How many sockets this user opened; the current one's number is ``conn``.
        self.conn = 0
        #: ``[seconds, socket number, what]``: opens and closes, for the report of a fault.
        self.sockets: list[list[Any]] = []

    async def connect(self) -> None:
        from websockets.asyncio.client import connect

        host, _, rest = self.ws_url.removeprefix("ws://").partition(":")
        port = int(rest.split("/", 1)[0])
        for attempt in range(50):
            try:
                # A small receive buffer, so that a user who stops reading is soon "too slow".
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 * 1024)
                sock.setblocking(False)
                await asyncio.get_running_loop().sock_connect(sock, (host, port))
                self.ws = await connect(
                    self.ws_url,
                    sock=sock,
                    additional_headers={"Authorization": f"Bearer {self.token}"},
                    max_size=16 * 1024 * 1024,
                    open_timeout=30,
                    close_timeout=2,
                )
                ready = orjson.loads(await asyncio.wait_for(self.ws.recv(), 30))
                if ready.get("type") != "ready":
                    raise RuntimeError(f"expected ready, got {ready}")
                break
            except Exception as exc:
                self.totals.errors[f"connect:{type(exc).__name__}"] += 1
                await asyncio.sleep(0.2 * (attempt + 1))
        else:
            raise RuntimeError("could not connect")
        self.paused.set()
        self.followed = set()
        self.conn += 1
        self._log_socket("open")
        # Answers still owed by the previous socket died with it.
        self.unanswered.clear()
        self.reader = asyncio.create_task(self._read(self.ws, self.conn))
        # Resume every thread where this user left it: no gap, no duplicate.
        for thread_id in list(self.active):
            await self._subscribe(self.ws, thread_id)

    def _log_socket(self, what: str) -> None:
        self.sockets.append([round(time.monotonic() % 100_000, 3), self.conn, what])
        del self.sockets[:-TRACE_MAX]

    async def _subscribe(self, ws: Any, thread_id: str) -> None:
        log = self.threads[thread_id]
        frame = {"type": "subscribe", "thread_id": thread_id, "after": log.last_seq}
        frame["ref"] = "sub:" + thread_id
        log.note(self.conn, "subscribe", log.last_seq)
        with contextlib.suppress(Exception):
            await ws.send(orjson.dumps(frame).decode())

    async def _resubscribe_later(self, ws: Any, thread_id: str, delay: float) -> None:
        await asyncio.sleep(delay)
        if self.ws is ws:
            await self._subscribe(ws, thread_id)

    async def disconnect(self) -> None:
        ws, reader = self.ws, self.reader
        self.ws = self.reader = None
        self._log_socket("client closes")
        if ws is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(ws.close(), 3)
        if reader is not None:
            reader.cancel()
            with contextlib.suppress(BaseException):
                await reader

    async def _read(self, ws: Any, conn: int = 0) -> None:
        from websockets.exceptions import ConnectionClosed

        try:
            async for raw in ws:
                await self.paused.wait()
                if self.ws is not ws and self.ws is not None:
                    # Replaced: the new socket resumed after what was handled so far, and
                    # follows what it subscribed to, not what this one did.
                    return
                frame = orjson.loads(raw)
                self._on_frame(frame, raw if isinstance(raw, str) else raw.decode(), conn)
        except ConnectionClosed as exc:
            code = exc.rcvd.code if exc.rcvd else None
            self.sockets.append([round(time.monotonic() % 100_000, 3), conn, f"closed {code}"])
            if code not in (None, 1000):
                self.totals.errors[f"close:{code}"] += 1
        if self.ws is ws:  # the server closed it (4008 or else): come back and resume
            self.ws = None

    def _on_frame(self, frame: dict[str, Any], raw: str, conn: int = 0) -> None:
        kind = frame.get("type")
        if kind in ("subscribed", "unsubscribed") and frame["thread_id"] in self.threads:
            self.threads[frame["thread_id"]].note(conn, kind, frame.get("last_seq"))
        if kind == "subscribed":
            self.followed.add(frame["thread_id"])
            return
        if kind == "run_accepted":
            self.followed.add(frame["thread_id"])
            self.threads.setdefault(frame["thread_id"], ThreadLog()).note(
                conn, "run_accepted", frame["run_id"], frame.get("ref")
            )
            self._accepted(frame)
            self._answered(frame)
            return
        if kind == "error":
            self.totals.errors[f"error_frame:{frame.get('code')}"] += 1
            ref = frame.get("ref") or ""
            if ref.startswith("sub:") and ref[4:] in self.threads:
                self.threads[ref[4:]].note(conn, "error", frame.get("code"))
            if ref.startswith("run:"):
                self._answered(frame)
            elif ref.startswith("sub:") and frame.get("code") == "rate_limited":
                # Over the user's request rate: subscribe again a moment later, as a client must.
                self._later.add(asyncio.create_task(self._resubscribe_later(self.ws, ref[4:], 0.5)))
                self._later = {t for t in self._later if not t.done()}
            return
        if "seq" not in frame or "thread_id" not in frame:
            return
        log = self.threads.setdefault(frame["thread_id"], ThreadLog())
        seq = frame["seq"]
        if seq in log.received:
            self.totals.duplicated += 1
            log.faults += 1
            log.note(conn, "duplicate", seq)
        elif seq != log.last_seq + 1:
            self.totals.gaps += 1
            log.faults += 1
            log.note(conn, "gap", log.last_seq, seq)
        if kind in TERMINAL:
            log.note(conn, kind, seq, frame.get("run_id"), frame.get("depth"))
        else:
            log.note_event(conn, seq)
        log.received.setdefault(seq, raw)
        log.last_seq = max(log.last_seq, seq)
        if kind in TERMINAL and (kind == "run_cancelled" or frame.get("depth") == 0):
            self.open_runs.discard(frame["run_id"])
            self.run_thread.pop(frame["run_id"], None)
            self.ended_runs.add(frame["run_id"])
            if frame["run_id"] not in self.known_runs:
                # Its answer was dropped with a socket closed under it (4008): the run
                # was started all the same, and this is how the user learns of it.
                self.known_runs.add(frame["run_id"])
                self.totals.runs_started += 1
            outcome = kind
            if kind == "agent_error":
                outcome = f"agent_error:{frame['error']['code']}"
            elif kind == "run_cancelled":
                outcome = f"run_cancelled:{frame.get('reason')}"
            self.totals.outcomes[outcome] += 1

    def _answered(self, frame: dict[str, Any]) -> None:
        """Hand a run request's answer to the request waiting for that ``ref``, if any."""
        ref = frame.get("ref") or ""
        self.unanswered.pop(ref, None)
        waiter = self._answers.pop(ref, None)
        if waiter is not None and not waiter.done():
            waiter.set_result(frame)

    def _accepted(self, frame: dict[str, Any]) -> None:
        """Count a run the server accepted, whether its request still waits or gave up."""
        run_id, thread_id = frame["run_id"], frame["thread_id"]
        if run_id in self.known_runs:
            return
        self.known_runs.add(run_id)
        self.totals.runs_started += 1
        if run_id not in self.ended_runs:  # a fast run may have ended already
            self.open_runs.add(run_id)
            self.run_thread[run_id] = thread_id
        if thread_id not in self.active:
            self.active.append(thread_id)

    async def send(self, frame: dict[str, Any]) -> bool:
        if self.ws is None:
            await self.connect()
        try:
            await self.ws.send(orjson.dumps(frame).decode())
            return True
        except Exception:
            self.ws = None
            return False

    async def start_run(self, *, big: bool = False) -> None:
        r = self.rng.random()
        if big:
            frame: dict[str, Any] = {"agent": "flaky", "input": "mode=ok events=20000"}
        elif r < 0.45:
            frame = {
                "agent": "benchmark",
                "input": f"latency_ms={self.rng.choice([0, 20, 100])} "
                f"events={self.rng.randint(5, 60)}",
            }
        elif r < 0.55:
            frame = {"agent": "assistant", "input": "what is 6 * 7? remember that"}
        else:
            mode = self.rng.choice(["ok", "tool_fail", "tool_timeout", "raise", "timeout"])
            frame = {"agent": "flaky", "input": f"mode={mode} events={self.rng.randint(5, 200)}"}
        # Each request its own ref: an answer that comes after its request gave up must not
        # be taken for the answer to a later one (its run would be tracked on the wrong thread).
        ref = f"run:{self._next_ref}"
        self._next_ref += 1
        frame.update(type="run", ref=ref)
        followed = [t for t in self.active if t in self.followed]
        if followed and self.rng.random() < 0.5:
            frame["thread_id"] = self.rng.choice(followed)
        if self.ws is None:
            await self.connect()
        if frame.get("thread_id") in self.threads:
            self.threads[frame["thread_id"]].note(self.conn, "run", ref)
        self.unanswered[ref] = frame.get("thread_id")
        answer = self._answers[ref] = asyncio.get_running_loop().create_future()
        if not await self.send(frame):
            self._answers.pop(ref, None)
            return
        try:
            await asyncio.wait_for(asyncio.shield(answer), self.answer_timeout_s)
        except TimeoutError:
            # The run may still be accepted: its answer then counts it (see _accepted).
            self._answers.pop(ref, None)
            self.totals.errors["run_not_answered"] += 1
            return
        if answer.result().get("type") == "run_accepted":
            await self._retire()

    async def _retire(self) -> None:
        busy = {self.run_thread[r] for r in self.open_runs if r in self.run_thread}
        busy.update(t for t in self.unanswered.values() if t is not None)
        for thread_id in list(self.active):
            if len(self.active) <= ACTIVE_THREADS:
                return
            if thread_id not in busy and self.ws is not None:
                self.active.remove(thread_id)
                self.followed.discard(thread_id)
                self.threads[thread_id].note(self.conn, "unsubscribe")
                with contextlib.suppress(Exception):
                    await self.ws.send(
                        orjson.dumps({"type": "unsubscribe", "thread_id": thread_id}).decode()
                    )

    async def step(self) -> None:
        r = self.rng.random()
        if r < 0.5 or not self.open_runs:
            await self.start_run()
        elif r < 0.62:
            run_id = self.rng.choice(list(self.open_runs))
            if run_id in self.run_thread:
                self.threads[self.run_thread[run_id]].note(self.conn, "cancel", run_id)
            await self.send({"type": "cancel", "run_id": run_id})
        elif r < 0.74:  # drop the connection mid-run, come back a moment later
            self.totals.reconnects += 1
            await self.disconnect()
            await asyncio.sleep(self.rng.uniform(0.0, 0.5))
            await self.connect()
        elif r < 0.84:  # a slow reader: stop reading for a while, sometimes during a flood
            big = self.rng.random() < 0.15
            if big:  # megabytes of events: more than the socket buffers hold
                await self.start_run(big=True)
            self.paused.clear()
            await asyncio.sleep(self.rng.uniform(3.0, 5.0) if big else self.rng.uniform(0.5, 2.0))
            self.paused.set()
        await asyncio.sleep(self.rng.uniform(0.1, 0.6))

    async def finish(self, timeout_s: float) -> None:
        """Wait for every started run to end, resuming when the server closes the socket."""
        deadline = time.monotonic() + timeout_s
        self.paused.set()
        while self.open_runs and time.monotonic() < deadline:
            if self.ws is None:
                with contextlib.suppress(Exception):
                    await self.connect()
            await asyncio.sleep(0.1)
        # Catch up with what the server stored last (e.g. a run's end sent just before a close).
        if self.ws is None:
            with contextlib.suppress(Exception):
                await self.connect()
        await asyncio.sleep(0.5)


async def _stored(http: httpx.AsyncClient, token: str, thread_id: str) -> list[str]:
    bodies: list[str] = []
    after = 0
    while True:
        r = await http.get(
            f"/v1/threads/{thread_id}/events",
            params={"after": after, "limit": 1000},
            headers={"Authorization": f"Bearer {token}"},
        )
        if r.status_code == 429:  # the user's request rate: wait as told, like any good client
            await asyncio.sleep(float(r.headers.get("Retry-After", "1")))
            continue
        r.raise_for_status()
        page = [orjson.dumps(e).decode() for e in r.json()]
        bodies += page
        if len(page) < 1000:
            return bodies
        after = orjson.loads(page[-1])["seq"]


def _slope_mib_per_min(samples: list[tuple[float, int]]) -> float | None:
    """Least-squares slope of RSS over time, MiB per minute (first minute dropped if longer)."""
    if len(samples) > 120:
        t0 = samples[0][0]
        samples = [s for s in samples if s[0] - t0 >= 60]
    if len(samples) < 3:
        return None
    n = len(samples)
    mx = sum(t for t, _ in samples) / n
    my = sum(v for _, v in samples) / n
    sxx = sum((t - mx) ** 2 for t, _ in samples)
    if sxx == 0:
        return None
    sxy = sum((t - mx) * (v - my) for t, v in samples)
    return sxy / sxx * 60 / (1024 * 1024)


async def _soak(config: SoakConfig, url: str, ws_url: str, admin: str, pid: int | None) -> dict:
    rng = random.Random(config.seed)
    totals = SoakTotals()
    samples: list[tuple[float, int]] = []
    started = time.monotonic()
    stop = asyncio.Event()

    async def sample() -> None:
        while not stop.is_set():
            if pid is not None:
                with contextlib.suppress(OSError):
                    samples.append((time.monotonic() - started, rss_bytes(pid)))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 1.0)

    async with httpx.AsyncClient(base_url=url, timeout=30) as http:
        tokens = []
        for i in range(config.users):
            r = await http.post(
                "/v1/users",
                json={"name": f"soak-{i}-{secrets.token_hex(3)}"},
                headers={"Authorization": f"Bearer {admin}"},
            )
            r.raise_for_status()
            tokens.append(r.json()["token"])
        users = [SoakUser(ws_url, t, random.Random(rng.random()), totals) for t in tokens]
        sampler = asyncio.create_task(sample())
        deadline = started + config.minutes * 60

        async def life(user: SoakUser) -> None:
            await user.connect()
            while time.monotonic() < deadline:
                try:
                    await user.step()
                except Exception as exc:
                    totals.errors[f"client:{type(exc).__name__}"] += 1
                    user.ws = None
                    await asyncio.sleep(0.2)
            await user.finish(60)

        await asyncio.gather(*(life(u) for u in users))
        stop.set()
        await sampler
        # Compare what each user received with what is stored.
        lost = mismatched = phantom = stored_total = received_total = unfinished = 0
        faults: list[dict[str, Any]] = []
        for number, user in enumerate(users):
            unfinished += len(user.open_runs)
            unfinished_threads = {user.run_thread.get(r) for r in user.open_runs}
            for thread_id, log in user.threads.items():
                stored = await _stored(http, user.token, thread_id)
                stored_total += len(stored)
                received_total += len(log.received)
                by_seq = {orjson.loads(b)["seq"]: b for b in stored}
                missing = []
                for seq, body in by_seq.items():
                    got = log.received.get(seq)
                    if got is None:
                        lost += 1
                        missing.append(seq)
                    elif orjson.loads(got) != orjson.loads(body):
                        mismatched += 1
                phantom += sum(1 for seq in log.received if seq not in by_seq)
                if (missing or log.faults or thread_id in unfinished_threads) and len(faults) < 10:
                    faults.append(_fault(number, user, thread_id, log, by_seq, missing))
            await user.disconnect()
    return {
        "minutes": config.minutes,
        "users": config.users,
        "seconds": round(time.monotonic() - started, 1),
        "runs_started": totals.runs_started,
        "outcomes": dict(totals.outcomes),
        "reconnects": totals.reconnects,
        "events_stored": stored_total,
        "events_received": received_total,
        "lost": lost,
        "duplicated": totals.duplicated,
        "gaps": totals.gaps,
        "mismatched": mismatched,
        "phantom": phantom,
        "unfinished_runs": unfinished,
        "errors": dict(totals.errors),
        "faults": faults,
        "rss_start_mib": round(samples[0][1] / 2**20, 1) if samples else None,
        "rss_end_mib": round(samples[-1][1] / 2**20, 1) if samples else None,
        "rss_peak_mib": round(max(v for _, v in samples) / 2**20, 1) if samples else None,
        "rss_slope_mib_per_min": _round(_slope_mib_per_min(samples)),
    }


def _fault(
    number: int,
    user: SoakUser,
    thread_id: str,
    log: ThreadLog,
    stored: dict[int, str],
    missing: list[int],
) -> dict[str, Any]:
    """What the report says of one thread with a fault: enough to tell which event and why."""

    def brief(seq: int) -> list[Any]:
        event = orjson.loads(stored[seq])
        return [seq, event.get("type"), event.get("run_id"), event.get("depth")]

    near = sorted({s for m in missing for s in range(m - 3, m + 4) if s in stored})
    return {
        "user": number,
        "thread_id": thread_id,
        "missing": [brief(s) for s in missing[:20]],
        "stored_near_missing": [brief(s) for s in near[:60]],
        "stored_last": [brief(s) for s in sorted(stored)[-5:]],
        "open_runs": sorted(r for r in user.open_runs if user.run_thread.get(r) == thread_id),
        "followed_now": thread_id in user.followed,
        "active_now": thread_id in user.active,
        "trace": log.trace[-150:],
        "sockets": user.sockets[-60:],
    }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def run_soak(config: SoakConfig) -> dict[str, Any]:
    """Run the soak (against a fresh ``tenet serve`` unless ``config.url`` is given)."""
    raise_file_limit()
    if config.url:
        assert config.admin_token, "--admin-token is needed with --url"
        ws_url = config.url.replace("http", "ws", 1).rstrip("/") + "/v1/ws"
        return asyncio.run(_soak(config, config.url, ws_url, config.admin_token, None))
    admin = secrets.token_urlsafe(16)
    server = _SoakServer(admin_token=admin, env=SERVER_ENV)
    with server:
        report = asyncio.run(_soak(config, server.url, server.ws_url, admin, server.pid))
        failed = report_failed(report)
        report["server_log_tail"] = server.log_tail(10) if failed else ""
        report["server_log"] = None
        if failed and config.server_log:
            # The server's directory goes with it; a failure is read from the whole log.
            shutil.copyfile(server.workdir / "server.log", config.server_log)
            report["server_log"] = config.server_log
    return report


def report_failed(report: dict[str, Any]) -> bool:
    keys = ("lost", "duplicated", "gaps", "mismatched", "phantom", "unfinished_runs")
    return any(report.get(k) for k in keys) or bool(
        report.get("errors", {}).get("error_frame:internal")
    )


class _SoakServer(ServerProcess):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__("tenet", **kwargs)

    def command(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "tenet.cli",
            "serve",
            "--port",
            str(self.port),
            "--app",
            SOAK_APP,
        ]
