"""Start-up recovery of runs a dead process left, and the memory bus and follow()."""

from __future__ import annotations

import asyncio

import orjson
import pytest
from core_support import new_thread, new_user, run_events, run_to_end
from protocol_checks import assert_run_well_formed, assert_seq_gap_free

from tenet import RunContext, Service, Settings
from tenet.bus import MemoryBus, Subscription, SubscriptionClosed, SubscriptionOverflow
from tenet.bus.follow import follow
from tenet.events import make_event
from tenet.ids import new_id

# Recovery -------------------------------------------------------------------------------------


async def test_runs_left_by_a_dead_process_are_settled_on_start(database_url: str) -> None:
    settings = Settings(database_url=database_url)
    async with Service(settings) as first:
        user = await new_user(first)
        thread_a = await new_thread(first, user)
        thread_b = await new_thread(first, user)
        thread_c = await new_thread(first, user)
        # What a killed process leaves behind: rows the engine never saw settle.
        running = await first.store.create_run(user, thread_a, "assistant", "what is 1 + 1?")
        await first.store.update_run(user, running.id, status="running", worker_id="dead:1")
        cancelling = await first.store.create_run(user, thread_b, "assistant", "hi")
        await first.store.update_run(user, cancelling.id, status="cancelling")
        queued = await first.store.create_run(user, thread_c, "assistant", "what is 6 * 7?")

    async with Service(settings) as second:
        await asyncio.wait_for(second.engine.wait(queued.id), 10)

        stored = await second.store.get_run(user, running.id)
        assert stored.status == "failed"
        assert stored.error["code"] == "interrupted" and stored.finished_at is not None
        events = await run_events(second, user, thread_a, running.id)
        assert [e["type"] for e in events] == ["agent_error"]
        assert events[0]["error"]["code"] == "interrupted" and events[0]["depth"] == 0
        assert events[0]["user_id"] == user
        assert_run_well_formed(events)

        stored = await second.store.get_run(user, cancelling.id)
        assert stored.status == "cancelled"
        events = await run_events(second, user, thread_b, cancelling.id)
        assert [e["type"] for e in events] == ["run_cancelled"]

        stored = await second.store.get_run(user, queued.id)
        assert stored.status == "completed" and "42" in stored.output
        events = await run_events(second, user, thread_c, queued.id)
        assert_run_well_formed(events)
        assert_seq_gap_free(events)

        # the recovered thread keeps numbering without a gap
        again, _ = await run_to_end(second, user, thread_a, "benchmark", "go")
        assert again.status == "completed"
        body = await second.store.list_events(user, thread_a)
        assert_seq_gap_free([orjson.loads(b) for b in body])


async def test_close_releases_waiters_and_leaves_unstarted_runs_for_the_next_start(
    make_settings,
) -> None:
    settings = make_settings()
    svc = await Service(settings).start()
    user = await new_user(svc)
    threads = [await new_thread(svc, user) for _ in range(3)]
    runs = [await svc.engine.submit(user, t, "benchmark", "latency_ms=50") for t in threads]
    runs.append(await svc.engine.submit(user, threads[0], "benchmark", "go"))  # queued
    await svc.close()  # before the run tasks took their first step
    await asyncio.wait_for(asyncio.gather(*(svc.engine.wait(r.id) for r in runs)), 2)

    async with Service(settings) as again:
        await asyncio.wait_for(asyncio.gather(*(again.engine.wait(r.id) for r in runs)), 10)
        for run in runs:
            stored = await again.store.get_run(user, run.id)
            events = await run_events(again, user, run.thread_id, run.id)
            assert_run_well_formed(events)
            assert stored.status in ("completed", "cancelled")
        for t in threads:
            body = await again.store.list_events(user, t)
            assert_seq_gap_free([orjson.loads(b) for b in body])


# MemoryBus --------------------------------------------------------------------------------------


def _event(thread_id: str, seq: int, user_id: str | None = None):
    ctx = RunContext(
        user_id=user_id or new_id("usr"),
        thread_id=thread_id,
        run_id=new_id("run"),
        execution_id=new_id("exe"),
        agent_name="a",
    )
    e = make_event(ctx, "message_delta", {"text": str(seq)})
    e.seq = seq
    e.data["seq"] = seq
    e.json = orjson.dumps(e.data).decode()
    return e


