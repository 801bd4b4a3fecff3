"""PROTOCOL.md's event rules as pure functions, shared by the core, server and audit suites.

Every function takes plain event dicts (as parsed from the wire or the store) and
raises ``AssertionError`` with a message naming the offending event. Nothing here
imports tenet: the rules are checked against the protocol text, not the code.

``tests`` is not a package; a suite outside ``tests/core`` imports this with::

    sys.path.insert(0, str(Path(__file__).parents[1] / "core"))
    from protocol_checks import assert_run_well_formed
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

IDENTITY_FIELDS = (
    "type",
    "event_id",
    "seq",
    "user_id",
    "thread_id",
    "run_id",
    "execution_id",
    "agent_name",
    "timestamp",
)

TYPE_FIELDS: dict[str, tuple[str, ...]] = {
    "agent_started": ("input", "depth"),
    "agent_thinking": ("reasoning", "step"),
    "message_delta": ("text",),
    "tool_executing": ("tool_name", "call_id", "parameters"),
    "tool_completed": ("tool_name", "call_id", "ok", "duration_ms"),
    "agent_completed": ("status", "final_response", "duration_ms", "depth"),
    "agent_error": ("status", "error", "depth"),
    "run_cancelled": ("status", "reason"),
}

TIMESTAMP = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")

Event = Mapping[str, Any]


def _where(i: int, e: Event) -> str:
    return f"event #{i} (seq={e.get('seq')}, type={e.get('type')!r})"


def is_terminal(event: Event) -> bool:
    """The one event that ends a run: ``run_cancelled``, or a depth-0 completed/error."""
    t = event.get("type")
    return t == "run_cancelled" or (
        t in ("agent_completed", "agent_error") and event.get("depth") == 0
    )


def assert_event_shape(event: Event, where: str = "event") -> None:
    """One flat object with the identity fields and the fields of its type."""
    for name in IDENTITY_FIELDS:
        assert name in event, f"{where}: missing identity field {name!r}: {event}"
    etype = event["type"]
    assert etype in TYPE_FIELDS, f"{where}: unknown type {etype!r}"
    for name in TYPE_FIELDS[etype]:
        assert name in event, f"{where}: {etype} lacks {name!r}: {event}"
    assert isinstance(event["seq"], int) and event["seq"] >= 1, f"{where}: bad seq"
    assert isinstance(event["timestamp"], str) and TIMESTAMP.match(event["timestamp"]), (
        f"{where}: timestamp {event['timestamp']!r} is not RFC 3339 UTC with milliseconds"
    )
    if etype == "tool_completed":
        assert isinstance(event["ok"], bool), f"{where}: ok must be a bool"
        if event["ok"]:
            assert "results" in event, f"{where}: ok tool_completed without results"
        else:
            err = event.get("error")
            assert isinstance(err, Mapping) and "code" in err and "message" in err, (
                f"{where}: failed tool_completed needs error {{code, message}}: {event}"
            )
    if etype == "agent_completed":
        assert event["status"] == "completed", f"{where}: status {event['status']!r}"
    if etype == "agent_error":
        assert event["status"] == "failed", f"{where}: status {event['status']!r}"
        err = event["error"]
        assert isinstance(err, Mapping) and "code" in err and "message" in err, (
            f"{where}: agent_error needs error {{code, message}}: {event}"
        )
    if etype == "run_cancelled":
        assert event["status"] == "cancelled", f"{where}: status {event['status']!r}"
    if etype in ("agent_started", "agent_completed", "agent_error"):
        assert isinstance(event["depth"], int) and event["depth"] >= 0, f"{where}: bad depth"


def assert_run_well_formed(events: Sequence[Event]) -> Event:
    """Check PROTOCOL.md's rules for the events of ONE run, in ``seq`` order.

    - every event has the identity fields and its type's fields, one user, thread, run;
    - ``seq`` strictly increases;
    - ``agent_started`` with depth 0 and no parent comes first (a run cancelled or
      failed before it started may consist of its terminal event alone);
    - each delegated ``agent_started`` names an open parent execution, has depth
      parent + 1, and is followed by its own end (``agent_completed``/``agent_error``
      with its execution id and depth) before its parent ends;
    - every other event carries the execution id of an open execution;
    - each ``tool_executing`` is followed by exactly one ``tool_completed`` with its
      ``call_id`` (same execution, same tool), and a ``tool_completed`` never comes
      without one;
    - exactly one terminal event, and it is the last.

    Returns the terminal event.
    """
    assert events, "a run has at least one event"
    first = events[0]
    for i, e in enumerate(events):
        assert_event_shape(e, _where(i, e))
    for key in ("user_id", "thread_id", "run_id"):
        values = {e[key] for e in events}
        assert len(values) == 1, f"one run's events carry several {key}s: {values}"
    seqs = [e["seq"] for e in events]
    assert all(a < b for a, b in itertools.pairwise(seqs)), (
        f"seq must increase within a run: {seqs}"
    )

    terminals = [i for i, e in enumerate(events) if is_terminal(e)]
    assert len(terminals) == 1, (
        f"exactly one terminal event per run, found {len(terminals)}: "
        f"{[events[i]['type'] for i in terminals]}"
    )
    assert terminals[0] == len(events) - 1, (
        f"the terminal event must be last, but {_where(terminals[0], events[terminals[0]])} "
        f"is followed by {[e['type'] for e in events[terminals[0] + 1 :]]}"
    )
    terminal = events[-1]

    if len(events) == 1 and first["type"] in ("run_cancelled", "agent_error"):
        return terminal  # ended before it started (cancelled while queued, interrupted)

    assert first["type"] == "agent_started", f"first event must be agent_started, got {first}"
    assert first["depth"] == 0, f"the run's first agent_started has depth 0, got {first['depth']}"
    assert first.get("parent_execution_id") is None, "the run's own agent has no parent"
    root = first["execution_id"]

    # execution id -> depth, for executions started and not yet ended
    open_execs: dict[str, int] = {root: 0}
    parents: dict[str, str | None] = {root: None}
    ended: set[str] = set()
    open_calls: dict[str, tuple[str, str]] = {}  # call_id -> (execution_id, tool_name)
    seen_calls: set[str] = set()

    for i, e in enumerate(events[1:], start=1):
        where = _where(i, e)
        etype, exe = e["type"], e["execution_id"]
        if etype == "run_cancelled":
            continue  # the engine's own event; it may carry any execution id
        if etype == "agent_started":
            parent = e.get("parent_execution_id")
            assert e["depth"] >= 1, f"{where}: a second agent_started must be delegated"
            assert exe not in open_execs and exe not in ended, (
                f"{where}: execution {exe} started twice"
            )
            assert parent in open_execs, f"{where}: parent {parent} is not a running execution"
            assert e["depth"] == open_execs[parent] + 1, (
                f"{where}: depth {e['depth']} but parent's depth is {open_execs[parent]}"
            )
            open_execs[exe] = e["depth"]
            parents[exe] = parent
            continue
        assert exe in open_execs, (
            f"{where}: execution {exe} is not running (never started, or already ended)"
        )
        if etype == "tool_executing":
            cid = e["call_id"]
            assert cid not in seen_calls, f"{where}: call_id {cid!r} used twice"
            seen_calls.add(cid)
            open_calls[cid] = (exe, e["tool_name"])
        elif etype == "tool_completed":
            cid = e["call_id"]
            assert cid in open_calls, f"{where}: tool_completed for {cid!r} without tool_executing"
            call_exe, name = open_calls.pop(cid)
            assert call_exe == exe, f"{where}: completed by {exe}, called by {call_exe}"
            assert name == e["tool_name"], f"{where}: tool_name {e['tool_name']!r} != {name!r}"
        elif etype in ("agent_completed", "agent_error"):
            assert e["depth"] == open_execs[exe], (
                f"{where}: end depth {e['depth']} != start depth {open_execs[exe]}"
            )
            children = [x for x, p in parents.items() if p == exe and x in open_execs]
            assert not children, f"{where}: {exe} ended before its children {children}"
            calls = [c for c, (x, _) in open_calls.items() if x == exe]
            assert not calls, f"{where}: {exe} ended with tool calls open: {calls}"
            del open_execs[exe]
            ended.add(exe)

    assert not open_calls, f"tool calls never completed: {sorted(open_calls)}"
    if terminal["type"] == "run_cancelled":
        assert set(open_execs) <= {root}, f"delegated executions never ended: {open_execs}"
    else:
        assert terminal["execution_id"] == root, "the depth-0 end belongs to the run's own agent"
        assert not open_execs, f"executions never ended: {open_execs}"
    return terminal


def assert_seq_gap_free(events: Iterable[Event]) -> None:
    """A thread's events are numbered 1, 2, 3, ... with no gap and no repeat."""
    seqs = [e["seq"] for e in events]
    assert seqs == list(range(1, len(seqs) + 1)), f"seq is not 1..{len(seqs)}: {seqs}"


def split_runs(events: Iterable[Event]) -> dict[str, list[Event]]:
    """A thread's events grouped by run, each group in seq order."""
    runs: dict[str, list[Event]] = {}
    for e in sorted(events, key=lambda e: e["seq"]):
        runs.setdefault(e["run_id"], []).append(e)
    return runs


def assert_runs_serialized(events: Iterable[Event], run_order: Sequence[str]) -> None:
    """Runs of one thread execute one at a time, in acceptance order: in ``seq`` order
    the runs' events form contiguous blocks, one per run, in ``run_order``."""
    blocks: list[str] = []
    for e in sorted(events, key=lambda e: e["seq"]):
        if not blocks or blocks[-1] != e["run_id"]:
            blocks.append(e["run_id"])
    assert blocks == list(run_order), (
        "runs of one thread interleaved or out of acceptance order:\n"
        f"  blocks: {blocks}\n  order:  {list(run_order)}"
    )
