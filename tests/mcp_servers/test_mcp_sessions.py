"""One MCP session per user per server: isolated, opened once, closed with the user."""

from __future__ import annotations

import asyncio
import hashlib
import secrets
from pathlib import Path
from typing import Any

from mcp_support import Caller, alive, echo_registry, new_caller, stdio_command

from tenet.settings import Settings
from tenet.testing import running_server

KEY = "test-secret-key-0123456789abcdef"


def settings(tmp_path: Path, **kw: Any) -> Settings:
    kw.setdefault("secret_key", KEY)
    kw.setdefault("user_rate", 0)
    return Settings(database_url=f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite'}", **kw)


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


async def _each_sees_only_its_own(srv: Any, prefix: str, users: int, bearer: bool) -> None:
    callers = [await new_caller(srv) for _ in range(users)]
    tokens = {c.user_id: "tok-" + secrets.token_hex(10) for c in callers}
    for c in callers:
        assert (await c.set_secret("echo_token", tokens[c.user_id])).status_code == 204

    async def one(c: Caller) -> dict[str, Any]:
        done = await c.call(f"{prefix}__remember", value=f"mine-{c.user_id}")
        assert done["ok"] is True, done
        done = await c.call(f"{prefix}__recall")
        assert done["ok"] is True, done
        return dict(done["results"])

    results = await asyncio.gather(*(one(c) for c in callers))
    sessions = set()
    for c, seen in zip(callers, results, strict=True):
        assert seen["values"] == [f"mine-{c.user_id}"]
        expected = ("Bearer " if bearer else "") + tokens[c.user_id]
        assert seen["credential_sha256"] == sha(expected)
        sessions.add((seen["pid"], seen["session"]))
    assert len(sessions) == users  # a session (and for stdio a process) each
    for c in callers:
        await c.aclose()


async def test_fifty_users_over_http_each_see_only_their_own_state_and_credential(
    tmp_path: Path, echo_http: str
) -> None:
    async with running_server(settings(tmp_path), echo_registry(echo_http)) as srv:
        await _each_sees_only_its_own(srv, "web", 50, bearer=True)


async def test_users_over_stdio_each_get_their_own_process_and_credential(
    tmp_path: Path,
) -> None:
    # 12 users, not 50: each is a Python process of its own on a 2-core machine, and
    # 12 of them importing the MCP SDK at once can take longer than the default 10 s
    # to open their sessions there: what is tested is whose process answers, not how fast.
    registry = echo_registry(None, stdio_command())
    async with running_server(settings(tmp_path, mcp_connect_timeout_s=60), registry) as srv:
        await _each_sees_only_its_own(srv, "proc", 12, bearer=False)


async def test_concurrent_first_calls_of_one_user_open_one_session(
    tmp_path: Path, echo_http: str
) -> None:
    registry = echo_registry(echo_http, stdio_command())
    async with running_server(
        settings(tmp_path, user_max_runs=8, user_max_runs_busy=8), registry
    ) as srv:
        first = await new_caller(srv)
        await first.set_secret("echo_token", "t")
        same_user = [Caller(srv, first.user_id, first.token) for _ in range(8)]
        for prefix in ("web", "proc"):
            done = await asyncio.gather(*(c.call(f"{prefix}__recall") for c in same_user))
            assert all(d["ok"] for d in done), done
            assert len({(d["results"]["pid"], d["results"]["session"]) for d in done}) == 1
        assert srv.service.mcp.processes == 1
        for c in [first, *same_user]:
            await c.aclose()


async def _until(check: Any, what: str) -> None:
    for _ in range(400):
        if check():
            return
        await asyncio.sleep(0.025)
    raise AssertionError(f"never: {what}")


async def test_eviction_closes_the_users_sessions_and_kills_its_processes(
    tmp_path: Path, echo_http: str
) -> None:
    registry = echo_registry(echo_http, stdio_command())
    # Idle long enough that the sessions are surely still open right after the last call
    # (a loaded machine stalls the loop for a few hundred ms), short enough to wait for.
    async with running_server(settings(tmp_path, session_idle_s=2), registry) as srv:
        alice = await new_caller(srv)
        await alice.set_secret("echo_token", "t")
        await alice.call("web__remember", value="before")
        web = (await alice.call("web__recall"))["results"]
        pid = (await alice.call("proc__recall"))["results"]["pid"]
        assert alive(pid) and srv.service.mcp.open_sessions == 2
        sessions = srv.service.sessions
        await _until(lambda: sessions.peek(alice.user_id) is None, "the session is evicted")
        await _until(lambda: not alive(pid), "the stdio process is killed")
        await _until(lambda: srv.service.mcp.open_sessions == 0, "the sessions are closed")
        await _until(lambda: srv.service.mcp.processes == 0, "the process's place is given back")
        # Back again: new sessions, nothing of the old ones.
        again = (await alice.call("web__recall"))["results"]
        assert again["session"] != web["session"] and again["values"] == []
        assert (await alice.call("proc__recall"))["results"]["pid"] != pid
        await alice.aclose()


async def test_shutdown_kills_the_stdio_processes(tmp_path: Path) -> None:
    registry = echo_registry(None, stdio_command())
    async with running_server(settings(tmp_path), registry) as srv:
        alice = await new_caller(srv)
        await alice.set_secret("echo_token", "t")
        pid = (await alice.call("proc__recall"))["results"]["pid"]
        await alice.aclose()
        assert alive(pid)
    await _until(lambda: not alive(pid), "the stdio process is killed at shutdown")


async def test_processes_beyond_the_cap_are_a_clear_tool_error(tmp_path: Path) -> None:
    registry = echo_registry(None, stdio_command())
    async with running_server(settings(tmp_path, mcp_max_processes=2), registry) as srv:
        callers = [await new_caller(srv) for _ in range(3)]
        for c in callers:
            await c.set_secret("echo_token", "t")
        done = [await c.call("proc__recall") for c in callers]
        assert [d["ok"] for d in done] == [True, True, False]
        assert done[2]["error"]["code"] == "mcp_process_limit"
        assert "TENET_MCP_MAX_PROCESSES" in done[2]["error"]["message"]
        assert srv.service.mcp.processes == 2
        # The first two users keep theirs.
        assert (await callers[0].call("proc__recall"))["ok"] is True
        for c in callers:
            await c.aclose()
