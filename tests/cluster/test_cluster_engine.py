"""The cluster engine in-process: a run taken over by another process stops here, silently;
a heartbeat never waits on (or deadlocks with) the event writer."""

from __future__ import annotations

import asyncio
import os
from datetime import UTC, datetime

import orjson
import pytest
from sqlalchemy import select, update

from tenet import Agent, AgentRegistry, RunContext, Service, Settings
from tenet.errors import NotFound, RateLimited
from tenet.store.db import Store
from tenet.store.migrate import upgrade
from tenet.store.tables import Run


class Slow(Agent):
    async def run(self, ctx: RunContext, input: str) -> str:
        await ctx.think("working for a long time")
        await asyncio.sleep(60)
        return "done"


async def test_a_run_taken_over_by_another_process_stops_here_without_writing(
    postgres_url: str,
) -> None:
    redis_url = os.environ.get("TENET_TEST_REDIS_URL")
    if not redis_url:
        pytest.skip("set TENET_TEST_REDIS_URL to run the cluster tests")
    settings = Settings(database_url=postgres_url, redis_url=redis_url, heartbeat_s=0.1)
    async with Service(settings, AgentRegistry([Slow(name="slow")])) as service:
        user, _ = await service.store.create_user("slowpoke")
        thread = await service.store.create_thread(user.id)
        run = await service.engine.submit(user.id, thread.id, "slow", "x")
        for _ in range(100):
            if run.id in service.engine.runs and service.engine.runs[run.id].status == "running":
                break
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.3)  # a heartbeat or two while it still holds the run
        assert run.id in service.engine.runs

        # The cluster presumed this process dead and another one claimed the run.
        async with service.store.write() as s:
            await s.execute(update(Run).where(Run.id == run.id).values(worker_id="another:1:x"))
        for _ in range(100):
            if run.id not in service.engine.runs:
                break
            await asyncio.sleep(0.05)
        assert run.id not in service.engine.runs, "the run stopped executing here"

        stored = [orjson.loads(b) for b in await service.store.list_events(user.id, thread.id)]
        assert [e["type"] for e in stored] == ["agent_started", "agent_thinking"]
        taken = await service.store.get_run(user.id, run.id)
        assert (taken.status, taken.worker_id) == ("running", "another:1:x"), (
            "left to its new owner"
        )


async def test_a_heartbeat_never_waits_for_a_run_row_another_transaction_holds(
    postgres_url: str,
) -> None:
    """The event writer locks the runs it ends, in its batch's order, while a heartbeat
    updates all of its worker's runs: when each waited for the other, Postgres broke the
    deadlock after a second, and a second of events was late. A heartbeat skips a locked
    run (its writer is about to change it anyway) and still reports it held."""
    store = Store(postgres_url)
    try:
        await upgrade(store.engine)
        user, _ = await store.create_user("beating")
        thread = await store.create_thread(user.id)
        long_ago = datetime(2026, 1, 1, tzinfo=UTC)
        runs = [await store.create_run(user.id, thread.id, "slow", "x") for _ in range(2)]
        async with store.write() as s:
            await s.execute(
                update(Run)
                .where(Run.id.in_([r.id for r in runs]))
                .values(status="running", worker_id="w:1:a", heartbeat_at=long_ago)
            )
        locked, free = runs
        async with store.engine.connect() as writer:  # the event writer, mid-batch
            await writer.begin()
            await writer.execute(update(Run).where(Run.id == locked.id).values(output="ending"))
            held = await asyncio.wait_for(store.heartbeat("w:1:a"), 2.0)
            await writer.rollback()
        assert held == {locked.id, free.id}, "a locked run is still this worker's"
        assert (await store.get_run(user.id, free.id)).heartbeat_at > long_ago
        assert (await store.get_run(user.id, locked.id)).heartbeat_at == long_ago
    finally:
        await store.close()


async def test_the_queue_limit_counts_the_runs_queued_on_every_process(postgres_url: str) -> None:
    """A user's queued runs may have been accepted by any process: the limit is checked
    by the statement that stores the run, against the database, not this process's memory."""
    redis_url = os.environ.get("TENET_TEST_REDIS_URL")
    if not redis_url:
        pytest.skip("set TENET_TEST_REDIS_URL to run the cluster tests")
    settings = Settings(
        database_url=postgres_url, redis_url=redis_url, user_max_queued=2, user_max_runs=1
    )
    async with Service(settings, AgentRegistry([Slow(name="slow")])) as service:
        store, engine = service.store, service.engine
        user, _ = await store.create_user("queuer")
        thread = await store.create_thread(user.id)
        running = await engine.submit(user.id, thread.id, "slow", "x")
        for _ in range(100):
            if (await store.get_run(user.id, running.id)).status == "running":
                break
            await asyncio.sleep(0.02)
        # Accepted by another process: in the database only.
        await store.create_run(user.id, thread.id, "slow", "elsewhere")
        await engine.submit(user.id, thread.id, "slow", "second in the queue")
        with pytest.raises(RateLimited, match="at most 2"):
            await engine.submit(user.id, thread.id, "slow", "one too many")
        other = await store.create_thread(user.id)
        with pytest.raises(RateLimited):  # the limit is the user's, not the thread's
            await engine.submit(user.id, other.id, "slow", "one too many")
        foreign, _ = await store.create_user("stranger")
        with pytest.raises(NotFound):  # a foreign thread is still not found, full or not
            await engine.submit(foreign.id, thread.id, "slow", "x")
        async with store.read() as s:
            statuses = (await s.execute(select(Run.status).where(Run.user_id == user.id))).all()
        assert sorted(r[0] for r in statuses) == ["queued", "queued", "running"]
