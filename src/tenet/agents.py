"""Agents: a model, tools and instructions, run in a tool-calling loop.

``Agent.run(ctx, input)`` is the override point: a custom agent subclasses
:class:`Agent` and writes its own flow with ``ctx.think``, ``ctx.call_tool`` and
``ctx.delegate``. The default loop asks the model for a turn, runs the tool
calls it asks for (a failing tool's error goes back to the model as its result,
it does not end the run), and repeats until the model answers.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from typing import Any

import orjson

from .context import RunContext
from .errors import AgentFailed, ToolFailed
from .mcp_tools import MCPServer
from .models.base import ChatMessage, ChatModel
from .tools import Tool, tool_content

#: ``TENET_TOOL_RESULT_MAX_CHARS``'s default, for a runtime made without settings.
DEFAULT_TOOL_RESULT_MAX_CHARS = 20_000


class Agent:
    """An agent definition: immutable once registered, shared by every user's runs."""

    def __init__(
        self,
        name: str,
        description: str = "",
        instructions: str = "",
        tools: Iterable[Tool | MCPServer] = (),
        model: ChatModel | None = None,
        *,
        max_steps: int | None = None,
    ) -> None:
        if not name or not name.replace("_", "").replace("-", "").isalnum():
            raise ValueError(f"agent name {name!r}: use letters, digits, '-' and '_'")
        self.name = name
        self.description = description
        self.instructions = instructions
        given = tuple(tools)
        #: The MCP servers whose tools the agent offers (their lists come from the servers).
        self.mcp_servers = tuple(t for t in given if isinstance(t, MCPServer))
        self._own = tuple(t for t in given if not isinstance(t, MCPServer))
        self._tools = {t.name: t for t in self._own}
        if len(self._tools) != len(self._own):
            raise ValueError(f"agent {name!r} has two tools with one name")
        self.model = model
        self.max_steps = max_steps

    @property
    def tools(self) -> tuple[Tool, ...]:
        """The agent's own tools, then those its MCP servers offer now."""
        if not self.mcp_servers:
            return self._own
        listed = {t.name: t for s in reversed(self.mcp_servers) for t in s.tools.values()}
        return self._own + tuple(t for n, t in listed.items() if n not in self._tools)

    def tool(self, name: str) -> Tool | None:
        found = self._tools.get(name)
        for server in self.mcp_servers:
            if found is not None:
                break
            found = server.tools.get(name)
        return found

    def spec(self) -> dict[str, Any]:
        """The agent as listed by ``GET /v1/agents`` (``mcp_audit`` only when an MCP
        server of the agent is marked for the audit's canary)."""
        spec: dict[str, Any] = {
            "name": self.name,
            "description": self.description,
            "tools": [t.spec() for t in self.tools],
        }
        audits = [a for s in self.mcp_servers if (a := s.audit_spec()) is not None]
        if audits:
            spec["mcp_audit"] = audits
        return spec

    async def run(self, ctx: RunContext, input: str) -> str:
        """The tool-calling loop; override for a custom flow.

        The model is sent the instructions, the thread's earlier turns within the
        context budget (only the run's own agent: a delegated one gets its input
        alone), and the input.
        """
        runtime = ctx.runtime
        model: ChatModel = self.model or runtime.model
        max_steps = self.max_steps or runtime.max_steps
        specs = [t.spec() for t in self.tools]
        # Tools the run's caller runs itself; a call to one ends the run (the caller
        # answers it). The agent's own tools win over a client tool of the same name.
        client = {t["name"] for t in ctx.client_tools} - set(self._tools)
        specs += [t for t in ctx.client_tools if t["name"] in client]
        conversations = runtime.conversations
        messages: list[ChatMessage]
        if conversations is not None:
            messages = await conversations.messages(
                ctx.user_id,
                ctx.thread_id,
                ctx.run_id,
                instructions=self.instructions,
                input=input,
                tools=specs,
                with_history=ctx.depth == 0,
            )
            max_chars = conversations.tool_result_max_chars
        else:
            messages = (
                [{"role": "system", "content": self.instructions}] if self.instructions else []
            )
            messages.append({"role": "user", "content": input})
            max_chars = DEFAULT_TOOL_RESULT_MAX_CHARS
        for _ in range(max_steps):
            reply = await runtime.complete(ctx, model, messages, specs)
            if not reply.tool_calls:
                return reply.content
            messages.append(
                {
                    "role": "assistant",
                    "content": reply.content or None,
                    "tool_calls": [
                        {
                            "id": c.id,
                            "type": "function",
                            "function": {
                                "name": c.name,
                                "arguments": orjson.dumps(c.arguments).decode(),
                            },
                        }
                        for c in reply.tool_calls
                    ],
                }
            )
            if any(c.name in client for c in reply.tool_calls):
                for call in reply.tool_calls:  # server tools run; client ones are handed over
                    with contextlib.suppress(ToolFailed):
                        await runtime.call_tool(ctx, call.name, call.arguments, call_id=call.id)
                return reply.content
            # The calls that need a person's yes wait for it together, each answered alone.
            await runtime.request_approvals(
                ctx, [(c.id, c.name, c.arguments) for c in reply.tool_calls]
            )
            for call in reply.tool_calls:
                ok, error, result = True, None, None
                try:
                    result = await runtime.call_tool(
                        ctx, call.name, call.arguments, call_id=call.id
                    )
                except ToolFailed as exc:
                    ok, error = False, exc.as_error()
                messages.append(
                    {
                        "role": "tool",
                        "tool_call_id": call.id,
                        "content": tool_content(ok, result, error, max_chars),
                    }
                )
        raise AgentFailed("max_steps", f"{self.name} did not answer within {max_steps} steps")

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"
