"""Agents that wait for a person, for the approval tests (imported by server processes too).

``guarded`` runs the default loop with a model that asks, in one turn, for the
calls its input lists as JSON (``[["delete", {"path": "a"}], ...]``) and then
answers with the results it was given. ``asker`` is a custom flow that records a
note, asks a question, and records the answer; ``chaotic`` is the same flow but
records something different each time it runs, which a resumed run must refuse;
``open`` asks without a schema, so any JSON value answers it.
Tools write their side effects to the file named by ``TENET_TEST_EFFECTS`` (one
line each), so a test, or another process, can count them.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Any

import orjson

from tenet import Agent, RunContext, tool
from tenet.models.base import ModelReply, ToolCall


def effects_file() -> Path:
    return Path(os.environ["TENET_TEST_EFFECTS"])


def effects() -> list[str]:
    path = effects_file()
    return path.read_text().splitlines() if path.exists() else []


def _effect(text: str) -> None:
    with effects_file().open("a") as f:
        f.write(text + "\n")


@tool(requires_approval=True)
async def delete(path: str) -> str:
    """Delete a file (needs the user's yes)."""
    _effect(f"deleted {path}")
    return f"deleted {path}"


@tool(requires_approval=lambda ctx, args: int(args.get("amount", 0)) > 100)
async def pay(amount: int) -> str:
    """Pay an amount (above 100 needs the user's yes)."""
    _effect(f"paid {amount}")
    return f"paid {amount}"


@tool
async def record(text: str) -> str:
    """Record a line."""
    _effect(text)
    return text


class CallingModel:
    """Calls what the input lists, all in one turn, then answers with the results."""

    async def complete(
        self,
        messages: list[dict[str, Any]],
        tools: list[dict[str, Any]],
        *,
        on_delta: Any = None,
        on_reasoning: Any = None,
    ) -> ModelReply:
        last = messages[-1]
        if last["role"] == "tool":
            results = []
            for m in reversed(messages):
                if m["role"] != "tool":
                    if m["role"] == "user":
                        break
                    continue
                results.append(m["content"])
            answer = "results: " + " | ".join(reversed(results))
            if on_delta is not None:
                await on_delta(answer)
            return ModelReply(content=answer)
        calls = orjson.loads(last["content"])
        return ModelReply(
            tool_calls=[ToolCall(f"call_{i}", name, args) for i, (name, args) in enumerate(calls)]
        )


#: The schema of ``asker``'s question (``open`` asks without one).
NAME_SCHEMA: dict[str, Any] = {"type": "string", "minLength": 1}


class Asker(Agent):
    """Records a note, asks, records the answer: the note must be recorded once."""

    def __init__(
        self,
        name: str = "asker",
        *,
        chaotic: bool = False,
        schema: dict[str, Any] | None = NAME_SCHEMA,
    ) -> None:
        super().__init__(name=name, description="Asks a question.", tools=[record])
        self.chaotic = chaotic
        self.schema = schema

    async def run(self, ctx: RunContext, input: str) -> str:
        first = f"first {secrets.token_hex(4)}" if self.chaotic else f"first {input}"
        await ctx.call_tool("record", text=first)
        name = await ctx.ask("What is your name?", schema=self.schema)
        await ctx.call_tool("record", text=f"hello {name}")
        return f"hello {name}"


class Delegator(Agent):
    """Delegates to ``asker``: the question is asked from a delegated execution."""

    def __init__(self) -> None:
        super().__init__(name="delegator", description="Lets asker ask.")

    async def run(self, ctx: RunContext, input: str) -> str:
        return "via asker: " + await ctx.delegate("asker", input)


def agents() -> list[Agent]:
    return [
        Agent(
            "guarded",
            description="Calls what it is told to.",
            tools=[delete, pay, record],
            model=CallingModel(),
        ),
        Asker(),
        Asker("chaotic", chaotic=True),
        Asker("open", schema=None),
        Delegator(),
    ]


def registry() -> Any:
    from tenet.examples import default_registry
    from tenet.registry import AgentRegistry

    return AgentRegistry([*default_registry(), *agents()])
