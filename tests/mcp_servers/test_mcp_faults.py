"""Faults of an MCP server stay in the call: ok=false with a clear code, the next call reconnects."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path
from typing import Any

from mcp_support import ECHO, echo_registry, new_caller, start_echo_http, stdio_command

from tenet.settings import Settings
from tenet.testing import running_server

KEY = "test-secret-key-0123456789abcdef"


def settings(tmp_path: Path, **kw: Any) -> Settings:
    kw.setdefault("secret_key", KEY)
    return Settings(database_url=f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite'}", **kw)


async def test_a_server_that_goes_down_fails_the_call_and_is_reconnected(tmp_path: Path) -> None:
    proc, base = await start_echo_http()
    port = base.rsplit(":", 1)[1]
    try:
        async with running_server(settings(tmp_path), echo_registry(base)) as srv:
            alice = await new_caller(srv)
            bob = await new_caller(srv)
            for c in (alice, bob):
                await c.set_secret("echo_token", "t")
            assert (await alice.call("web__recall"))["ok"] is True
            proc.kill()
            proc.wait()
            down = await alice.call("web__recall")
            assert down["ok"] is False and down["error"]["code"] == "mcp_unavailable"
            assert "'web'" in down["error"]["message"]
            events = await alice.run("use web__recall")
            assert events[-1]["type"] == "agent_completed"  # the run goes on
            proc = subprocess.Popen(
                [sys.executable, str(ECHO), "http", port],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            for _ in range(200):  # bounded: until the restarted server answers
                again = await alice.call("web__recall")
                if again["ok"]:
                    break
                await asyncio.sleep(0.05)
            assert again["ok"] is True, again
            assert (await bob.call("web__recall"))["ok"] is True
            for c in (alice, bob):
                await c.aclose()
    finally:
        proc.kill()
        proc.wait()


async def test_a_slow_call_times_out_and_the_session_goes_on(
    tmp_path: Path, echo_http: str
) -> None:
    async with running_server(
        settings(tmp_path, tool_timeout_s=0.5), echo_registry(echo_http)
    ) as srv:
        alice = await new_caller(srv)
        bob = await new_caller(srv)
        for c in (alice, bob):
            await c.set_secret("echo_token", "t")
        await alice.call("web__remember", value="kept")
        slow, other = await asyncio.gather(
            alice.call("web__sleep", seconds=30), bob.call("web__recall")
        )
        assert slow["ok"] is False and slow["error"]["code"] == "timeout"
        assert other["ok"] is True
        after = await alice.call("web__recall")
        assert after["ok"] is True and after["results"]["values"] == ["kept"]
        for c in (alice, bob):
            await c.aclose()


async def test_a_crash_mid_call_fails_the_call_and_the_next_one_restarts_it(
    tmp_path: Path,
) -> None:
    registry = echo_registry(None, stdio_command())
    async with running_server(settings(tmp_path), registry) as srv:
        alice = await new_caller(srv)
        bob = await new_caller(srv)
        for c in (alice, bob):
            await c.set_secret("echo_token", "t")
        first = (await alice.call("proc__recall"))["results"]["pid"]
        bobs = (await bob.call("proc__recall"))["results"]["pid"]
        crashed = await alice.call("proc__crash")
        assert crashed["ok"] is False and crashed["error"]["code"] == "mcp_unavailable"
        again = await alice.call("proc__recall")
        assert again["ok"] is True and again["results"]["pid"] != first
        assert (await bob.call("proc__recall"))["results"]["pid"] == bobs  # untouched
        assert srv.service.mcp.processes == 2
        for c in (alice, bob):
            await c.aclose()


async def test_garbage_from_a_server_is_a_clear_error(tmp_path: Path, echo_http: str) -> None:
    registry = echo_registry(echo_http, stdio_command())
    async with running_server(settings(tmp_path), registry) as srv:
        alice = await new_caller(srv)
        await alice.set_secret("echo_token", "t")
        web, proc = registry.get("echo").mcp_servers  # type: ignore[union-attr]
        # Listed while well; from now on they answer something that is not MCP.
        web.url = echo_http + "/garbage"
        proc.command = [sys.executable, "-c", "print('hello, not json'); input()"]
        for tool in ("web__recall", "proc__recall"):
            done = await alice.call(tool)
            assert done["ok"] is False, done
            assert done["error"]["code"] == "mcp_unavailable", done
        web.url = echo_http + "/mcp"
        assert (await alice.call("web__recall"))["ok"] is True
        await alice.aclose()


async def test_cancel_mid_call_ends_the_call(tmp_path: Path, echo_http: str) -> None:
    async with running_server(settings(tmp_path), echo_registry(echo_http)) as srv:
        alice = await new_caller(srv)
        await alice.set_secret("echo_token", "t")
        run_id = await alice.start("use web__sleep seconds=60")
        for _ in range(400):  # bounded: until the call is under way
            if any(e["type"] == "tool_executing" for e in await alice.events(run_id)):
                break
            await asyncio.sleep(0.025)
        r = await alice.http.post(f"/v1/runs/{run_id}/cancel")
        assert r.status_code == 202
        await asyncio.wait_for(srv.service.engine.wait(run_id), 20)
        events = await alice.events(run_id)
        done = next(e for e in events if e["type"] == "tool_completed")
        assert done["ok"] is False and done["error"]["code"] == "cancelled"
        assert events[-1]["type"] == "run_cancelled"
        assert (await alice.call("web__recall"))["ok"] is True
        await alice.aclose()