async def test_bus_routes_by_thread_only() -> None:
    bus = MemoryBus(queue_size=10)
    a, b = new_id("thr"), new_id("thr")
    sub_a = bus.subscribe(a)
    sub_b = bus.subscribe(b)
    bus.publish(a, _event(a, 1))
    bus.publish(a, _event(a, 2))
    bus.publish(b, _event(b, 1))
    assert [sub_a.get_nowait().seq, sub_a.get_nowait().seq] == [1, 2]
    assert sub_a.get_nowait() is None
    got = sub_b.get_nowait()
    assert got.thread_id == b and sub_b.get_nowait() is None
    with pytest.raises(ValueError):
        bus.publish(b, _event(a, 3))  # an event goes only on its own thread
    assert sub_b.get_nowait() is None
    bus.unsubscribe(a, sub_a)
    bus.publish(a, _event(a, 4))
    assert sub_a.get_nowait() is None
    assert bus.subscribed_threads == 1


async def test_subscription_after_filters_old_events() -> None:
    bus = MemoryBus()
    t = new_id("thr")
    sub = bus.subscribe(t, after=5)
    for seq in (4, 5, 6):
        bus.publish(t, _event(t, seq))
    assert sub.get_nowait().seq == 6 and sub.get_nowait() is None


async def test_overflow_is_reported_not_silently_dropped() -> None:
    sub = Subscription(maxsize=3)
    t = new_id("thr")
    sub.attach(t)
    waiter = asyncio.create_task(sub.get())
    await asyncio.sleep(0)
    sub.deliver(_event(t, 1))
    assert (await waiter).seq == 1
    for seq in range(2, 7):
        sub.deliver(_event(t, seq))
    assert sub.overflowed
    with pytest.raises(SubscriptionOverflow):
        await asyncio.wait_for(sub.get(), 1)
    with pytest.raises(SubscriptionOverflow):
        sub.get_nowait()
    # a reader blocked on an empty queue is woken by the overflow
    sub2 = Subscription(maxsize=1)
    sub2.attach(t)
    sub2.deliver(_event(t, 1))
    assert (await sub2.get()).seq == 1
    blocked = asyncio.create_task(sub2.get())
    await asyncio.sleep(0)
    sub2.deliver(_event(t, 2))
    sub2.deliver(_event(t, 3))
    # the queue overflowed before the reader ran: it is told, and resumes from the store
    with pytest.raises(SubscriptionOverflow):
        await asyncio.wait_for(blocked, 1)
    sub3 = Subscription()
    closing = asyncio.create_task(sub3.get())
    await asyncio.sleep(0)
    sub3.close()
    with pytest.raises(SubscriptionClosed):
        await closing


class CountingBus:
    """The service's bus, counting subscriptions (a second one means an overflow was handled)."""

    def __init__(self, bus) -> None:
        self.bus = bus
        self.subscribes = 0

    def subscribe(self, thread_id, after=0, *, into=None):
        self.subscribes += 1
        return self.bus.subscribe(thread_id, after, into=into)

    def unsubscribe(self, thread_id, sub) -> None:
        self.bus.unsubscribe(thread_id, sub)


@pytest.mark.parametrize("pause_at", [10, 25], ids=["during-replay", "during-live"])
async def test_follow_yields_stored_then_live_without_gap_or_duplicate(
    make_settings, pause_at: int
) -> None:
    async with Service(make_settings(ws_queue=2)) as svc:
        user = await new_user(svc)
        thread = await new_thread(svc, user)
        await run_to_end(svc, user, thread, "benchmark", "go")  # seq 1..25 stored

        bus = CountingBus(svc.bus)
        stream = follow(svc.store, bus, user, thread, after=0)
        seqs: list[int] = []
        bodies: list[dict] = []

        async def take(n: int) -> None:
            for _ in range(n):
                body = orjson.loads(await asyncio.wait_for(anext(stream), 5))
                bodies.append(body)
                seqs.append(body["seq"])

        await take(pause_at)
        # a second run publishes 25 events while the reader is not reading: its
        # 2-slot live queue overflows
        _run, _ = await run_to_end(svc, user, thread, "benchmark", "go")
        await take(50 - pause_at)
        # and a third run, read live as it happens
        third = await svc.engine.submit(user, thread, "benchmark", "events=6")
        await take(6)
        await svc.engine.wait(third.id)
        await stream.aclose()

        assert seqs == list(range(1, 57))
        assert bus.subscribes >= 2, "the overflow path was not exercised"
        assert all(b["user_id"] == user and b["thread_id"] == thread for b in bodies)
        assert svc.bus.subscribed_threads == 0, "follow() must unsubscribe when closed"


async def test_follow_after_resumes_exactly(service: Service) -> None:
    user = await new_user(service)
    thread = await new_thread(service, user)
    await run_to_end(service, user, thread, "benchmark", "go")
    stream = follow(service.store, service.bus, user, thread, after=20)
    got = [orjson.loads(await anext(stream))["seq"] for _ in range(5)]
    await stream.aclose()
    assert got == [21, 22, 23, 24, 25]
