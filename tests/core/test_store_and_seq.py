"""The store: gap-free per-thread seq, the unique (thread_id, seq), owner scoping, batching.

Every test here runs on SQLite, and again on Postgres when TENET_TEST_POSTGRES_URL is set.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest
from core_support import new_thread, new_user, run_to_end, thread_events
from protocol_checks import assert_run_well_formed, assert_seq_gap_free, split_runs
from sqlalchemy import insert
from sqlalchemy.exc import IntegrityError

from tenet import Service, Settings
from tenet.bus import MemoryBus
from tenet.clock import format_time, utc_now
from tenet.context import RunContext
from tenet.errors import NotFound
from tenet.events import RunEnd, make_event
from tenet.ids import new_id
from tenet.runtime import RunRuntime
from tenet.store import units
from tenet.store.db import Store
from tenet.store.migrate import upgrade
from tenet.store.sqlite_direct import DirectSqlite
from tenet.store.tables import EventRow
from tenet.store.writer import ROOM_GRANT, EventWriter


@pytest.fixture
async def svc(database_url: str):
    async with Service(Settings(database_url=database_url)) as s:
        yield s


async def test_seq_is_gap_free_across_runs_of_one_thread(svc: Service) -> None:
    user = await new_user(svc)
    thread = await new_thread(svc, user)
    inputs = ["what is 6 * 7?", "remember that x is 1", "go", "what time is it?", "hello"]
    agents = ["assistant", "assistant", "benchmark", "assistant", "researcher"]
    runs = [
        await svc.engine.submit(user, thread, a, i) for a, i in zip(agents, inputs, strict=True)
    ]
    for run in runs:
        await asyncio.wait_for(svc.engine.wait(run.id), 20)
    events = await thread_events(svc, user, thread)
    assert_seq_gap_free(events)
    assert await svc.store.last_seq(user, thread) == len(events)
    grouped = split_runs(events)
    assert list(grouped) == [r.id for r in runs]
    for run_events in grouped.values():
        assert_run_well_formed(run_events)
    # a paged read resumes exactly after the given seq
    tail = await svc.store.list_events(user, thread, after=10, limit=5)
    assert len(tail) == 5 and all('"seq":' in b for b in tail)
    assert [e["seq"] for e in events[10:15]] == [11, 12, 13, 14, 15]


async def test_seq_is_gap_free_per_thread_under_concurrency(svc: Service) -> None:
    user = await new_user(svc)
    threads = [await new_thread(svc, user) for _ in range(4)]
    runs = [
        await svc.engine.submit(user, t, "benchmark", "events=12")
        for _ in range(3)
        for t in threads
    ]
    await asyncio.wait_for(asyncio.gather(*(svc.engine.wait(r.id) for r in runs)), 30)
    for t in threads:
        events = await thread_events(svc, user, t)
        assert len(events) == 36
        assert_seq_gap_free(events)


async def test_a_run_reads_running_once_its_first_event_is_stored(svc: Service) -> None:
    """A run's start is stored with its first event, in one transaction: while that event
    waits to be stored the run still reads ``queued`` (a run found ``running`` has made an
    event), and its ``started_at`` is the moment that event was made."""
    user = await new_user(svc)
    thread = await new_thread(svc, user)
    held, gate = asyncio.Event(), asyncio.Event()
    store_events = svc.writer._store_events

    async def stalled(events: list[Any]) -> None:
        if any(e.type == "agent_started" for e in events):
            held.set()
            await gate.wait()
        await store_events(events)

    svc.writer._store_events = stalled  # type: ignore[method-assign]
    run = await svc.engine.submit(user, thread, "benchmark", "events=6")
    try:
        await asyncio.wait_for(held.wait(), 10)
        assert (await svc.store.get_run(user, run.id)).status == "queued"
    finally:
        gate.set()
    await asyncio.wait_for(svc.engine.wait(run.id), 20)
    stored = await svc.store.get_run(user, run.id)
    events = await thread_events(svc, user, thread)
    assert stored.status == "completed" and events[0]["type"] == "agent_started"
    assert format_time(stored.started_at) == events[0]["timestamp"]
    assert stored.worker_id == svc.engine.worker_id


async def test_store_rejects_a_duplicate_thread_seq(svc: Service) -> None:
    user = await new_user(svc)
    thread = await new_thread(svc, user)

    def row(seq: int) -> dict:
        return {
            "id": new_id("evt"),
            "user_id": user,
            "thread_id": thread,
            "run_id": new_id("run"),
            "seq": seq,
            "type": "agent_started",
            "created_at": utc_now(),
            "body": "{}",
        }

    async with svc.store.write() as s:
        await s.execute(insert(EventRow), [row(1), row(2)])
    with pytest.raises(IntegrityError):
        async with svc.store.write() as s:
            await s.execute(insert(EventRow), [row(2)])
    # the same seq in another thread is fine
    other = await new_thread(svc, user)
    async with svc.store.write() as s:
        await s.execute(insert(EventRow), [{**row(1), "thread_id": other}])


async def test_a_threads_last_seq_reads_one_row_however_long_the_thread(
    sqlite_url: str,
) -> None:
    """Every subscription and AG-UI run asks for it: its cost does not grow with the thread.

    fails: it was read through the ORM's connection, filtered by user over every row of
    the thread (the steps on the hot path's connection: none)."""
    async with Service(Settings(database_url=sqlite_url)) as svc:
        user = await new_user(svc)
        short, long = await new_thread(svc, user), await new_thread(svc, user)
        run_id = new_id("run")
        rows = [
            {
                "id": new_id("evt"),
                "user_id": user,
                "thread_id": thread,
                "run_id": run_id,
                "seq": seq,
                "type": "agent_thinking",
                "created_at": utc_now(),
                "body": "{}",
            }
            for thread, size in ((short, 3), (long, 5000))
            for seq in range(1, size + 1)
        ]
        async with svc.store.write() as s:
            await s.execute(insert(EventRow), rows)
        executor = svc.store.executor
        assert isinstance(executor, DirectSqlite)
        conn = executor._connection()
        steps = 0

        def step() -> int:
            nonlocal steps
            steps += 1
            return 0

        counted: dict[str, int] = {}
        for name, thread in (("short", short), ("long", long)):
            steps = 0
            conn.set_progress_handler(step, 1)
            assert await svc.store.last_seq(user, thread) == (3 if name == "short" else 5000)
            conn.set_progress_handler(None, 1)
            counted[name] = steps
        other = await new_user(svc)
        assert await svc.store.last_seq(other, long) == 0  # another user's thread: nothing
    assert counted["short"] > 0, counted
    assert counted["long"] <= counted["short"] + 10, counted


async def test_a_thread_deleted_unless_used_stays_once_a_run_is_on_it(svc: Service) -> None:
    """What removes a thread made for a refused run: a thread someone's run is on stays.

    fails: the removal took the thread whatever was on it, and the run with it."""
    alice = await new_user(svc)
    empty, used = await new_thread(svc, alice), await new_thread(svc, alice)
    run = await svc.store.create_run(alice, used, "assistant", "hi")
    assert await svc.store.delete_thread(alice, used, unless_used=True) is False
    assert (await svc.store.get_run(alice, run.id)).thread_id == used
    assert await svc.store.delete_thread(alice, empty, unless_used=True) is True
    with pytest.raises(NotFound):
        await svc.store.get_thread(alice, empty)
    bob = await new_user(svc)
    with pytest.raises(NotFound):  # another user's thread, used or not, is not found
        await svc.store.delete_thread(bob, used, unless_used=True)


async def test_foreign_rows_are_not_found(svc: Service) -> None:
    alice = await new_user(svc, "alice")
    bob = await new_user(svc, "bob")
    thread = await new_thread(svc, alice)
    run, _ = await run_to_end(svc, alice, thread, "assistant", "remember that alice-secret-77")
    assert run.status == "completed"

    with pytest.raises(NotFound):
        await svc.store.get_thread(bob, thread)
    with pytest.raises(NotFound):
        await svc.store.get_run(bob, run.id)
    with pytest.raises(NotFound):
        await svc.store.list_events(bob, thread)
    with pytest.raises(NotFound):
        await svc.store.list_messages(bob, thread)
    with pytest.raises(NotFound):
        await svc.store.create_run(bob, thread, "assistant", "hi")
    with pytest.raises(NotFound):
        await svc.store.delete_thread(bob, thread)
    with pytest.raises(NotFound):
        await svc.engine.submit(bob, thread, "assistant", "hi")
    with pytest.raises(NotFound):
        await svc.engine.cancel(bob, run.id)
    # a missing id answers exactly the same way
    with pytest.raises(NotFound):
        await svc.store.get_thread(bob, new_id("thr"))
    assert await svc.store.list_threads(bob) == []
    assert await svc.store.last_seq(bob, thread) == 0
    # the owner filter holds even where the caller skips the ownership check
    assert await svc.store.list_events(bob, thread, check_owner=False) == []
    assert await svc.store.list_notes(bob, query="alice-secret-77") == []
    # writes by the wrong owner change nothing
    await svc.store.update_run(bob, run.id, status="running")
    await svc.store.finish_run(bob, run.id, status="failed")
    assert (await svc.store.get_run(alice, run.id)).status == "completed"
    assert [t.id for t in await svc.store.list_threads(alice)] == [thread]
    assert len(await svc.store.list_messages(alice, thread)) == 2
    assert await svc.store.list_notes(alice, query="alice-secret-77")


async def test_writer_batches_events_of_concurrent_runs(svc: Service) -> None:
    users = [await new_user(svc) for _ in range(4)]
    threads = [(u, await new_thread(svc, u)) for u in users for _ in range(5)]
    before_batches, before_events = svc.writer.batches, svc.writer.events_written
    runs = [await svc.engine.submit(u, t, "benchmark", "go") for u, t in threads]
    await asyncio.wait_for(asyncio.gather(*(svc.engine.wait(r.id) for r in runs)), 30)
    events = svc.writer.events_written - before_events
    batches = svc.writer.batches - before_batches
    assert events == 25 * len(runs)
    assert batches < events / 2, f"{batches} batches for {events} events: not batching"


async def test_a_failing_thread_does_not_fail_others_in_the_same_batch(database_url: str) -> None:
    store = Store(database_url)
    try:
        await upgrade(store.engine)
        bus = MemoryBus()
        user, _ = await store.create_user("writer-user")
        good = (await store.create_thread(user.id)).id
        gone = (await store.create_thread(user.id)).id
        await store.delete_thread(user.id, gone)
        sub = bus.subscribe(good)
        bad_sub = bus.subscribe(gone)

        def ctx(thread_id: str) -> RunContext:
            return RunContext(
                user_id=user.id,
                thread_id=thread_id,
                run_id=new_id("run"),
                execution_id=new_id("exe"),
                agent_name="x",
            )

        good_ctx, bad_ctx = ctx(good), ctx(gone)
        writer = EventWriter(store, bus)
        events = []
        for i in range(6):
            c = good_ctx if i % 2 == 0 else bad_ctx
            events.append(make_event(c, "agent_thinking", {"reasoning": str(i), "step": i}))
        # queued before the writer runs, so they are offered as one batch
        tasks = [asyncio.create_task(writer.write(e)) for e in events]
        await asyncio.sleep(0)
        writer.start()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        await writer.close()

        for i, r in enumerate(results):
            if i % 2 == 0:
                assert not isinstance(r, BaseException), r
            else:
                assert isinstance(r, Exception), "an event of a deleted thread must fail"
        assert [r.seq for r in results[::2]] == [1, 2, 3]
        stored = await store.list_events(user.id, good)
        assert len(stored) == 3
        assert [sub.get_nowait().seq for _ in range(3)] == [1, 2, 3]
        assert bad_sub.get_nowait() is None, "a failed event must never be published"
    finally:
        await store.close()


async def test_runs_wait_their_turn_when_the_store_falls_behind(
    make_settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Backpressure: while events cannot be stored, runs stop making them.

    Once the runs are well under way, three event batches take 0.2 s each to store
    while 100 runs of 100 events want to emit: the events waiting to be stored stay near ``event_backlog_max``
    (without the backlog bound, 100 and more), and once the store catches up
    every run finishes with all its events, numbered without a gap.
    """
    stalls = [0.2, 0.2, 0.2]
    insert_events = units.insert_events

    def slow_insert_events(rows: list[tuple[Any, ...]]) -> units.Steps:
        if stalls and any(row[4] >= 30 for row in rows):  # (id, user, thread, run, seq, ...)
            time.sleep(stalls.pop())
        return (yield from insert_events(rows))

    monkeypatch.setattr(units, "insert_events", slow_insert_events)
    settings = make_settings(
        event_backlog_max=32, max_runs=200, user_max_runs=100, user_max_runs_busy=100
    )
    async with Service(settings) as svc:
        user = await new_user(svc)
        threads = [await new_thread(svc, user) for _ in range(100)]
        runs = [await svc.engine.submit(user, t, "benchmark", "events=100") for t in threads]
        peak = 0
        done = asyncio.gather(*(svc.engine.wait(r.id) for r in runs))
        while not done.done():
            peak = max(peak, len(svc.writer._pending))
            await asyncio.sleep(0.002)
        await asyncio.wait_for(done, 60)
        for run, thread in zip(runs, threads, strict=True):
            events = await thread_events(svc, user, thread)
            assert len(events) == 100 and events[-1]["type"] == "agent_completed"
            assert_seq_gap_free(events)
            assert (await svc.store.get_run(user, run.id)).status == "completed"
    assert not stalls
    assert 32 <= peak <= 32 + 2 * ROOM_GRANT, f"{peak} events piled up behind a stalled store"


async def test_an_in_memory_database_stores_runs_events_and_ends_too() -> None:
    """An in-memory SQLite database takes the same path as a file (the executor's
    connection and the ORM's see one database), and leaves no file behind."""
    async with Service(Settings(database_url="sqlite+aiosqlite:///:memory:")) as svc:
        assert isinstance(svc.store.executor, DirectSqlite)
        scratch = Path(svc.store.executor.path).parent
        user = await new_user(svc)
        thread = await new_thread(svc, user)
        run, events = await run_to_end(svc, user, thread, "benchmark", "events=12")
        assert run.status == "completed" and run.output == events[-1]["final_response"]
        assert format_time(run.started_at) == events[0]["timestamp"]
        assert [e["seq"] for e in events] == list(range(1, 13))
        messages = await svc.store.list_messages(user, thread)
        assert [m.role for m in messages] == ["user", "assistant"]
        assert messages[-1].content == run.output
    assert not scratch.exists()


def _congested_runtime(store: Store) -> tuple[RunRuntime, RunContext]:
    """A run's runtime on a writer that holds its backlog and drains nothing (not started)."""
    writer = EventWriter(store, MemoryBus(), backlog_max=4)
    runtime = RunRuntime(
        sink=writer,
        store=store,
        registry=None,  # type: ignore[arg-type]  # emit uses none of these
        model=None,  # type: ignore[arg-type]
        session=None,  # type: ignore[arg-type]
        tool_timeout=1.0,
        max_steps=1,
        calls=None,  # type: ignore[arg-type]
    )
    ids = {k: new_id(k) for k in ("usr", "thr", "run")}
    ctx = RunContext.for_run(
        user_id=ids["usr"],
        thread_id=ids["thr"],
        run_id=ids["run"],
        agent_name="benchmark",
        runtime=runtime,
    )
    for i in range(4):
        writer.submit(make_event(ctx, "agent_thinking", {"reasoning": str(i), "step": i}))
    assert writer.congested
    return runtime, ctx


async def test_a_runs_first_event_never_waits_its_turn(sqlite_url: str) -> None:
    """While the writer is congested, a starting run's ``agent_started`` goes out at once
    (its user sees the run start); its next events wait their turn."""
    store = Store(sqlite_url)
    try:
        runtime, ctx = _congested_runtime(store)
        await asyncio.wait_for(runtime.emit(ctx, "agent_started", {"input": "", "depth": 0}), 1)
        second = asyncio.create_task(runtime.emit(ctx, "message_delta", {"text": "x"}))
        await asyncio.sleep(0.05)
        assert not second.done(), "the run's second event should wait for room"
        second.cancel()
    finally:
        await store.close()


async def test_a_runs_terminal_event_never_waits_its_turn(sqlite_url: str) -> None:
    """Once a run has decided its end, no wait stands between that and submitting its
    terminal event: a cancel or timeout landing in such a wait would leave the run ending
    without one (it is already ``completing``, so nothing else would write one)."""
    store = Store(sqlite_url)
    try:
        runtime, ctx = _congested_runtime(store)
        await runtime.emit(ctx, "agent_started", {"input": "", "depth": 0})
        end = RunEnd("completed", output="done")
        fields = {"status": "completed", "final_response": "done", "duration_ms": 1, "depth": 0}
        await asyncio.wait_for(runtime.emit(ctx, "agent_completed", fields, end=end), 1)
        assert runtime.emitted == 2
    finally:
        await store.close()
