"""The ``researcher``: a custom flow that delegates to three child agents.

triage (what is being asked) -> data (gather facts with a tool) -> reporting
(write the answer). Each child is its own execution with its own
``execution_id``, ``depth`` 1 and ``parent_execution_id``; its tool events carry
its own execution id.
"""

from __future__ import annotations

from ..agents import Agent
from ..context import RunContext
from ..models.scripted import ScriptedModel
from ..tools import tool
from .assistant import calculator

_FACTS = {
    "python": "Python was first released in 1991.",
    "sqlite": "SQLite is the most widely deployed database engine.",
    "postgres": "PostgreSQL descends from the POSTGRES project at Berkeley (1986).",
    "redis": "Redis keeps its data in memory and offers pub/sub.",
    "websocket": "The WebSocket protocol is RFC 6455 (2011).",
}


@tool
async def classify(question: str) -> dict[str, object]:
    """Split a question into topics for research."""
    words = [w.strip(".,?!").lower() for w in question.split()]
    topics = [w for w in words if w in _FACTS] or [w for w in words if len(w) > 4][:3]
    return {"question": question, "topics": topics}


@tool
async def lookup(topics: str) -> list[str]:
    """Find facts about the given topics (comma- or space-separated)."""
    names = [t.strip(" ,.;:[]'\"").lower() for t in topics.replace(",", " ").split()]
    found = list(dict.fromkeys(_FACTS[n] for n in names if n in _FACTS))
    return found or [f"No stored facts about {', '.join(n for n in names if n) or 'that'}."]


class Researcher(Agent):
    """Delegates to triage, data and reporting, in that order."""

    async def run(self, ctx: RunContext, input: str) -> str:
        await ctx.think("Planning: triage the question, gather data, write the report.")
        triage = await ctx.delegate("triage", input)
        await ctx.think("Triage done; gathering data.")
        data = await ctx.delegate("data", triage)
        await ctx.think("Data gathered; writing the report.")
        return await ctx.delegate("reporting", data)


def research_agents() -> list[Agent]:
    return [
        Researcher(
            name="researcher",
            description="Researches a question by delegating to triage, data and reporting agents.",
        ),
        Agent(
            name="triage",
            description="Splits a question into research topics (used by researcher).",
            tools=[classify],
            model=ScriptedModel(fallback_tool="classify", answer_prefix="Topics: "),
        ),
        Agent(
            name="data",
            description="Gathers facts about topics (used by researcher).",
            tools=[lookup, calculator],
            model=ScriptedModel(fallback_tool="lookup", answer_prefix="Facts: "),
        ),
        Agent(
            name="reporting",
            description="Writes the final report from gathered facts (used by researcher).",
            model=ScriptedModel(answer_prefix="Report. "),
        ),
    ]
