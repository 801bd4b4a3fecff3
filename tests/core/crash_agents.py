"""Agents for the crash tests, served by a real ``tenet serve --app crash_agents:registry``.

``parent`` delegates to ``child``, which calls ``hang``: a tool that never
returns, so a process killed meanwhile leaves a delegated execution inside a
tool call.
"""

from __future__ import annotations

import asyncio

from tenet.agents import Agent
from tenet.context import RunContext
from tenet.registry import AgentRegistry
from tenet.tools import tool


@tool
async def hang() -> str:
    """Never returns (until the process dies)."""
    await asyncio.Event().wait()
    return "never"


class Child(Agent):
    def __init__(self) -> None:
        super().__init__(name="child", tools=[hang])

    async def run(self, ctx: RunContext, input: str) -> str:
        return str(await ctx.call_tool("hang"))


class Parent(Agent):
    def __init__(self) -> None:
        super().__init__(name="parent")

    async def run(self, ctx: RunContext, input: str) -> str:
        return await ctx.delegate("child", input)


registry = AgentRegistry([Parent(), Child()])
