"""The ``assistant``: a model with a calculator, a clock and per-user notes.

The notes make isolation visible: ``remember`` stores a note for the calling
user, ``recall`` searches that user's notes only. The tools never see a user id;
they get the caller's :class:`~tenet.context.RunContext`. ``forget`` deletes the
user's notes, and only once the user approves the call (``approval_requested``).
"""

from __future__ import annotations

import ast
import math
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


#: The widest integer any step may produce (bits): about 308 digits, a float's range.
MAX_BITS = 1024
#: The largest exponent (absolute value) of ``**``.
MAX_EXPONENT = 100
#: An answer the wire carries exactly: a 64-bit integer; a wider one is given as a float.
_INT64 = 1 << 63


def _bounded(value: float | int) -> float | int:
    """``value`` if it is within the calculator's size; ``ValueError`` otherwise."""
    if isinstance(value, int):
        if value.bit_length() > MAX_BITS:
            raise ValueError("result too large")
    elif not math.isfinite(value):
        raise ValueError("result too large")
    return value


def _power(base: float | int, exponent: float | int) -> float | int:
    """``base ** exponent``, refused *before* computing when the result would be too wide."""
    if abs(exponent) > MAX_EXPONENT:
        raise ValueError("exponent too large")
    if isinstance(base, int) and isinstance(exponent, int) and exponent > 0:
        if (abs(base).bit_length() - 1) * exponent > MAX_BITS:
            raise ValueError("result too large")
    return operator.pow(base, exponent)


def evaluate(expression: str) -> float | int:
    """Evaluate plain arithmetic safely: no names, no calls, and bounded size.

    Every step's result stays within :data:`MAX_BITS` (a power is refused from its
    operands' sizes before it is computed), so a user's expression costs
    microseconds on the event loop. An integer answer wider than 64 bits is
    returned as a float (the wire's JSON carries 64-bit integers). Raises
    ``ValueError`` with the reason otherwise.
    """
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
            return _bounded(node.value)
        if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
            left, right = ev(node.left), ev(node.right)
            if isinstance(node.op, ast.Pow):
                return _bounded(_power(left, right))
            return _bounded(_OPS[type(node.op)](left, right))  # type: ignore[operator]
        if isinstance(node, ast.UnaryOp) and type(node.op) in _OPS:
            return _OPS[type(node.op)](ev(node.operand))  # type: ignore[operator]
        raise ValueError("only numbers and + - * / % ** are allowed")

    try:
        result = ev(ast.parse(expression, mode="eval"))
        if isinstance(result, float) and result.is_integer() and abs(result) < _INT64:
            return int(result)
        if isinstance(result, int) and not -_INT64 <= result < _INT64:
            return _bounded(float(result))
    except OverflowError:
        raise ValueError("result too large") from None
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


@tool(requires_approval=True)
async def forget(ctx: RunContext) -> str:
    """Delete this user's notes."""
    count = await ctx.notes.forget()
    return f"Forgot {count} note{'s' if count != 1 else ''}."


def assistant() -> Agent:
    return Agent(
        name="assistant",
        description="A helpful assistant with a calculator, a clock and notes it keeps for you.",
        instructions=(
            "You are a concise assistant. Use the calculator for arithmetic, the clock for "
            "the date and time, remember to keep a note for the user, recall to search them."
        ),
        tools=[calculator, clock, remember, recall, forget],
    )
