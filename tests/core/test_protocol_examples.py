"""PROTOCOL.md's ordering rules, for every example agent and each of its paths."""

from __future__ import annotations

import copy

import pytest
from core_support import new_thread, new_user, run_to_end
from protocol_checks import assert_run_well_formed, assert_seq_gap_free

from tenet import Service


@pytest.mark.parametrize(
    ("input", "tool_name", "answer_part"),
    [
        ("what is (2 + 3) * 4?", "calculator", "20"),
        ("remember that the door code is 1234", "remember", "Noted"),
        ("what is my door code?", "recall", "notes"),
        ("what time is it?", "clock", "It is"),
    ],
)
async def test_assistant_tool_paths_are_well_formed(
    service: Service, input: str, tool_name: str, answer_part: str
) -> None:
    user = await new_user(service)
    thread = await new_thread(service, user)
    run, events = await run_to_end(service, user, thread, "assistant", input)

    terminal = assert_run_well_formed(events)
    assert_seq_gap_free(events)
    assert run.status == "completed"
    assert terminal["type"] == "agent_completed" and terminal["depth"] == 0
    assert answer_part in terminal["final_response"]
    assert run.output == terminal["final_response"]
    calls = [e for e in events if e["type"] == "tool_executing"]
    assert [c["tool_name"] for c in calls] == [tool_name]
    done = [e for e in events if e["type"] == "tool_completed"]
    assert done[0]["ok"] is True and done[0]["call_id"] == calls[0]["call_id"]
    assert {e["execution_id"] for e in events} == {events[0]["execution_id"]}
    assert any(e["type"] == "message_delta" for e in events)
    assert all(e["user_id"] == user and e["thread_id"] == thread for e in events)


async def test_researcher_delegation_is_well_formed(service: Service) -> None:
    user = await new_user(service)
    thread = await new_thread(service, user)
    run, events = await run_to_end(
        service, user, thread, "researcher", "Tell me about python and sqlite"
    )
    assert run.status == "completed"
    assert_run_well_formed(events)
    root = events[0]["execution_id"]

    starts = [e for e in events if e["type"] == "agent_started" and e["depth"] == 1]
    assert [s["agent_name"] for s in starts] == ["triage", "data", "reporting"]
    child_ids = [s["execution_id"] for s in starts]
    assert len(set(child_ids)) == 3 and root not in child_ids
    for start in starts:
        assert start["parent_execution_id"] == root
        exe = start["execution_id"]
        mine = [e for e in events if e["execution_id"] == exe]
        assert mine[0] is start
        # each child's start is followed by its own end, before the next child starts
        assert mine[-1]["type"] == "agent_completed" and mine[-1]["depth"] == 1
        between = [e for e in events if start["seq"] < e["seq"] < mine[-1]["seq"]]
        assert all(e["execution_id"] == exe for e in between), "children overlapped"
        # tool events carry the calling child's execution id and agent name
        for e in mine:
            assert e["agent_name"] == start["agent_name"]
    tools = [e for e in events if e["type"] in ("tool_executing", "tool_completed")]
    assert tools, "triage and data call tools"
    by_name = {s["agent_name"]: s["execution_id"] for s in starts}
    for e in tools:
        expected = by_name["triage"] if e["tool_name"] == "classify" else by_name["data"]
        assert e["execution_id"] == expected
    assert "Report." in events[-1]["final_response"]


async def test_benchmark_emits_exactly_25_events(service: Service) -> None:
    user = await new_user(service)
    thread = await new_thread(service, user)
    run, events = await run_to_end(service, user, thread, "benchmark", "go")
    assert run.status == "completed"
    assert len(events) == 25
    assert_run_well_formed(events)
    assert_seq_gap_free(events)
    types = [e["type"] for e in events]
    assert types[:4] == ["agent_started", "agent_thinking", "tool_executing", "tool_completed"]
    assert types[4:-1] == ["message_delta"] * 20
    assert types[-1] == "agent_completed"


