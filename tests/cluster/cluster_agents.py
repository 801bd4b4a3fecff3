"""Agents for cluster tests, served by ``tenet serve --app cluster_agents:registry``.

``slow_stop``: its tool runs until cancelled, then takes until the file named by
the run's input exists to finish stopping (the test creates it: the processes
are separate, a file is what they share). ``echo`` (only when
``CLUSTER_TEST_ECHO_URL`` is set): calls the test's echo MCP server's ``recall``
through the user's session, opened with the user's secret ``echo_token``, and
answers, as JSON, which process it ran on and what the call saw.
"""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

from tenet import mcp_server
from tenet.agents import Agent
from tenet.context import RunContext
from tenet.errors import ToolFailed
from tenet.registry import AgentRegistry
from tenet.tools import tool


@tool
async def slow_stop(ctx: RunContext, gate: str) -> str:
    """Runs until cancelled; then stops once the file ``gate`` exists (at most 60 s)."""
    try:
        await asyncio.Event().wait()
    except asyncio.CancelledError:
        for _ in range(6000):  # bounded: 60 s
            if await asyncio.to_thread(Path(gate).exists):
                break
            await asyncio.sleep(0.01)
        raise
    return "never"


class SlowStop(Agent):
    def __init__(self) -> None:
        super().__init__(name="slow_stop", tools=[slow_stop])

    async def run(self, ctx: RunContext, input: str) -> str:
        return str(await ctx.call_tool("slow_stop", gate=input))


class Echo(Agent):
    async def run(self, ctx: RunContext, input: str) -> str:
        try:
            seen = {"ok": True, "result": await ctx.call_tool("web__recall")}
        except ToolFailed as exc:
            seen = {"ok": False, "code": exc.code}
        return json.dumps({"pid": os.getpid(), **seen})


def registry() -> AgentRegistry:
    agents: list[Agent] = [SlowStop()]
    echo = os.environ.get("CLUSTER_TEST_ECHO_URL")
    if echo:
        web = mcp_server(
            "web", url=echo + "/mcp", headers={"Authorization": "Bearer {secret:echo_token}"}
        )
        agents.append(Echo("echo", "calls the echo MCP server", tools=[web]))
    return AgentRegistry(agents)
