"""The isolation audit: canary users against a live server, every channel checked.

It creates N canary users, each with unique secrets in its inputs, notes and
thread metadata, runs their agents concurrently over real WebSockets, then reads
everything each user is allowed to read (WebSocket frames, SSE, every REST
body) and checks:

- ``routing``: every frame a user receives carries that user's own ids;
- ``content``: no other user's secret appears anywhere a user can read;
- ``sequence``: live events equal stored events, gap-free, in protocol order;
- ``probes``: asking for another user's thread or run, on every endpoint and
  frame, answers exactly as asking for a random id does; so does answering or
  listing another user's waiting approvals and questions (see ``waiting.py``),
  which stay answerable by their owner;
- ``smuggling``: identity fields put into bodies and frames are ignored;
- ``state``: each user's notes recall that user's secret and nobody else's;
- ``guard``: the server's last-step isolation guard stopped nothing;
- ``mcp``: each user's calls of an MCP tool marked for the audit see that user's
  own MCP session and credential, nobody else's (:mod:`tenet.audit.mcp_canary`;
  left out of the report when the deployment marks no MCP server);
- ``fairness``: the slowest user's time against the median.

It speaks only the public protocol, so it audits any deployment.
"""

from __future__ import annotations

import asyncio
import secrets
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson
from websockets.asyncio.client import ClientConnection, connect

from . import mcp_canary
from .checks import is_terminal, run_violations, seq_violations
from .waiting import WaitingProbe

CHECKS = (
    "routing",
    "content",
    "sequence",
    "probes",
    "smuggling",
    "state",
    "guard",
    "mcp",
    "fairness",
)


@dataclass
class CheckResult:
    name: str
    checked: int = 0
    violations: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.violations


@dataclass
class AuditReport:
    users: int
    runs: int
    events: int
    seconds: float
    checks: dict[str, CheckResult]
    fairness_ratio: float = 0.0

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks.values())

    @property
    def violations(self) -> int:
        return sum(len(c.violations) for c in self.checks.values())

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "users": self.users,
            "runs": self.runs,
            "events": self.events,
            "seconds": round(self.seconds, 3),
            "fairness_ratio": round(self.fairness_ratio, 3),
            "violations": self.violations,
            "checks": {
                name: {
                    "checked": c.checked,
                    "violations": len(c.violations),
                    "details": c.violations[:50],
                }
                for name, c in self.checks.items()
            },
        }


@dataclass
class Canary:
    index: int
    name: str
    user_id: str = ""
    token: str = ""
    secret: str = ""
    threads: list[str] = field(default_factory=list)
    runs: list[str] = field(default_factory=list)
    frames: list[dict[str, Any]] = field(default_factory=list)
    raw: list[str] = field(default_factory=list)  # everything this user read, as text
    seconds: float = 0.0
    recall_answer: str = ""


