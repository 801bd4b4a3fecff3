"""A value the wire can't carry, or arithmetic sized to stall the loop, fails that call alone."""

from __future__ import annotations

import asyncio

from core_support import FuncAgent, new_thread, new_user, registry_with, run_to_end

from tenet import Agent, RunContext, ScriptedModel, Service, tool
from tenet.examples.assistant import evaluate


def _completed(events: list[dict]) -> list[dict]:
    return [e for e in events if e["type"] == "tool_completed"]


async def test_an_exponent_tower_is_refused_before_it_is_computed(make_settings) -> None:
    async with Service(make_settings()) as svc:
        user = await new_user(svc)
        run, events = await run_to_end(
            svc,
            user,
            await new_thread(svc, user),
            "assistant",
            "use calculator expression=(((9**99)**99)**99)**10",
            timeout=10,
        )
    (done,) = _completed(events)
    assert done["ok"] is False
    assert done["error"]["code"] == "tool_error"
    assert "too large" in done["error"]["message"]
    assert run.status == "completed" and events[-1]["type"] == "agent_completed"


def test_calculator_answers_stay_within_their_bounds() -> None:
    assert evaluate("(2 + 3) * 4") == 20
    assert evaluate("2**62 * 2 - 1") == 2**63 - 1
    # Wider than 64 bits: a float the wire can carry, never an int it can't.
    assert evaluate("9**99") == float(9**99)
    for worst in ("(((9**99)**99)**99)**10", "99999**100", "1e308 * 10", "2.0**99 ** 9"):
        try:
            evaluate(worst)
        except ValueError as exc:
            assert "too large" in str(exc)
        else:  # pragma: no cover - the assertion is the point
            raise AssertionError(f"{worst} was computed")


async def test_a_result_the_wire_cant_carry_fails_the_tool_not_the_writer(make_settings) -> None:
    @tool
    async def huge() -> int:
        """An integer wider than 64 bits."""
        return 2**70

    @tool
    async def nested() -> dict:
        """An integer wider than 64 bits, deep inside."""
        return {"rows": [{"n": -(2**64)}]}

    wide = Agent(name="wide", model=ScriptedModel(fallback_tool="huge"), tools=[huge])
    odd = Agent(name="odd", model=ScriptedModel(fallback_tool="nested"), tools=[nested])
    settings = make_settings()
    async with Service(settings, registry_with(settings, wide, odd)) as svc:
        hostile, other = await new_user(svc), await new_user(svc)
        # Both users' events go through the one writer at the same time.
        results = await asyncio.gather(
            run_to_end(svc, hostile, await new_thread(svc, hostile), "wide", "go"),
            run_to_end(svc, hostile, await new_thread(svc, hostile), "odd", "go"),
            run_to_end(svc, other, await new_thread(svc, other), "assistant", "2 + 2"),
        )
    for (run, events), name in zip(results[:2], ("huge", "nested"), strict=True):
        (done,) = _completed(events)
        assert done["ok"] is False and done["tool_name"] == name
        assert done["error"]["code"] == "unserializable"
        assert run.status == "completed", run
    run, events = results[2]
    assert run.status == "completed" and _completed(events)[0]["results"] == 4


async def test_an_uncarriable_event_field_fails_that_run_only(make_settings) -> None:
    @tool
    async def echo(value: int) -> str:
        """Echo."""
        return "never reached"

    async def flow(ctx: RunContext, input: str) -> str:
        return await ctx.call_tool("echo", value=2**80)

    settings = make_settings()
    agent = FuncAgent("wide_args", flow, tools=[echo])
    async with Service(settings, registry_with(settings, agent)) as svc:
        user = await new_user(svc)
        run, events = await run_to_end(svc, user, await new_thread(svc, user), "wide_args", "x")
        again, _ = await run_to_end(svc, user, await new_thread(svc, user), "assistant", "1+1")
    assert run.status == "failed"
    assert events[-1]["type"] == "agent_error"
    assert events[-1]["error"]["code"] == "unserializable"
    assert again.status == "completed"
