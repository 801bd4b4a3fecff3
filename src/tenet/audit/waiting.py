"""The audit's probes of runs waiting for a person (approvals and questions).

Each canary starts two ``benchmark`` runs that wait: one on a question (``ask=1``) and
one on a tool call that needs approval (``approve=1``); their inputs hold the canary's
secret, and so do the requests' parameters. Once every canary waits, each one tries
to answer its neighbour's requests on every path (``POST .../approvals/{call_id}``,
``POST .../inputs/{request_id}``, the ``approve`` and ``respond`` frames) and to list
them (``GET /v1/runs?status=requires_action``). Each answer must be exactly what a
nonexistent request gets (404 / the same error frame), and the list must hold the
caller's own waiting runs only. Then every owner answers its own requests over its
WebSocket: both must still be pending (accepted, not ``conflict``) and both runs must
complete, which proves the probes changed nothing.

Findings go to the ``probes`` check; the frames and bodies read go to the canary's
``frames`` / ``raw``, so the routing, content and sequence checks cover them too.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import httpx
import orjson
from websockets.asyncio.client import ClientConnection, connect

from .checks import is_terminal


class Canary(Protocol):
    """What the probes use of a canary user (``isolation.Canary``)."""

    index: int
    name: str
    secret: str
    threads: list[str]
    runs: list[str]
    raw: list[str]


class Findings(Protocol):
    """A check's counters (``isolation.CheckResult``)."""

    checked: int
    violations: list[str]


class Auditor(Protocol):
    """What the probes use of the audit (``isolation.IsolationAudit``)."""

    ws_url: str
    http: httpx.AsyncClient
    timeout_s: float
    checks: dict[str, Any]
    _progress: Callable[[str, int], None]

    def _auth(self, c: Any) -> dict[str, str]: ...

    async def _recv(self, ws: ClientConnection, c: Any) -> dict[str, Any]: ...

    async def _bounded_request(
        self, c: Any, method: str, path: str, body: Any
    ) -> tuple[int, bytes]: ...


@dataclass
class Waiting:
    """A canary's two waiting runs and the ids of their requests."""

    question_run: str = ""
    request_id: str = ""
    approval_run: str = ""
    call_id: str = ""

    @property
    def ready(self) -> bool:
        return bool(self.request_id and self.call_id)


