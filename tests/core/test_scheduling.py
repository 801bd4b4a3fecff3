"""The engine's scheduling: one run per thread in order, per-user and global limits, queue bound."""

from __future__ import annotations

import asyncio
import itertools
import time

import pytest
from core_support import (
    Concurrency,
    FuncAgent,
    new_thread,
    new_user,
    registry_with,
    run_to_end,
    thread_events,
    wait_until,
)
from protocol_checks import assert_runs_serialized, assert_seq_gap_free

from tenet import RunContext, Service
from tenet.errors import Invalid, NotFound, RateLimited


def tracked_agent(tracker: Concurrency, *, sleep_s: float = 0.03, gate=None) -> FuncAgent:
    """An agent that records how many runs are inside it, per user and in all."""

    async def flow(ctx: RunContext, input: str) -> str:
        tracker.enter(ctx.user_id)
        try:
            if gate is not None:
                await gate.wait()
            await asyncio.sleep(sleep_s)
        finally:
            tracker.leave(ctx.user_id)
        return "ok"

    return FuncAgent("tracked", flow)


async def test_runs_of_one_thread_are_serialized_in_acceptance_order(make_settings) -> None:
    intervals: list[tuple[str, float, float]] = []

    async def flow(ctx: RunContext, input: str) -> str:
        start = time.monotonic()
        await asyncio.sleep(0.01)
        await ctx.think(input)
        await asyncio.sleep(0.01)
        intervals.append((ctx.run_id, start, time.monotonic()))
        return input

    settings = make_settings(bench_latency_ms=5, user_max_runs=4)
    async with Service(settings, registry_with(settings, FuncAgent("timed", flow))) as svc:
        user = await new_user(svc)
        thread = await new_thread(svc, user)
        runs = []
        for i in range(8):
            agent = "benchmark" if i % 2 else "timed"
            runs.append(await svc.engine.submit(user, thread, agent, f"n{i}"))
        await asyncio.wait_for(asyncio.gather(*(svc.engine.wait(r.id) for r in runs)), 20)

        events = await thread_events(svc, user, thread)
        assert_seq_gap_free(events)
        assert_runs_serialized(events, [r.id for r in runs])
        stored = [await svc.store.get_run(user, r.id) for r in runs]
        assert all(s.status == "completed" for s in stored)
        for prev, nxt in itertools.pairwise(stored):
            assert prev.finished_at <= nxt.started_at, "runs of one thread overlapped"
        assert [r for r, _, _ in intervals] == [r.id for r in runs[::2]]
        for (_, _, end), (_, start, _) in itertools.pairwise(intervals):
            assert end <= start


async def test_user_max_runs_is_honoured(make_settings) -> None:
    tracker = Concurrency()
    gate = asyncio.Event()
    settings = make_settings(user_max_runs=2, user_max_runs_busy=2, max_runs=100)
    registry = registry_with(settings, tracked_agent(tracker, sleep_s=0.01, gate=gate))
    async with Service(settings, registry) as svc:
        users = [await new_user(svc) for _ in range(2)]
        threads = [(u, await new_thread(svc, u)) for u in users for _ in range(6)]
        runs = [await svc.engine.submit(u, t, "tracked", "x") for u, t in threads]
        # both users reach their limit side by side, and no further
        await wait_until(lambda: tracker.now >= 4)
        await asyncio.sleep(0.1)
        assert tracker.per_user == {users[0]: 2, users[1]: 2}
        gate.set()
        await asyncio.wait_for(asyncio.gather(*(svc.engine.wait(r.id) for r in runs)), 20)
        assert tracker.peak_user == {users[0]: 2, users[1]: 2}
        assert tracker.peak == 4


async def test_global_max_runs_is_honoured(make_settings) -> None:
    tracker = Concurrency()
    gate = asyncio.Event()
    settings = make_settings(user_max_runs=4, max_runs=3)
    registry = registry_with(settings, tracked_agent(tracker, sleep_s=0.01, gate=gate))
    async with Service(settings, registry) as svc:
        users = [await new_user(svc) for _ in range(3)]
        threads = [(u, await new_thread(svc, u)) for u in users for _ in range(4)]
        runs = [await svc.engine.submit(u, t, "tracked", "x") for u, t in threads]
        await wait_until(lambda: tracker.now >= 3)
        await asyncio.sleep(0.1)
        assert tracker.now == 3 and svc.engine.running_count == 3
        gate.set()
        await asyncio.wait_for(asyncio.gather(*(svc.engine.wait(r.id) for r in runs)), 20)
        assert tracker.peak == 3
        assert svc.engine.running_count == 0


