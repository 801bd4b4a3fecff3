"""The ``benchmark`` agent: a fixed, configurable workload with one tool call.

A run emits exactly ``events`` events (25 by default): ``agent_started``, one
``agent_thinking``, one ``tool_executing``/``tool_completed`` pair,
``events - 5`` ``message_delta``s and ``agent_completed``. ``latency_ms`` is
spent once as "model latency" before the tool call and once after it. Either can
be overridden per run by the input, e.g. ``latency_ms=100 events=40``.

Two more words make the run wait for its user, to measure and audit waiting runs:
``ask=1`` asks a question before the tool call (``input_requested``, then
``input_received``), and ``approve=1`` makes the tool call need the user's approval
(``approval_requested``, then ``approval_resolved``); each adds those two events.
"""

from __future__ import annotations

import asyncio

from ..agents import Agent
from ..context import RunContext
from ..tools import tool


def parse_input(input: str, latency_ms: float = 0.0, events: int = 25) -> tuple[float, int]:
    """``latency_ms`` and ``events`` as a run's input overrides them (bad values are ignored)."""
    for part in input.split():
        key, _, value = part.partition("=")
        try:
            if key == "latency_ms":
                latency_ms = min(max(float(value), 0.0), 60_000.0)
            elif key == "events":
                events = min(max(int(value), 5), 10_000)
        except ValueError:
            pass
    return latency_ms, events


def _words(text: str) -> list[str]:
    return text.split()


@tool(requires_approval=lambda ctx, arguments: "approve=1" in _words(str(arguments.get("value"))))
async def echo(value: str) -> str:
    """Return the value unchanged."""
    return value


class BenchmarkAgent(Agent):
    """See the module docstring."""

    def __init__(self, *, latency_ms: float = 0.0, events: int = 25) -> None:
        super().__init__(
            name="benchmark",
            description="A fixed workload for measuring tenet: set latency_ms=N events=N in the input.",
            tools=[echo],
        )
        self.latency_ms = latency_ms
        self.events = events

    async def run(self, ctx: RunContext, input: str) -> str:
        latency_ms, events = parse_input(input, self.latency_ms, self.events)
        if latency_ms:
            await asyncio.sleep(latency_ms / 1000)
        await ctx.think("benchmark step")
        if "ask=1" in _words(input):
            await ctx.ask("benchmark question")
        await ctx.call_tool("echo", value=input[:100])
        if latency_ms:
            await asyncio.sleep(latency_ms / 1000)
        deltas = events - 5
        for i in range(deltas):
            await ctx.say(f"w{i} ")
        return f"done {deltas}"
