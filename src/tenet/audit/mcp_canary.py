"""The audit's MCP canary: each user's MCP calls see that user's session and credential only.

A deployment marks an MCP server for the audit (``mcp_server(..., audit="TOOL")``);
``GET /v1/agents`` then lists, for the agent that offers it, ``mcp_audit``: the
tool to call and the secrets its session is opened with. Every canary user sets
those secrets to its own canary value and calls the tool (``use TOOL``, twice, in
runs of its own, all users at once). The tool answers the ``session`` the server
saw the call in and the ``credential_sha256`` that session was opened with. The
check fails if one session or one credential is seen by two users (a session
shared between users, or opened with another user's secret), or if a call fails.
What the calls answer joins what the user read, for the content check.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import httpx

from .checks import is_terminal

#: Calls each canary user makes to each marked tool.
CALLS = 2


class CanaryUser(Protocol):
    name: str
    secret: str
    raw: list[str]


@dataclass
class Seen:
    """What one user's calls of one marked tool saw."""

    sessions: set[str] = field(default_factory=set)
    credentials: set[str] = field(default_factory=set)


@dataclass
class Target:
    """A marked tool: the agent offering it, its name, the secrets its session needs."""

    agent: str
    tool: str
    secrets: list[str]


async def targets(http: httpx.AsyncClient, headers: dict[str, str]) -> list[Target]:
    """The marked tools; empty when the deployment marks none."""
    r = await http.get("/v1/agents", headers=headers)
    if r.status_code != 200:
        return []
    return [
        Target(agent["name"], str(mark["tool"]), [str(s) for s in mark.get("secrets", ())])
        for agent in r.json()
        for mark in agent.get("mcp_audit", ())
    ]


async def _call(
    http: httpx.AsyncClient, headers: dict[str, str], agent: str, tool: str, timeout_s: float
) -> tuple[dict[str, Any] | None, str]:
    """One run calling ``tool``: its ``tool_completed`` event (None if none) and all it read."""
    r = await http.post("/v1/threads", json={}, headers=headers)
    if r.status_code != 201:
        return None, f"creating a thread answered {r.status_code}"
    thread = r.json()["id"]
    r = await http.post(
        f"/v1/threads/{thread}/runs", json={"agent": agent, "input": f"use {tool}"}, headers=headers
    )
    if r.status_code != 202:
        return None, f"starting a run answered {r.status_code}"
    run_id = r.json()["id"]
    read = ""
    async with asyncio.timeout(timeout_s):
        while True:
            r = await http.get(f"/v1/threads/{thread}/events", headers=headers)
            read = r.text
            events = r.json() if r.status_code == 200 else []
            if any(e.get("run_id") == run_id and is_terminal(e) for e in events):
                break
            await asyncio.sleep(0.05)
    done = [e for e in events if e.get("type") == "tool_completed" and e.get("tool_name") == tool]
    return (done[0] if done else None), read


async def _user(
    http: httpx.AsyncClient,
    user: CanaryUser,
    headers: dict[str, str],
    target: Target,
    seen: Seen,
    violations: list[str],
    timeout_s: float,
) -> int:
    """One user sets the target's secrets to its own value and calls it; calls checked."""
    for name in target.secrets:
        r = await http.put(f"/v1/me/secrets/{name}", json={"value": user.secret}, headers=headers)
        if r.status_code != 204:
            violations.append(
                f"{user.name}: setting the secret {name!r} for {target.tool} answered "
                f"{r.status_code} (the MCP canary needs TENET_SECRET_KEY)"
            )
            return 0
    calls = 0
    for _ in range(CALLS):
        try:
            done, read = await _call(http, headers, target.agent, target.tool, timeout_s)
        except TimeoutError:
            violations.append(f"{user.name}: a run calling {target.tool} did not end")
            continue
        user.raw.append(read)
        calls += 1
        result = (done or {}).get("results")
        if not done or not done.get("ok") or not isinstance(result, dict):
            error = (done or {}).get("error") or read[:200]
            violations.append(f"{user.name}: calling {target.tool} failed: {error}")
            continue
        seen.sessions.add(str(result.get("session")))
        seen.credentials.add(str(result.get("credential_sha256")))
    return calls


async def run(
    http: httpx.AsyncClient,
    users: list[CanaryUser],
    auth: Callable[[CanaryUser], dict[str, str]],
    violations: list[str],
    *,
    timeout_s: float,
) -> int | None:
    """The canary on every marked tool; appends violations, returns how many calls it
    checked (None: the deployment marks no tool, there is nothing to check)."""
    found = await targets(http, auth(users[0]))
    if not found:
        return None
    checked = 0
    for target in found:
        seen = {u.name: Seen() for u in users}
        calls = await asyncio.gather(
            *(_user(http, u, auth(u), target, seen[u.name], violations, timeout_s) for u in users)
        )
        checked += sum(calls)
        for what in ("sessions", "credentials"):
            owners: dict[str, list[str]] = {}
            for name, saw in seen.items():
                for value in getattr(saw, what):
                    owners.setdefault(value, []).append(name)
            for value, names in owners.items():
                if len(names) > 1:
                    violations.append(
                        f"{target.tool}: users {', '.join(sorted(names))} saw one MCP "
                        f"{what[:-1]} ({value[:12]}…)"
                    )
    return checked