async def test_queue_bound_and_other_users_are_not_blocked(make_settings) -> None:
    tracker = Concurrency()
    gate = asyncio.Event()
    settings = make_settings(user_max_runs=1, user_max_queued=3)
    registry = registry_with(settings, tracked_agent(tracker, sleep_s=0, gate=gate))
    async with Service(settings, registry) as svc:
        hog = await new_user(svc, "hog")
        other = await new_user(svc, "other")
        hog_runs = [
            await svc.engine.submit(hog, await new_thread(svc, hog), "tracked", "x")
            for _ in range(4)
        ]  # one running, three queued
        await wait_until(lambda: tracker.per_user.get(hog) == 1)
        with pytest.raises(RateLimited) as info:
            await svc.engine.submit(hog, await new_thread(svc, hog), "tracked", "x")
        assert info.value.code == "rate_limited" and info.value.status == 429
        statuses = [(await svc.store.get_run(hog, r.id)).status for r in hog_runs]
        assert sorted(statuses) == ["queued", "queued", "queued", "running"]

        # another user runs to completion while the hog is at its limit
        run, _ = await run_to_end(
            svc, other, await new_thread(svc, other), "assistant", "what is 1 + 1?", timeout=5
        )
        assert run.status == "completed"
        assert tracker.per_user[hog] == 1

        gate.set()
        await asyncio.wait_for(asyncio.gather(*(svc.engine.wait(r.id) for r in hog_runs)), 10)
        assert tracker.peak_user[hog] == 1
        statuses = [(await svc.store.get_run(hog, r.id)).status for r in hog_runs]
        assert statuses == ["completed"] * 4
        # the queue has room again
        run, _ = await run_to_end(svc, hog, await new_thread(svc, hog), "tracked", "x")
        assert run.status == "completed"


async def test_refused_submits_do_not_use_up_the_queue(make_settings) -> None:
    settings = make_settings(user_max_queued=2)
    async with Service(settings) as svc:
        user = await new_user(svc)
        stranger = await new_user(svc)
        foreign = await new_thread(svc, stranger)
        for _ in range(5):
            with pytest.raises(NotFound):
                await svc.engine.submit(user, foreign, "assistant", "hi")
            with pytest.raises(Invalid):
                await svc.engine.submit(user, foreign, "no-such-agent", "hi")
        assert svc.sessions.get(user).queued == 0
        run, _ = await run_to_end(svc, user, await new_thread(svc, user), "benchmark", "go")
        assert run.status == "completed"
        assert await svc.store.list_threads(stranger) and not await svc.store.list_messages(
            stranger, foreign
        )


async def test_while_the_loop_is_busy_each_user_runs_one_run_at_a_time(make_settings) -> None:
    """The loop is shared by users: a user starting runs side by side gets no larger share."""
    tracker = Concurrency()
    gate = asyncio.Event()
    settings = make_settings(user_max_runs=4, user_max_runs_busy=1, max_runs=100, loop_busy_ms=30)
    registry = registry_with(settings, tracked_agent(tracker, sleep_s=0.01, gate=gate))
    async with Service(settings, registry) as svc:
        many, one = await new_user(svc, "many"), await new_user(svc, "one")
        threads = [(many, await new_thread(svc, many)) for _ in range(4)]
        threads.append((one, await new_thread(svc, one)))

        async def hog() -> None:  # a step holds the loop every 0.2 s: it stays busy
            while True:
                time.sleep(0.06)
                await asyncio.sleep(0.2)

        hogging = asyncio.create_task(hog())
        try:
            await wait_until(svc.loop_watch.busy)
            runs = [await svc.engine.submit(u, t, "tracked", "x") for u, t in threads]
            await wait_until(lambda: tracker.now >= 2)
            await asyncio.sleep(0.3)
            assert tracker.per_user == {many: 1, one: 1}
        finally:
            hogging.cancel()
        gate.set()
        await asyncio.wait_for(asyncio.gather(*(svc.engine.wait(r.id) for r in runs)), 20)
        stored = [await svc.store.get_run(u, r.id) for (u, _), r in zip(threads, runs, strict=True)]
        assert all(s.status == "completed" for s in stored)