# The checker itself must fail on each broken rule, or the tests above prove nothing.


def _good_run() -> list[dict]:
    ids = {
        "user_id": "usr_a",
        "thread_id": "thr_a",
        "run_id": "run_a",
        "timestamp": "2026-01-01T00:00:00.000Z",
    }
    rows = [
        ("agent_started", "exe_root", "a", {"input": "x", "depth": 0}),
        ("tool_executing", "exe_root", "a", {"tool_name": "t", "call_id": "c1", "parameters": {}}),
        (
            "tool_completed",
            "exe_root",
            "a",
            {"tool_name": "t", "call_id": "c1", "ok": True, "results": 1, "duration_ms": 1},
        ),
        (
            "agent_started",
            "exe_kid",
            "b",
            {"input": "y", "depth": 1, "parent_execution_id": "exe_root"},
        ),
        (
            "agent_completed",
            "exe_kid",
            "b",
            {"status": "completed", "final_response": "k", "duration_ms": 1, "depth": 1},
        ),
        (
            "agent_completed",
            "exe_root",
            "a",
            {"status": "completed", "final_response": "r", "duration_ms": 1, "depth": 0},
        ),
    ]
    return [
        {"type": t, "event_id": f"evt_{i}", "seq": i + 1, "execution_id": x, "agent_name": n}
        | ids
        | f
        for i, (t, x, n, f) in enumerate(rows)
    ]


def test_checker_accepts_a_good_run() -> None:
    assert_run_well_formed(_good_run())


def _broken(mutate) -> list[dict]:
    events = copy.deepcopy(_good_run())
    mutate(events)
    for i, e in enumerate(events):
        e["seq"] = i + 1
    return events


@pytest.mark.parametrize(
    "mutate",
    [
        pytest.param(lambda ev: ev.pop(0), id="no-agent-started"),
        pytest.param(lambda ev: ev.pop(2), id="tool-never-completed"),
        pytest.param(lambda ev: ev.pop(1), id="completed-without-executing"),
        pytest.param(lambda ev: ev.insert(3, copy.deepcopy(ev[2])), id="two-completions"),
        pytest.param(lambda ev: ev.pop(4), id="child-never-ends"),
        pytest.param(lambda ev: ev.append(copy.deepcopy(ev[-1])), id="two-terminals"),
        pytest.param(lambda ev: ev.insert(5, ev.pop(4)) or ev.reverse(), id="reordered"),
        pytest.param(lambda ev: ev[2].update(execution_id="exe_kid"), id="tool-wrong-execution"),
        pytest.param(lambda ev: ev[3].update(depth=2), id="bad-child-depth"),
        pytest.param(lambda ev: ev[3].update(parent_execution_id="exe_x"), id="unknown-parent"),
        pytest.param(lambda ev: ev[1].update(user_id="usr_b"), id="foreign-user"),
        pytest.param(lambda ev: ev[1].pop("run_id"), id="missing-identity"),
        pytest.param(lambda ev: ev[0].update(timestamp="yesterday"), id="bad-timestamp"),
        pytest.param(
            lambda ev: ev.insert(5, {**copy.deepcopy(ev[1]), "call_id": "c2"}),
            id="tool-open-at-end",
        ),
    ],
)
def test_checker_rejects_broken_runs(mutate) -> None:
    with pytest.raises(AssertionError):
        assert_run_well_formed(_broken(mutate))


def test_seq_checker_rejects_gap_and_repeat() -> None:
    assert_seq_gap_free([{"seq": 1}, {"seq": 2}, {"seq": 3}])
    with pytest.raises(AssertionError):
        assert_seq_gap_free([{"seq": 1}, {"seq": 3}])
    with pytest.raises(AssertionError):
        assert_seq_gap_free([{"seq": 1}, {"seq": 1}, {"seq": 2}])
