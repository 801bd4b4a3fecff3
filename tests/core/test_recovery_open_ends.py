"""Recovery closes every open tool call and delegated execution before the run's end.

A process killed while a delegated agent was inside a tool leaves a run whose
stream ends with ``tool_executing`` and a depth-1 ``agent_started``. The next
start (and, in a cluster, the process that takes the run over) gives each open
call its ``tool_completed`` (ok false, code ``interrupted``) and each open
delegated execution its ``agent_error`` (code ``interrupted``), innermost first,
before the run's terminal event.
"""

from __future__ import annotations

import os
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from core_support import new_thread, new_user, run_events
from protocol_checks import assert_run_well_formed, assert_seq_gap_free
from sqlalchemy import update

from tenet import RunContext, Service, Settings
from tenet.events import AGENT_STARTED, TOOL_COMPLETED, TOOL_EXECUTING, make_event
from tenet.ids import new_id
from tenet.store.tables import Run


async def _leave_a_run_inside_a_delegated_tool(svc: Service, user: str, thread: str) -> str:
    """What a killed process leaves: a run whose child agent is inside its second tool."""
    run = await svc.store.create_run(user, thread, "researcher", "go")
    await svc.store.update_run(user, run.id, status="running", worker_id="dead:1")
    root = RunContext(
        user_id=user,
        thread_id=thread,
        run_id=run.id,
        execution_id=new_id("exe"),
        agent_name="researcher",
    )
    child = replace(
        root,
        execution_id=new_id("exe"),
        agent_name="triage",
        depth=1,
        parent_execution_id=root.execution_id,
    )
    write = svc.writer.write
    await write(make_event(root, AGENT_STARTED, {"input": "go", "depth": 0}))
    await write(
        make_event(
            child,
            AGENT_STARTED,
            {"input": "go", "depth": 1, "parent_execution_id": root.execution_id},
        )
    )
    done = {"tool_name": "clock", "call_id": "call_1", "parameters": {}}
    await write(make_event(child, TOOL_EXECUTING, done))
    await write(
        make_event(
            child,
            TOOL_COMPLETED,
            {"tool_name": "clock", "call_id": "call_1", "ok": True, "results": 1, "duration_ms": 1},
        )
    )
    await write(
        make_event(
            child,
            TOOL_EXECUTING,
            {"tool_name": "calculator", "call_id": "call_2", "parameters": {}},
        )
    )
    return run.id


@pytest.mark.parametrize("was", ["running", "cancelling"])
async def test_a_restart_closes_open_tool_calls_and_delegations_first(
    database_url: str, was: str
) -> None:
    settings = Settings(database_url=database_url)
    async with Service(settings) as first:
        user = await new_user(first)
        thread = await new_thread(first, user)
        run_id = await _leave_a_run_inside_a_delegated_tool(first, user, thread)
        await first.store.update_run(user, run_id, status=was)
        before = await run_events(first, user, thread, run_id)
    child_exe = before[1]["execution_id"]

    async with Service(settings) as second:
        events = await run_events(second, user, thread, run_id)
    added = events[len(before) :]
    assert [e["type"] for e in added] == [
        "tool_completed",
        "agent_error",
        "agent_error" if was == "running" else "run_cancelled",
    ]
    tool_end, child_end, end = added
    assert tool_end["call_id"] == "call_2" and tool_end["ok"] is False
    assert tool_end["error"]["code"] == "interrupted"
    assert tool_end["execution_id"] == child_exe and tool_end["agent_name"] == "triage"
    assert child_end["execution_id"] == child_exe and child_end["depth"] == 1
    assert child_end["error"]["code"] == "interrupted"
    assert end["execution_id"] == before[0]["execution_id"]
    assert_run_well_formed(events)
    assert_seq_gap_free(events)


async def test_a_cluster_takeover_closes_open_tool_calls_and_delegations_first(
    postgres_url: str,
) -> None:
    redis_url = os.environ.get("TENET_TEST_REDIS_URL")
    if not redis_url:
        pytest.skip("set TENET_TEST_REDIS_URL to run the cluster tests")
    settings = Settings(database_url=postgres_url, redis_url=redis_url, heartbeat_s=60)
    async with Service(settings) as svc:
        user = await new_user(svc)
        thread = await new_thread(svc, user)
        run_id = await _leave_a_run_inside_a_delegated_tool(svc, user, thread)
        long_ago = datetime.now(UTC) - timedelta(hours=1)
        async with svc.store.write() as s:
            await s.execute(update(Run).where(Run.id == run_id).values(heartbeat_at=long_ago))
        before = await run_events(svc, user, thread, run_id)
        assert await svc.engine.queue.sweep_once() == 1  # type: ignore[attr-defined]
        events = await run_events(svc, user, thread, run_id)
    added = [e["type"] for e in events[len(before) :]]
    assert added == ["tool_completed", "agent_error", "agent_error"]
    assert events[-1]["depth"] == 0 and events[-1]["error"]["code"] == "interrupted"
    assert_run_well_formed(events)