class WaitingProbe:
    """One pass of the probes above over all canaries (see the module docstring)."""

    def __init__(self, audit: Auditor, canaries: list[Canary]) -> None:
        self.audit = audit
        self.canaries = canaries
        self.waiting = {c.index: Waiting() for c in canaries}
        self.paused = asyncio.Barrier(len(canaries))
        self.probed = asyncio.Barrier(len(canaries))
        self.probes: Findings = audit.checks["probes"]

    async def run(self) -> None:
        await asyncio.gather(*(self._canary(c) for c in self.canaries))

    async def _canary(self, c: Canary) -> None:
        """Pause two runs, wait for everyone, probe the neighbour, wait, answer its own."""
        audit = self.audit
        other = self.canaries[(c.index + 1) % len(self.canaries)]
        async with connect(audit.ws_url, additional_headers=audit._auth(c), max_size=2**24) as ws:
            await audit._recv(ws, c)  # ready
            try:
                await self._pause(ws, c)
            except (TimeoutError, RuntimeError) as exc:
                self.probes.violations.append(f"{c.name}: could not pause runs to probe: {exc}")
            await self.paused.wait()
            if self.waiting[other.index].ready:
                await self._probe(c, other)
            await self.probed.wait()
            if self.waiting[c.index].ready:
                await self._answer_own(ws, c)
        audit._progress("waiting", 1)

    async def _pause(self, ws: ClientConnection, c: Canary) -> None:
        """Start the two runs and read until both wait; their ids go to ``self.waiting``."""
        audit, mine = self.audit, self.waiting[c.index]
        for ref in ("ask", "approve"):
            frame = {
                "type": "run",
                "agent": "benchmark",
                "input": f"{ref}=1 events=5 {c.secret}",
                "ref": ref,
            }
            await ws.send(orjson.dumps(frame).decode())
        runs: dict[str, str] = {}
        async with asyncio.timeout(audit.timeout_s):
            while not mine.ready:
                frame = await audit._recv(ws, c)
                kind = frame.get("type")
                if kind == "run_accepted":
                    runs[frame["ref"]] = frame["run_id"]
                    c.runs.append(frame["run_id"])
                    c.threads.append(frame["thread_id"])
                elif kind == "error":
                    raise RuntimeError(f"error frame {frame}")
                elif kind == "input_requested":
                    mine.question_run, mine.request_id = frame["run_id"], frame["request_id"]
                elif kind == "approval_requested":
                    mine.approval_run, mine.call_id = frame["run_id"], frame["call_id"]
        if (mine.question_run, mine.approval_run) != (runs.get("ask"), runs.get("approve")):
            raise RuntimeError("the requests came from other runs than the ones started")

    async def _probe(self, c: Canary, other: Canary) -> None:
        """Answer and list ``other``'s requests; each must look like a nonexistent one."""
        audit, theirs, mine = self.audit, self.waiting[other.index], self.waiting[c.index]
        foreign = {
            "arun": theirs.approval_run,
            "call": theirs.call_id,
            "qrun": theirs.question_run,
            "request": theirs.request_id,
            "own": mine.approval_run,
        }
        made_up = {
            "arun": "run_" + secrets.token_urlsafe(16),
            "call": "call_" + secrets.token_hex(8),
            "qrun": "run_" + secrets.token_urlsafe(16),
            "request": "req_" + secrets.token_hex(8),
            "own": mine.approval_run,
        }
        calls = [
            ("/v1/runs/{arun}/approvals/{call}", {"approved": True, "note": "probe"}),
            ("/v1/runs/{arun}/approvals/{call}", {"approved": False}),
            ("/v1/runs/{qrun}/inputs/{request}", {"value": "probe"}),
            # The foreign ids on the prober's own waiting run: still nothing there.
            ("/v1/runs/{own}/approvals/{call}", {"approved": True}),
            ("/v1/runs/{own}/inputs/{request}", {"value": "probe"}),
        ]
        for template, body in calls:
            answers = []
            for ids in (foreign, made_up):
                answer = await audit._bounded_request(c, "POST", template.format(**ids), body)
                answers.append(answer)
                c.raw.append(answer[1].decode(errors="replace"))
            self.probes.checked += 1
            if answers[0] != answers[1] or answers[0][0] != 404:
                self.probes.violations.append(
                    f"{c.name}: POST {template} on a foreign request answered {answers[0][0]} "
                    f"{answers[0][1][:120]!r}, on a nonexistent one {answers[1][0]} "
                    f"{answers[1][1][:120]!r}"
                )
        frames = [
            {"type": "approve", "run_id": "{arun}", "call_id": "{call}", "approved": True},
            {"type": "approve", "run_id": "{arun}", "call_id": "{call}", "approved": False},
            {"type": "respond", "run_id": "{qrun}", "request_id": "{request}", "value": "probe"},
            {"type": "approve", "run_id": "{own}", "call_id": "{call}", "approved": True},
        ]
        async with connect(audit.ws_url, additional_headers=audit._auth(c)) as ws:
            await audit._recv(ws, c)  # ready
            for template in frames:
                replies = []
                for ids in (foreign, made_up):
                    frame: dict[str, Any] = {
                        k: (v.format(**ids) if isinstance(v, str) else v)
                        for k, v in template.items()
                    }
                    frame["ref"] = "probe"
                    await ws.send(orjson.dumps(frame).decode())
                    replies.append(await audit._recv(ws, c))
                self.probes.checked += 1
                if replies[0] != replies[1] or replies[0].get("type") != "error":
                    self.probes.violations.append(
                        f"{c.name}: frame {template['type']} on a foreign request answered "
                        f"{replies[0]}, on a nonexistent one {replies[1]}"
                    )
        r = await audit.http.get(
            "/v1/runs", params={"status": "requires_action"}, headers=audit._auth(c)
        )
        c.raw.append(r.text)
        self.probes.checked += 1
        listed = {run.get("id") for run in r.json()} if r.status_code == 200 else set()
        if r.status_code != 200 or listed & {theirs.approval_run, theirs.question_run}:
            self.probes.violations.append(
                f"{c.name}: GET /v1/runs?status=requires_action answered {r.status_code} "
                f"listing {sorted(str(i) for i in listed)} (a foreign waiting run is among them)"
            )

    async def _answer_own(self, ws: ClientConnection, c: Canary) -> None:
        """The owner answers both requests: still pending, and both runs then complete."""
        audit, mine = self.audit, self.waiting[c.index]
        answers = [
            {"type": "respond", "run_id": mine.question_run, "request_id": mine.request_id},
            {"type": "approve", "run_id": mine.approval_run, "call_id": mine.call_id},
        ]
        answers[0]["value"] = "owner"
        answers[1]["approved"] = True
        for frame in answers:
            await ws.send(orjson.dumps({**frame, "ref": "own"}).decode())
        accepted, ended = 0, {}
        self.probes.checked += 1
        try:
            async with asyncio.timeout(audit.timeout_s):
                while accepted < 2 or len(ended) < 2:
                    frame = await audit._recv(ws, c)
                    kind = frame.get("type")
                    if kind in ("approval_accepted", "response_accepted"):
                        accepted += 1
                    elif kind == "error":
                        self.probes.violations.append(
                            f"{c.name}: its own request was no longer answerable after the "
                            f"probes: {frame}"
                        )
                        return
                    elif is_terminal(frame):
                        ended[frame["run_id"]] = frame["type"]
        except TimeoutError:
            self.probes.violations.append(
                f"{c.name}: its waiting runs did not end within {audit.timeout_s:g}s of its answers"
            )
            return
        if set(ended.values()) != {"agent_completed"}:
            self.probes.violations.append(f"{c.name}: its answered runs ended {ended}")
