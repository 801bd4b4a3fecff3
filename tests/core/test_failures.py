"""Timeouts, cancellation at every stage, and failures confined to their run."""

from __future__ import annotations

import asyncio

import pytest
from core_support import (
    FuncAgent,
    new_thread,
    new_user,
    registry_with,
    run_events,
    run_to_end,
    wait_until,
)
from protocol_checks import assert_run_well_formed

from tenet import Agent, RunContext, ScriptedModel, Service, ToolFailed, tool


class Probes:
    """What the test agents tell the test: where they are."""

    def __init__(self) -> None:
        self.thinking = asyncio.Event()
        self.in_tool = asyncio.Event()
        self.tool_cancelled = False


def failure_agents(probes: Probes) -> list[Agent]:
    async def sleeper(ctx: RunContext, input: str) -> str:
        await ctx.think("thinking for a long time")
        probes.thinking.set()
        await asyncio.sleep(30)
        return "never"

    @tool
    async def slow(seconds: float) -> str:
        """Sleep."""
        probes.in_tool.set()
        try:
            await asyncio.sleep(seconds)
        except asyncio.CancelledError:
            probes.tool_cancelled = True
            raise
        return "slept"

    async def tool_user(ctx: RunContext, input: str) -> str:
        await ctx.think("calling slow")
        return await ctx.call_tool("slow", seconds=float(input))

    async def crasher(ctx: RunContext, input: str) -> str:
        await ctx.think("about to fail")
        await asyncio.sleep(0.02)
        raise RuntimeError("boom in agent")

    async def delegator(ctx: RunContext, input: str) -> str:
        return await ctx.delegate("loop", input)

    @tool
    async def explode(reason: str) -> str:
        """Always fails."""
        raise ValueError(f"exploded: {reason}")

    @tool
    async def add(a: int, b: int) -> int:
        """Add two integers."""
        return a + b

    @tool(timeout=0.05)
    async def stuck() -> str:
        """Never answers in time."""
        await asyncio.sleep(5)
        return "late"

    async def unknown_caller(ctx: RunContext, input: str) -> str:
        try:
            await ctx.call_tool("nope")
        except ToolFailed as exc:
            return f"caught {exc.code}"
        return "no error"

    return [
        FuncAgent("unknown_caller", unknown_caller),
        FuncAgent("sleeper", sleeper),
        FuncAgent("tool_user", tool_user, tools=[slow]),
        FuncAgent("crasher", crasher),
        FuncAgent("loop", delegator),
        Agent("toolbox", tools=[explode, add, stuck], model=ScriptedModel()),
    ]


@pytest.fixture
def probes() -> Probes:
    return Probes()


@pytest.fixture
async def svc(make_settings, probes: Probes):
    settings = make_settings(run_timeout_s=5)
    async with Service(settings, registry_with(settings, *failure_agents(probes))) as s:
        yield s


async def start(svc: Service, agent: str, input: str = "x"):
    user = await new_user(svc)
    thread = await new_thread(svc, user)
    run = await svc.engine.submit(user, thread, agent, input)
    return user, thread, run


async def finish(svc: Service, user: str, thread: str, run_id: str):
    await asyncio.wait_for(svc.engine.wait(run_id), 10)
    stored = await svc.store.get_run(user, run_id)
    events = await run_events(svc, user, thread, run_id)
    assert_run_well_formed(events)
    return stored, events


async def test_run_timeout_fails_the_run_with_code_timeout(make_settings, probes) -> None:
    settings = make_settings(run_timeout_s=0.2)
    async with Service(settings, registry_with(settings, *failure_agents(probes))) as svc:
        user, thread, run = await start(svc, "sleeper")
        stored, events = await finish(svc, user, thread, run.id)
        assert stored.status == "failed"
        assert stored.error["code"] == "timeout"
        assert events[-1]["type"] == "agent_error"
        assert events[-1]["error"]["code"] == "timeout" and events[-1]["depth"] == 0
        # a timeout inside a tool closes the tool call first
        user, thread, run = await start(svc, "tool_user", "10")
        stored, events = await finish(svc, user, thread, run.id)
        assert stored.status == "failed" and stored.error["code"] == "timeout"
        done = [e for e in events if e["type"] == "tool_completed"]
        assert len(done) == 1 and done[0]["ok"] is False


async def test_cancel_while_queued(svc: Service, probes: Probes) -> None:
    user, thread, first = await start(svc, "sleeper")
    queued = await svc.engine.submit(user, thread, "assistant", "what is 1 + 2?")
    await asyncio.wait_for(probes.thinking.wait(), 5)
    assert (await svc.store.get_run(user, queued.id)).status == "queued"

    answer = await svc.engine.cancel(user, queued.id)
    assert answer.status == "cancelled"
    stored, events = await finish(svc, user, thread, queued.id)
    assert stored.status == "cancelled" and stored.started_at is None
    assert [e["type"] for e in events] == ["run_cancelled"]
    assert events[0]["reason"] == "user"
    # the run ahead of it is untouched and still running
    assert (await svc.store.get_run(user, first.id)).status == "running"
    await svc.engine.cancel(user, first.id)
    stored, _ = await finish(svc, user, thread, first.id)
    assert stored.status == "cancelled"


async def test_cancel_while_thinking(svc: Service, probes: Probes) -> None:
    user, thread, run = await start(svc, "sleeper")
    await asyncio.wait_for(probes.thinking.wait(), 5)
    answer = await svc.engine.cancel(user, run.id)
    assert answer.status in ("cancelling", "cancelled")
    stored, events = await finish(svc, user, thread, run.id)
    assert stored.status == "cancelled" and stored.finished_at is not None
    assert [e["type"] for e in events] == ["agent_started", "agent_thinking", "run_cancelled"]
    assert events[-1]["reason"] == "user"
    # the thread takes new runs afterwards
    again, events = await run_to_end(svc, user, thread, "assistant", "what is 2 + 2?")
    assert again.status == "completed"


