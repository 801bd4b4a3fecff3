"""The ``assistant``: a model with a calculator, a clock and per-user notes.

The notes make isolation visible: ``remember`` stores a note for the calling
user, ``recall`` searches that user's notes only. The tools never see a user id;
they get the caller's :class:`~tenet.context.RunContext`.
"""

from __future__ import annotations

import ast
import operator
from datetime import UTC, datetime

from ..agents import Agent
from ..clock import format_time
from ..context import RunContext
from ..tools import tool

_OPS = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
    ast.USub: operator.neg,
    ast.UAdd: operator.pos,
}


def evaluate(expression: str) -> float | int:
    """Evaluate plain arithmetic safely (no names, no calls, bounded powers)."""
    if len(expression) > 200:
        raise ValueError("expression is too long")

    def ev(node: ast.AST) -> float | int:
        if isinstance(node, ast.Expression):
            return ev(node.body)
        if (
            isinstance(node, ast.Constant)
            and isinstance(node.value, int | float)
            and not isinstance(node.value, bool)
        ):
            return node.value
        if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
            left, right = ev(node.left), ev(node.right)
            if isinstance(node.op, ast.Pow) and abs(right) > 100:
                raise ValueError("exponent too large")
            return _OPS[type(node.op)](left, right)  # type: ignore[operator]
        if isinstance(node, ast.UnaryOp) and type(node.op) in _OPS:
            return _OPS[type(node.op)](ev(node.operand))  # type: ignore[operator]
        raise ValueError("only numbers and + - * / % ** are allowed")

    result = ev(ast.parse(expression, mode="eval"))
    if isinstance(result, float) and result.is_integer():
        return int(result)
    return result


@tool
async def calculator(expression: str) -> float | int:
    """Evaluate an arithmetic expression such as ``(2 + 3) * 4``."""
    return evaluate(expression)


@tool
async def clock() -> str:
    """The current date and time (UTC)."""
    return format_time(datetime.now(UTC)) or ""


@tool
async def remember(ctx: RunContext, text: str) -> str:
    """Keep a note for this user, to recall in a later conversation."""
    if not text.strip():
        raise ValueError("nothing to remember")
    await ctx.notes.add(text.strip()[:2000])
    return "noted"


@tool
async def recall(ctx: RunContext, query: str = "") -> list[str]:
    """Search this user's notes; the best matches first."""
    return await ctx.notes.search(query or None, limit=5)


def assistant() -> Agent:
    return Agent(
        name="assistant",
        description="A helpful assistant with a calculator, a clock and notes it keeps for you.",
        instructions=(
            "You are a concise assistant. Use the calculator for arithmetic, the clock for "
            "the date and time, remember to keep a note for the user, recall to search them."
        ),
        tools=[calculator, clock, remember, recall],
    )
