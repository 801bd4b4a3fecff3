"""Closing what an interrupted run left open, before its terminal event.

The protocol promises that each ``tool_executing`` is followed by its
``tool_completed`` and each delegated ``agent_started`` by its own end. A run
whose process died (a crash, a ``kill -9``, a cluster takeover) or whose events
could not be stored (an outage) stopped in the middle of both. Before such a
run gets its terminal event, every call still open gets ``tool_completed``
(``ok: false``, code ``interrupted``) and every delegated execution still open
gets ``agent_error`` (code ``interrupted``), innermost first, each stamped with
the execution that opened it.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any

import orjson

from .events import (
    AGENT_COMPLETED,
    AGENT_ERROR,
    AGENT_STARTED,
    TOOL_COMPLETED,
    TOOL_EXECUTING,
    make_event,
)

if TYPE_CHECKING:
    from .context import RunContext
    from .store.db import Store
    from .store.writer import EventWriter

TOOL_INTERRUPTED = {
    "code": "interrupted",
    "message": "the server stopped while the tool was running",
}
AGENT_INTERRUPTED = {
    "code": "interrupted",
    "message": "the server stopped while the agent was running",
}
#: Events read per page while looking for a run's open calls and executions.
_PAGE = 1000


def open_ends(events: list[dict[str, Any]]) -> list[tuple[dict[str, Any], str, dict[str, Any]]]:
    """The events that close what ``events`` (one run's, in order) left open.

    Returns ``(opening event, type, fields)`` in the order to write them: open tool
    calls first (latest first), then open delegated executions, deepest first.
    """
    calls: dict[str, dict[str, Any]] = {}
    executions: dict[str, dict[str, Any]] = {}
    for event in events:
        kind = event.get("type")
        if kind == TOOL_EXECUTING:
            calls[str(event.get("call_id"))] = event
        elif kind == TOOL_COMPLETED:
            calls.pop(str(event.get("call_id")), None)
        elif kind == AGENT_STARTED and event.get("depth", 0) > 0:
            executions[str(event.get("execution_id"))] = event
        elif kind in (AGENT_COMPLETED, AGENT_ERROR) and event.get("depth", 0) > 0:
            executions.pop(str(event.get("execution_id")), None)
    closing: list[tuple[dict[str, Any], str, dict[str, Any]]] = []
    for call in reversed(list(calls.values())):
        fields = {
            "tool_name": call.get("tool_name"),
            "call_id": call.get("call_id"),
            "ok": False,
            "error": TOOL_INTERRUPTED,
            "duration_ms": 0.0,
        }
        closing.append((call, TOOL_COMPLETED, fields))
    for started in reversed(list(executions.values())):
        fields = {"status": "failed", "error": AGENT_INTERRUPTED, "depth": started.get("depth")}
        closing.append((started, AGENT_ERROR, fields))
    return closing


async def close_open_ends(store: Store, writer: EventWriter, ctx: RunContext) -> int:
    """Write the closing events of the run of ``ctx`` (see :func:`open_ends`); returns how many.

    ``ctx`` is the run's own context; each closing event is stamped with the
    execution (id, agent name) of the event it closes.
    """
    events: list[dict[str, Any]] = []
    after = 0
    while True:
        bodies = await store.list_events(
            ctx.user_id, ctx.thread_id, after=after, limit=_PAGE, check_owner=False
        )
        for body in bodies:
            event = orjson.loads(body)
            after = event["seq"]
            if event.get("run_id") == ctx.run_id:
                events.append(event)
        if len(bodies) < _PAGE:
            break
    closing = open_ends(events)
    for opening, kind, fields in closing:
        owner = replace(
            ctx,
            execution_id=opening.get("execution_id") or ctx.execution_id,
            agent_name=opening.get("agent_name") or ctx.agent_name,
        )
        await writer.write(make_event(owner, kind, fields))
    return len(closing)