async def test_cancel_inside_a_tool(svc: Service, probes: Probes) -> None:
    user, thread, run = await start(svc, "tool_user", "30")
    await asyncio.wait_for(probes.in_tool.wait(), 5)
    await svc.engine.cancel(user, run.id)
    stored, events = await finish(svc, user, thread, run.id)
    assert stored.status == "cancelled"
    assert probes.tool_cancelled, "the tool's coroutine must be cancelled, not left running"
    types = [e["type"] for e in events]
    assert types == [
        "agent_started",
        "agent_thinking",
        "tool_executing",
        "tool_completed",
        "run_cancelled",
    ]
    done = events[3]
    assert done["call_id"] == events[2]["call_id"]
    assert done["ok"] is False and done["error"]["code"] == "cancelled"


async def test_cancelling_a_finished_run_changes_nothing(svc: Service) -> None:
    user = await new_user(svc)
    run, events = await run_to_end(svc, user, await new_thread(svc, user), "benchmark", "go")
    answer = await svc.engine.cancel(user, run.id)
    assert answer.status == "completed"
    assert len(await run_events(svc, user, run.thread_id, run.id)) == len(events)


async def test_agent_exception_fails_only_its_run(svc: Service) -> None:
    bad_user, bad_thread, bad = await start(svc, "crasher")
    good_user = await new_user(svc)
    good_thread = await new_thread(svc, good_user)
    good = await svc.engine.submit(good_user, good_thread, "benchmark", "latency_ms=40")

    stored, events = await finish(svc, bad_user, bad_thread, bad.id)
    assert stored.status == "failed"
    assert stored.error["code"] == "agent_error" and "boom in agent" in stored.error["message"]
    assert events[-1]["type"] == "agent_error" and events[-1]["error"] == stored.error
    assert "Traceback" not in str(events)

    stored, events = await finish(svc, good_user, good_thread, good.id)
    assert stored.status == "completed" and len(events) == 25
    # the engine lives on: the failing user's next run works
    again, _ = await run_to_end(svc, bad_user, bad_thread, "assistant", "what is 3 * 3?")
    assert again.status == "completed" and "9" in again.output


@pytest.mark.parametrize(
    ("input", "code", "message_part"),
    [
        ("use explode reason=bad", "tool_error", "exploded: bad"),
        ("use add a=notanumber b=2", "invalid_arguments", "a"),
        ("use stuck", "timeout", "stuck"),
    ],
)
async def test_tool_failures_become_tool_completed_and_the_run_goes_on(
    svc: Service, input: str, code: str, message_part: str
) -> None:
    user, thread, run = await start(svc, "toolbox", input)
    stored, events = await finish(svc, user, thread, run.id)
    assert stored.status == "completed", stored.error
    done = [e for e in events if e["type"] == "tool_completed"]
    assert len(done) == 1
    assert done[0]["ok"] is False and "results" not in done[0]
    assert done[0]["error"]["code"] == code
    assert message_part in done[0]["error"]["message"]
    # the model saw the error and answered with it
    assert "failed" in stored.output


async def test_valid_tool_arguments_are_coerced_and_succeed(svc: Service) -> None:
    user, thread, run = await start(svc, "toolbox", "use add a=2 b=40")
    _stored, events = await finish(svc, user, thread, run.id)
    done = [e for e in events if e["type"] == "tool_completed"]
    assert done[0]["ok"] is True and done[0]["results"] == 42


async def test_unknown_tool_is_reported_to_the_agent(svc: Service) -> None:
    user, thread, run = await start(svc, "unknown_caller")
    stored, events = await finish(svc, user, thread, run.id)
    assert stored.status == "completed" and stored.output == "caught unknown_tool"
    done = [e for e in events if e["type"] == "tool_completed"]
    assert done[0]["ok"] is False and done[0]["error"]["code"] == "unknown_tool"


async def test_self_delegation_hits_the_depth_cap_and_fails_cleanly(svc: Service) -> None:
    user, thread, run = await start(svc, "loop")
    stored, events = await finish(svc, user, thread, run.id)
    assert stored.status == "failed"
    assert stored.error["code"] == "depth_exceeded"
    starts = [e for e in events if e["type"] == "agent_started"]
    assert [s["depth"] for s in starts] == list(range(11))
    errors = [e for e in events if e["type"] == "agent_error"]
    assert sorted(e["depth"] for e in errors) == list(range(11))
    assert events[-1]["depth"] == 0
    # and the engine still serves that user
    again, _ = await run_to_end(svc, user, thread, "benchmark", "go")
    assert again.status == "completed"


async def test_cancel_reaches_a_delegated_child(make_settings, probes) -> None:
    async def parent(ctx: RunContext, input: str) -> str:
        return await ctx.delegate("sleeper", input)

    settings = make_settings()
    agents = [*failure_agents(probes), FuncAgent("parent", parent)]
    async with Service(settings, registry_with(settings, *agents)) as svc:
        user, thread, run = await start(svc, "parent")
        await asyncio.wait_for(probes.thinking.wait(), 5)
        await svc.engine.cancel(user, run.id)
        stored, events = await finish(svc, user, thread, run.id)
        assert stored.status == "cancelled"
        child_end = [e for e in events if e["type"] == "agent_error"]
        assert len(child_end) == 1 and child_end[0]["depth"] == 1
        assert child_end[0]["error"]["code"] == "cancelled"
        assert events[-1]["type"] == "run_cancelled"
        await wait_until(lambda: svc.engine.running_count == 0)