class IsolationAudit:
    """Runs the audit against ``url`` with an admin token that may create users."""

    def __init__(
        self,
        url: str,
        admin_token: str,
        *,
        users: int = 8,
        runs: int = 2,
        fairness_limit: float = 3.0,
        timeout_s: float = 120.0,
        progress: Callable[[str, int], None] | None = None,
        sign_jwt: Callable[[str], str] | None = None,
    ) -> None:
        """``sign_jwt``, if given, makes a JWT for a canary's subject: the canaries then sign
        in with JWTs (a server in ``TENET_AUTH=jwt|both`` mode) instead of being created with
        the admin token, which is still needed to read the guard's counter."""
        if users < 2:
            raise ValueError("an isolation audit needs at least 2 users")
        self.url = url.rstrip("/")
        self.ws_url = "ws" + self.url[4:] + "/v1/ws"
        self.admin_token = admin_token
        self.n_users = users
        self.n_runs = max(1, runs)
        self.fairness_limit = fairness_limit
        self.timeout_s = timeout_s
        self._progress = progress or (lambda _stage, _n: None)
        self.checks = {name: CheckResult(name) for name in CHECKS}
        self._tag = secrets.token_hex(4)
        self._sign_jwt = sign_jwt

    @staticmethod
    def step_count(users: int) -> int:
        """How many progress steps :meth:`run` reports for ``users`` canaries."""
        return users * 6 + 1

    async def run(self) -> AuditReport:
        started = time.perf_counter()
        limits = httpx.Limits(max_connections=max(20, self.n_users * 2))
        async with httpx.AsyncClient(base_url=self.url, timeout=30.0, limits=limits) as http:
            self.http = http
            canaries = [Canary(i, f"canary-{self._tag}-{i}") for i in range(self.n_users)]
            await asyncio.gather(*(self._create(c) for c in canaries))
            await asyncio.gather(*(self._work(c, canaries) for c in canaries))
            await asyncio.gather(*(self._ag_ui(c) for c in canaries))
            await WaitingProbe(self, canaries).run()
            mcp = self.checks["mcp"]
            checked = await mcp_canary.run(
                http, canaries, self._auth, mcp.violations, timeout_s=self.timeout_s
            )
            if checked is None:
                del self.checks["mcp"]  # the deployment marks no MCP server: nothing to check
            else:
                mcp.checked += checked
            await asyncio.gather(*(self._read_everything(c) for c in canaries))
            await asyncio.gather(*(self._probe(c, canaries) for c in canaries))
            await self._check_guard()
        self._check_routing_and_content(canaries)
        ratio = self._check_fairness(canaries)
        return AuditReport(
            users=self.n_users,
            runs=sum(len(c.runs) for c in canaries),
            events=sum(len([f for f in c.frames if "seq" in f]) for c in canaries),
            seconds=time.perf_counter() - started,
            checks=self.checks,
            fairness_ratio=ratio,
        )

    # Phases -----------------------------------------------------------------------------------

    async def _create(self, c: Canary) -> None:
        if self._sign_jwt is not None:
            await self._sign_in_with_jwt(c)
            return
        r = await self.http.post(
            "/v1/users",
            json={"name": c.name},
            headers={"Authorization": f"Bearer {self.admin_token}"},
        )
        if r.status_code != 201:
            raise RuntimeError(f"cannot create canary users: {r.status_code} {r.text[:200]}")
        body = r.json()
        c.user_id, c.token = body["user_id"], body["token"]
        c.secret = f"canary{c.index}s{secrets.token_hex(8)}"
        self._progress("users", 1)

    async def _sign_in_with_jwt(self, c: Canary) -> None:
        """The canary's user is made by its first JWT; it must be the subject's own."""
        assert self._sign_jwt is not None
        c.token = self._sign_jwt(c.name)
        r = await self.http.get("/v1/me", headers=self._auth(c))
        if r.status_code != 200:
            raise RuntimeError(f"the server refused a canary's JWT: {r.status_code} {r.text[:200]}")
        body = r.json()
        if body.get("subject") != c.name:
            raise RuntimeError(f"a canary's JWT signed in someone else: {body}")
        c.user_id = body["user_id"]
        c.secret = f"canary{c.index}s{secrets.token_hex(8)}"
        self._progress("users", 1)

    def _auth(self, c: Any) -> dict[str, str]:
        return {"Authorization": f"Bearer {c.token}"}

    async def _work(self, c: Canary, all_canaries: list[Canary]) -> None:
        """The user's own activity: a thread with secret metadata, runs over WebSocket."""
        other = all_canaries[(c.index + 1) % len(all_canaries)]
        started = time.perf_counter()
        smuggled = {
            "metadata": {"secret": c.secret},
            "user_id": other.user_id,
            "id": "thr_" + "A" * 22,
        }
        r = await self.http.post("/v1/threads", json=smuggled, headers=self._auth(c))
        self.checks["smuggling"].checked += 1
        if r.status_code != 201:
            self.checks["smuggling"].violations.append(
                f"{c.name}: thread creation with extra identity fields answered {r.status_code}"
            )
            return
        thread = r.json()
        c.threads.append(thread["id"])
        if thread["id"] == smuggled["id"] or (
            "user_id" in thread and thread["user_id"] != c.user_id
        ):
            self.checks["smuggling"].violations.append(
                f"{c.name}: a smuggled id was used for a thread"
            )
        inputs = [
            ("assistant", f"remember that my secret is {c.secret}", thread["id"]),
            ("assistant", "what is my secret?", thread["id"]),
            ("researcher", f"research python for {c.secret}", None),
        ]
        inputs += [("benchmark", f"events=25 {c.secret}", None) for _ in range(self.n_runs)]
        async with connect(self.ws_url, additional_headers=self._auth(c), max_size=2**24) as ws:
            ready = await self._recv(ws, c)
            if ready.get("type") != "ready":
                raise RuntimeError(f"{c.name}: no ready frame: {ready}")
            for agent, text, thread_id in inputs:
                frame: dict[str, Any] = {"type": "run", "agent": agent, "input": text, "ref": agent}
                if thread_id:
                    frame["thread_id"] = thread_id
                frame["user_id"] = other.user_id  # smuggled identity: must be ignored
                await ws.send(orjson.dumps(frame).decode())
                try:
                    run_id = await self._until_terminal(ws, c)
                except TimeoutError:
                    self.checks["sequence"].violations.append(
                        f"{c.name}: a {agent} run did not end within {self.timeout_s:g}s"
                    )
                    break
                c.runs.append(run_id)
            self._progress("runs", 1)
        c.seconds = time.perf_counter() - started

    def _ag_ui_thread(self, c: Canary) -> str:
        """The AG-UI ``threadId`` only this canary uses (the shared one is the tag's)."""
        return f"audit-{self._tag}-{c.index}"

    async def _ag_ui(self, c: Canary) -> None:
        """AG-UI runs on a ``threadId`` every canary sends, and on one of its own.

        Each must be a thread of the caller's: the answer streamed back, and the run
        replayed by the resume stream, are the caller's own, and hold no one else's
        secret (what they read joins ``raw`` for the content check).
        """
        routing = self.checks["routing"]
        for thread_id in (f"audit-{self._tag}", self._ag_ui_thread(c)):
            body = {
                "threadId": thread_id,
                "runId": f"audit-{c.index}",
                "messages": [{"id": "m1", "role": "user", "content": f"hello {c.secret}"}],
            }
            texts = []
            for method, path, payload in (
                ("POST", "/v1/agents/assistant/ag-ui", body),
                ("GET", f"/v1/agents/assistant/ag-ui/{thread_id}/stream", None),
            ):
                text = ""
                try:
                    async with (
                        asyncio.timeout(self.timeout_s),
                        self.http.stream(method, path, json=payload, headers=self._auth(c)) as r,
                    ):
                        async for line in r.aiter_lines():
                            text += line + "\n"
                            if '"RUN_FINISHED"' in line or '"RUN_ERROR"' in line:
                                break
                except TimeoutError:
                    text += "(timed out)"
                c.raw.append(text)
                texts.append(text)
            routing.checked += 1
            if not all(f"You said: hello {c.secret}" in t for t in texts):  # the run result
                routing.violations.append(
                    f"{c.name}: an AG-UI run on threadId {thread_id!r} did not stream its own answer"
                )
        self._progress("ag-ui", 1)

    async def _recv(self, ws: ClientConnection, c: Canary) -> dict[str, Any]:
        text = await asyncio.wait_for(ws.recv(), self.timeout_s)
        text = text if isinstance(text, str) else text.decode()
        c.raw.append(text)
        frame = orjson.loads(text)
        c.frames.append(frame)
        return frame

    async def _until_terminal(self, ws: ClientConnection, c: Canary) -> str:
        run_id: str | None = None
        while True:
            frame = await self._recv(ws, c)
            if frame.get("type") == "run_accepted":
                run_id = frame["run_id"]
                if frame["thread_id"] not in c.threads:
                    c.threads.append(frame["thread_id"])
            elif frame.get("type") == "error":
                raise RuntimeError(f"{c.name}: error frame {frame}")
            elif run_id and frame.get("run_id") == run_id and is_terminal(frame):
                if frame.get("type") == "agent_completed" and "notes" in frame.get(
                    "final_response", ""
                ):
                    c.recall_answer = frame["final_response"]
                return run_id

    async def _read_everything(self, c: Canary) -> None:
        """Every REST body and SSE stream the user may read; checks replay against live."""
        h = self._auth(c)
        paths = ["/v1/me", "/v1/threads", "/v1/agents"]
        for tid in c.threads:
            paths += [f"/v1/threads/{tid}", f"/v1/threads/{tid}/messages"]
        paths += [f"/v1/runs/{rid}" for rid in c.runs]
        for path in paths:
            r = await self.http.get(path, headers=h)
            c.raw.append(r.text)
        live_by_thread: dict[str, list[dict[str, Any]]] = {}
        for f in c.frames:
            if "seq" in f:
                live_by_thread.setdefault(f["thread_id"], []).append(f)
        seq = self.checks["sequence"]
        for tid in c.threads:
            stored = await self._stored_events(c, tid)
            seq.checked += 1
            seq.violations.extend(f"{c.name}: {v}" for v in seq_violations(stored))
            live = live_by_thread.get(tid, [])
            if [e["event_id"] for e in live] != [e["event_id"] for e in stored]:
                seq.violations.append(
                    f"{c.name}: thread {tid}: live events ({len(live)}) differ from stored ({len(stored)})"
                )
            by_run: dict[str, list[dict[str, Any]]] = {}
            for e in stored:
                by_run.setdefault(e["run_id"], []).append(e)
            for events in by_run.values():
                seq.checked += 1
                seq.violations.extend(f"{c.name}: {v}" for v in run_violations(events))
            sse = await self._read_sse(c, tid, len(stored))
            seq.checked += 1
            if [e["event_id"] for e in sse] != [e["event_id"] for e in stored]:
                seq.violations.append(
                    f"{c.name}: thread {tid}: SSE replay differs from stored events"
                )
        state = self.checks["state"]
        state.checked += 1
        if c.secret not in c.recall_answer:
            state.violations.append(f"{c.name}: recall did not return the user's own note")
        self._progress("reads", 1)

    async def _stored_events(self, c: Canary, thread_id: str) -> list[dict[str, Any]]:
        """Every stored event of the thread, page by page (the server caps a page)."""
        events: list[dict[str, Any]] = []
        while True:
            after = events[-1]["seq"] if events else 0
            r = await self.http.get(
                f"/v1/threads/{thread_id}/events",
                params={"after": after, "limit": 1000},
                headers=self._auth(c),
            )
            c.raw.append(r.text)
            if r.status_code != 200:
                self.checks["sequence"].violations.append(
                    f"{c.name}: reading the events of {thread_id} answered {r.status_code}"
                )
                return events
            page = r.json()
            events.extend(page)
            if len(page) < 1000:
                return events

    async def _read_sse(self, c: Canary, thread_id: str, count: int) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = []
        if count == 0:
            return events
        try:
            async with asyncio.timeout(self.timeout_s):
                async with self.http.stream(
                    "GET",
                    f"/v1/threads/{thread_id}/stream",
                    params={"after": 0},
                    headers=self._auth(c),
                ) as r:
                    async for line in r.aiter_lines():
                        if line.startswith("data:"):
                            text = line[5:].strip()
                            c.raw.append(text)
                            events.append(orjson.loads(text))
                            if len(events) >= count:
                                break
        except TimeoutError:
            self.checks["sequence"].violations.append(
                f"{c.name}: SSE stream of {thread_id} stalled"
            )
        return events

    async def _probe(self, c: Canary, all_canaries: list[Canary]) -> None:
        """Ask for another user's thread and run everywhere; compare with a random id."""
        other = all_canaries[(c.index + 1) % len(all_canaries)]
        if not other.threads or not other.runs:
            return
        foreign = {
            "thread": other.threads[0],
            "run": other.runs[0],
            "ag_ui": self._ag_ui_thread(other),
        }
        random_ids = {
            "thread": "thr_" + secrets.token_urlsafe(16),
            "run": "run_" + secrets.token_urlsafe(16),
            "ag_ui": f"audit-{self._tag}-x{secrets.token_hex(4)}",
        }
        calls = [
            ("GET", "/v1/threads/{thread}", None),
            ("GET", "/v1/threads/{thread}/messages", None),
            ("GET", "/v1/threads/{thread}/events", None),
            ("GET", "/v1/threads/{thread}/stream", None),
            ("POST", "/v1/threads/{thread}/runs", {"agent": "assistant", "input": "hi"}),
            ("GET", "/v1/runs/{run}", None),
            ("POST", "/v1/runs/{run}/cancel", None),
            ("DELETE", "/v1/threads/{thread}", None),
            ("GET", "/v1/agents/assistant/ag-ui/{ag_ui}/stream", None),
        ]
        probes = self.checks["probes"]
        for method, template, body in calls:
            answers = []
            for ids in (foreign, random_ids):
                answer = await self._bounded_request(c, method, template.format(**ids), body)
                answers.append(answer)
                c.raw.append(answer[1].decode(errors="replace"))
            probes.checked += 1
            if answers[0] != answers[1] or answers[0][0] != 404:
                probes.violations.append(
                    f"{c.name}: {method} {template} on a foreign id answered {answers[0][0]} "
                    f"{answers[0][1][:120]!r}, on a random id {answers[1][0]} {answers[1][1][:120]!r}"
                )
        frames = [
            {"type": "subscribe", "thread_id": "{thread}", "after": 0},
            {"type": "run", "agent": "assistant", "input": "hi", "thread_id": "{thread}"},
            {"type": "cancel", "run_id": "{run}"},
            {"type": "unsubscribe", "thread_id": "{thread}"},
        ]
        async with connect(self.ws_url, additional_headers=self._auth(c)) as ws:
            await self._recv(ws, c)  # ready
            for template in frames:
                answers = []
                for ids in (foreign, random_ids):
                    frame = {
                        k: (v.format(**ids) if isinstance(v, str) else v)
                        for k, v in template.items()
                    }
                    frame["ref"] = "probe"
                    await ws.send(orjson.dumps(frame).decode())
                    answers.append(await self._recv(ws, c))
                probes.checked += 1
                if answers[0] != answers[1] or answers[0].get("type") != "error":
                    probes.violations.append(
                        f"{c.name}: frame {template['type']} on a foreign id answered {answers[0]}, "
                        f"on a random id {answers[1]}"
                    )
        # The foreign thread must still exist for its owner (the probes changed nothing).
        r = await self.http.get(f"/v1/threads/{other.threads[0]}", headers=self._auth(other))
        probes.checked += 1
        if r.status_code != 200:
            probes.violations.append(
                f"{c.name}: probing {other.name}'s thread changed it ({r.status_code})"
            )
        self._progress("probes", 1)

    async def _bounded_request(
        self, c: Canary, method: str, path: str, body: Any
    ) -> tuple[int, bytes]:
        """Status and (up to 64 KiB of) body; never waits on an endless stream."""
        content = b""
        async with self.http.stream(method, path, json=body, headers=self._auth(c)) as r:
            try:
                async with asyncio.timeout(2.0):
                    async for chunk in r.aiter_bytes():
                        content += chunk
                        if len(content) > 65536:
                            break
            except TimeoutError:
                pass  # a stream that answered 200 on a foreign id: its status says enough
            return r.status_code, content

    async def _check_guard(self) -> None:
        guard = self.checks["guard"]
        r = await self.http.get("/metrics", headers={"Authorization": f"Bearer {self.admin_token}"})
        guard.checked += 1
        if r.status_code != 200:
            guard.violations.append(
                f"/metrics answered {r.status_code}; the guard could not be read"
            )
            return
        for line in r.text.splitlines():
            if line.startswith("tenet_isolation_violations_total"):
                value = float(line.split()[-1])
                if value:
                    guard.violations.append(
                        f"the server's isolation guard stopped {value:g} frames"
                    )
        self._progress("guard", 1)

    def _check_routing_and_content(self, canaries: list[Canary]) -> None:
        routing, content = self.checks["routing"], self.checks["content"]
        for c in canaries:
            own_threads, own_runs = set(c.threads), set(c.runs)
            for f in c.frames:
                if "user_id" not in f and "thread_id" not in f and "run_id" not in f:
                    continue
                routing.checked += 1
                if f.get("user_id", c.user_id) != c.user_id:
                    routing.violations.append(
                        f"{c.name} received a frame of user {f.get('user_id')}"
                    )
                if "seq" in f and (
                    f.get("thread_id") not in own_threads or f.get("run_id") not in own_runs
                ):
                    routing.violations.append(
                        f"{c.name} received an event of thread {f.get('thread_id')} run {f.get('run_id')}"
                    )
            foreign_secrets = [o.secret for o in canaries if o is not c]
            for text in c.raw:
                content.checked += 1
                for s in foreign_secrets:
                    if s in text:
                        content.violations.append(
                            f"{c.name} could read another user's secret ({s[:9]}…)"
                        )

    def _check_fairness(self, canaries: list[Canary]) -> float:
        fairness = self.checks["fairness"]
        times = [c.seconds for c in canaries if c.seconds > 0]
        if len(times) < 2:
            return 0.0
        ratio = max(times) / statistics.median(times)
        fairness.checked += 1
        if ratio > self.fairness_limit:
            fairness.violations.append(
                f"the slowest user took {ratio:.2f}x the median (limit {self.fairness_limit:g}x)"
            )
        return ratio
