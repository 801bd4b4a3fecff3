"""MCP servers as an agent's tools: listed with their schemas, called as ordinary tools."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

from mcp_support import ECHO, echo_registry, new_caller, start_echo_http, stdio_command

from tenet import Agent, RunContext, mcp_server, tool
from tenet.registry import AgentRegistry
from tenet.settings import Settings
from tenet.testing import running_server

KEY = "test-secret-key-0123456789abcdef"


def settings(tmp_path: Path, **kw: object) -> Settings:
    kw.setdefault("secret_key", KEY)
    return Settings(database_url=f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite'}", **kw)  # type: ignore[arg-type]


async def test_agents_list_the_servers_tools_with_their_schemas(
    tmp_path: Path, echo_http: str
) -> None:
    registry = echo_registry(echo_http, stdio_command())
    async with running_server(settings(tmp_path), registry) as srv:
        alice = await new_caller(srv)
        r = await alice.http.get("/v1/agents")
        await alice.aclose()
    body = r.json()
    agents = body if isinstance(body, list) else body["data"]
    (agent,) = [a for a in agents if a["name"] == "echo"]
    tools = {t["name"]: t for t in agent["tools"]}
    for prefix in ("web", "proc"):
        remember = tools[f"{prefix}__remember"]
        assert remember["description"] == "Remember a value in this session."
        assert remember["parameters"]["properties"]["value"]["type"] == "string"
        assert remember["parameters"]["required"] == ["value"]
        assert f"{prefix}__recall" in tools


async def test_include_and_tool_name_shape_the_listed_tools(echo_http: str) -> None:
    server = mcp_server(
        "web", url=echo_http + "/mcp", include=["recall", "sleep"], tool_name="echo_{tool}"
    )
    await server.refresh()
    assert sorted(server.tools) == ["echo_recall", "echo_sleep"]
    agent = Agent("a", tools=[server])
    assert agent.tool("echo_recall") is server.tools["echo_recall"]
    assert agent.tool("web__remember") is None


async def test_a_call_is_an_ordinary_tool_call(tmp_path: Path, echo_http: str) -> None:
    async with running_server(settings(tmp_path), echo_registry(echo_http)) as srv:
        alice = await new_caller(srv)
        assert (await alice.set_secret("echo_token", "alice-token-1")).status_code == 204
        events = await alice.run("use web__remember value=hello")
        await alice.aclose()
    types = [e["type"] for e in events]
    assert "tool_executing" in types and types[-1] == "agent_completed"
    executing = next(e for e in events if e["type"] == "tool_executing")
    completed = next(e for e in events if e["type"] == "tool_completed")
    assert executing["tool_name"] == "web__remember"
    assert executing["parameters"] == {"value": "hello"}
    assert completed["ok"] is True, completed
    assert completed["results"] == {"result": "ok"}
    assert completed["call_id"] == executing["call_id"]


async def test_a_missing_secret_is_a_tool_error_naming_it(tmp_path: Path, echo_http: str) -> None:
    async with running_server(settings(tmp_path), echo_registry(echo_http)) as srv:
        alice = await new_caller(srv)
        done = await alice.call("web__recall")
        await alice.aclose()
    assert done["ok"] is False
    assert done["error"]["code"] == "missing_secret"
    assert "echo_token" in done["error"]["message"]
    assert "PUT /v1/me/secrets/echo_token" in done["error"]["message"]


async def test_a_tool_reads_the_callers_secret(tmp_path: Path) -> None:
    @tool
    async def token_length(ctx: RunContext) -> int:
        """The length of the caller's token."""
        return len(await ctx.secret("api_token"))

    registry = AgentRegistry([Agent("echo", tools=[token_length])])
    async with running_server(settings(tmp_path), registry) as srv:
        alice = await new_caller(srv)
        missing = await alice.call("token_length")
        await alice.set_secret("api_token", "x" * 17)
        found = await alice.call("token_length")
        await alice.aclose()
    assert missing["ok"] is False and missing["error"]["code"] == "missing_secret"
    assert "api_token" in missing["error"]["message"]
    assert found["ok"] is True and found["results"] == 17


async def _tool_names(alice: object) -> set[str]:
    r = await alice.http.get("/v1/agents")  # type: ignore[attr-defined]
    body = r.json()
    agents = body if isinstance(body, list) else body["data"]
    return {t["name"] for a in agents if a["name"] == "echo" for t in a["tools"]}


async def test_a_server_down_at_start_is_listed_once_it_is_up(tmp_path: Path) -> None:

    proc, base = await start_echo_http()
    proc.kill()
    proc.wait()
    port = base.rsplit(":", 1)[1]
    async with running_server(settings(tmp_path, mcp_relist_s=0.1), echo_registry(base)) as srv:
        alice = await new_caller(srv)
        assert await _tool_names(alice) == set()
        proc = subprocess.Popen(
            [sys.executable, str(ECHO), "http", port],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            for _ in range(400):  # bounded: until the relisting finds it
                if "web__recall" in await _tool_names(alice):
                    break
                await asyncio.sleep(0.05)
            assert "web__recall" in await _tool_names(alice)
        finally:
            proc.kill()
            proc.wait()
        await alice.aclose()


async def test_a_changed_tool_list_is_picked_up(tmp_path: Path, echo_http: str) -> None:
    async with running_server(settings(tmp_path), echo_registry(echo_http)) as srv:
        alice = await new_caller(srv)
        await alice.set_secret("echo_token", "t")
        assert "web__extra" not in await _tool_names(alice)
        assert (await alice.call("web__grow"))["ok"] is True
        for _ in range(400):  # bounded: until the list-changed notification is acted on
            if "web__extra" in await _tool_names(alice):
                break
            await asyncio.sleep(0.025)
        assert (await alice.call("web__extra"))["results"] == {"result": "extra"}
        await alice.aclose()


async def test_a_server_declared_to_need_approval_waits_for_the_users_yes(
    tmp_path: Path, echo_http: str
) -> None:
    registry = echo_registry(
        echo_http, requires_approval=lambda ctx, args: args.get("value") != "harmless"
    )
    async with running_server(settings(tmp_path), registry) as srv:
        alice = await new_caller(srv)
        assert (await alice.set_secret("echo_token", "alice-token-1")).status_code == 204
        run_id = await alice.start("use web__remember value=plan")
        for _ in range(300):  # bounded: the run pauses after its first model call
            run = (await alice.http.get(f"/v1/runs/{run_id}")).json()
            if run["status"] != "queued" and run["status"] != "running":
                break
            await asyncio.sleep(0.05)
        assert run["status"] == "requires_action", run
        waiting = await alice.events(run_id)
        asked = next(e for e in waiting if e["type"] == "approval_requested")
        assert asked["tool_name"] == "web__remember" and asked["parameters"] == {"value": "plan"}
        assert "tool_executing" not in [e["type"] for e in waiting]

        answer = await alice.http.post(
            f"/v1/runs/{run_id}/approvals/{asked['call_id']}", json={"approved": True}
        )
        assert answer.status_code == 202, answer.text
        await asyncio.wait_for(srv.service.engine.wait(run_id), 60)
        kinds = [e["type"] for e in await alice.events(run_id)]
        assert kinds.index("approval_resolved") < kinds.index("tool_executing")
        assert kinds[-1] == "agent_completed"
        # The policy lets a harmless call through without asking.
        harmless = await alice.run("use web__remember value=harmless")
        assert "approval_requested" not in [e["type"] for e in harmless]
        assert harmless[-1]["type"] == "agent_completed"
        await alice.aclose()
