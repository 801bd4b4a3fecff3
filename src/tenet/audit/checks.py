"""Pure checks of PROTOCOL.md's event guarantees, shared by the audit and the tests.

Each function returns a list of human-readable violations (empty when all is
well) rather than raising, so the audit can count them and a test can assert
the list is empty and print it when it is not.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

TERMINAL = ("agent_completed", "agent_error", "run_cancelled")


def is_terminal(event: dict[str, Any]) -> bool:
    t = event.get("type")
    return t == "run_cancelled" or (
        t in ("agent_completed", "agent_error") and event.get("depth") == 0
    )


def seq_violations(events: Sequence[dict[str, Any]], *, start: int = 1) -> list[str]:
    """A thread's events must be numbered start, start+1, ... with no gap and no repeat."""
    out = []
    expected = start
    for e in events:
        if e.get("seq") != expected:
            out.append(f"thread {e.get('thread_id')}: expected seq {expected}, got {e.get('seq')}")
            expected = int(e.get("seq") or expected)
        expected += 1
    return out


def run_violations(events: Iterable[dict[str, Any]]) -> list[str]:
    """PROTOCOL.md's ordering rules for the events of one run, in delivery order."""
    events = list(events)
    if not events:
        return ["run has no events"]
    run_id = events[0].get("run_id")
    out: list[str] = []
    if any(e.get("run_id") != run_id for e in events):
        out.append(f"run {run_id}: events of several runs mixed")
    first = events[0]
    if first.get("type") == "run_cancelled" and len(events) == 1:
        return out  # cancelled before it started
    if first.get("type") != "agent_started" or first.get("depth") != 0:
        out.append(f"run {run_id}: first event is {first.get('type')} (depth {first.get('depth')})")
    terminals = [i for i, e in enumerate(events) if is_terminal(e)]
    if len(terminals) != 1:
        out.append(f"run {run_id}: {len(terminals)} terminal events")
    elif terminals[0] != len(events) - 1:
        out.append(f"run {run_id}: terminal event is not last")
    open_calls: dict[str, str] = {}
    open_execs: dict[str, int] = {}
    root = first.get("execution_id")
    for e in events:
        t = e.get("type")
        if t == "tool_executing":
            if e.get("call_id") in open_calls:
                out.append(f"run {run_id}: call_id {e.get('call_id')} executing twice")
            open_calls[e.get("call_id", "")] = e.get("execution_id", "")
        elif t == "tool_completed":
            started_by = open_calls.pop(e.get("call_id", ""), None)
            if started_by is None:
                out.append(
                    f"run {run_id}: tool_completed {e.get('call_id')} without tool_executing"
                )
            elif started_by != e.get("execution_id"):
                out.append(f"run {run_id}: tool call {e.get('call_id')} changed execution")
        elif t == "agent_started" and e.get("depth", 0) > 0:
            if not e.get("parent_execution_id"):
                out.append(f"run {run_id}: delegated agent_started without parent_execution_id")
            open_execs[e.get("execution_id", "")] = e.get("depth", 0)
        elif t in ("agent_completed", "agent_error") and e.get("depth", 0) > 0:
            if open_execs.pop(e.get("execution_id", ""), None) is None:
                out.append(f"run {run_id}: end of an execution that did not start")
        elif t in ("agent_completed", "agent_error") and e.get("execution_id") != root:
            out.append(f"run {run_id}: depth-0 end from another execution")
    if open_calls:
        out.append(f"run {run_id}: tool calls never completed: {sorted(open_calls)}")
    if open_execs:
        out.append(f"run {run_id}: delegated executions never ended: {sorted(open_execs)}")
    return out


def thread_violations(events: Sequence[dict[str, Any]]) -> list[str]:
    """Seq numbering of a whole thread, and the ordering rules of each of its runs."""
    out = seq_violations(events)
    by_run: dict[str, list[dict[str, Any]]] = {}
    for e in events:
        by_run.setdefault(e.get("run_id", ""), []).append(e)
    for run_events in by_run.values():
        out.extend(run_violations(run_events))
    return out
