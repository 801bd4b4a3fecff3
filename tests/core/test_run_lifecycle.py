"""A run's lifecycle: its status is the stored and wire string, and follows the run in memory;
the engine's two queues implement one protocol, so the engine has no deployment subclass."""

from __future__ import annotations

import asyncio
import inspect

import orjson
from core_support import FuncAgent, new_thread, new_user, registry_with, wait_until

from tenet import RunContext, Service
from tenet.cluster import ClusterQueue
from tenet.engine import Engine
from tenet.local_queue import LocalQueue
from tenet.queue import RunQueue
from tenet.run_lifecycle import RunStatus


def test_run_statuses_are_the_strings_stored_and_sent() -> None:
    assert [s.value for s in RunStatus] == [
        "queued",
        "running",
        "requires_action",
        "cancelling",
        "completed",
        "failed",
        "cancelled",
    ]
    for status in RunStatus:
        assert status == status.value and str(status) == status.value
        assert orjson.dumps({"status": status}) == orjson.dumps({"status": status.value})
    assert {s for s in RunStatus if s.terminal} == {
        RunStatus.COMPLETED,
        RunStatus.FAILED,
        RunStatus.CANCELLED,
    }


def test_each_queue_implements_the_whole_queue_protocol_and_no_engine_subclass() -> None:
    members = {
        name: value
        for name, value in vars(RunQueue).items()
        if not name.startswith("_") and (callable(value) or isinstance(value, property))
    }
    assert {"start", "stop", "close", "accepted", "cancel", "pump"} <= set(members)
    for queue in (LocalQueue, ClusterQueue):
        assert not issubclass(queue, Engine)
        for name, spec in members.items():
            impl = getattr(queue, name, None)
            assert impl is not None, f"{queue.__name__} lacks {name}"
            if isinstance(spec, property):
                assert isinstance(impl, property), f"{queue.__name__}.{name} is not a property"
                continue
            expected = list(inspect.signature(spec).parameters)
            assert list(inspect.signature(impl).parameters) == expected, (
                f"{queue.__name__}.{name} takes other arguments than the protocol's"
            )
            assert inspect.iscoroutinefunction(impl) == inspect.iscoroutinefunction(spec), (
                f"{queue.__name__}.{name} is not awaited as the protocol says"
            )


async def test_a_runs_status_in_memory_follows_it_from_queued_to_gone(make_settings) -> None:
    gate = asyncio.Event()

    async def flow(ctx: RunContext, input: str) -> str:
        await ctx.think("waiting")
        await gate.wait()
        return "ok"

    settings = make_settings()
    async with Service(settings, registry_with(settings, FuncAgent("gated", flow))) as svc:
        engine = svc.engine
        user = await new_user(svc)
        thread = await new_thread(svc, user)
        first = await engine.submit(user, thread, "gated", "x")
        second = await engine.submit(user, thread, "gated", "y")  # waits behind the first
        await wait_until(
            lambda: (first.id in engine.runs) and engine.runs[first.id].task is not None
        )
        assert engine.runs[first.id].status is RunStatus.RUNNING
        assert engine.runs[second.id].status is RunStatus.QUEUED
        assert {k: engine.counts()[k] for k in ("queued", "running", "cancelling")} == {
            "queued": 1,
            "running": 1,
            "cancelling": 0,
        }
        cancelled = await engine.cancel(user, second.id)
        assert cancelled.status == RunStatus.CANCELLED and second.id not in engine.runs
        gate.set()
        await asyncio.wait_for(engine.wait(first.id), 10)
        assert first.id not in engine.runs
        stored = await svc.store.get_run(user, first.id)
        assert stored.status == RunStatus.COMPLETED
        assert engine.counts()["completed"] == 1 and engine.counts()["cancelled"] == 1
