"""A thread's order: the next read of a thread takes its older turns in one go, and is
still exactly what a read of the store alone builds.

After a read, a process keeps the thread's newest turns as that read took them
(``tenet.conversation.ThreadOrder``). The next read asks the store only for the
marks at and above the order's newest turn; once the store has returned that
turn's mark for the same user and thread, the rest comes from the order. These
tests hold it to two things: the read costs rows for what is new, not for the
whole history, and whatever the process has kept or let go of, at any budget and
any estimate, it returns what a process that has kept nothing returns.
"""

from __future__ import annotations

import asyncio
import random
from pathlib import Path
from typing import Any

import orjson

from tenet import Service, Settings
from tenet import conversation as conversation_module
from tenet.conversation import Conversations

#: A run after every run of these tests (its own events are never part of its history).
LATER = "run_" + "z" * 26


async def turn(service: Service, user_id: str, thread_id: str, text: str) -> dict[str, Any]:
    """One run of the scripted ``assistant`` to its end; its terminal event."""
    run = await service.engine.submit(user_id, thread_id, "assistant", text)
    await asyncio.wait_for(service.engine.wait(run.id), 30)
    bodies = await service.store.list_events(user_id, thread_id, limit=100_000)
    return [e for e in map(orjson.loads, bodies) if e["run_id"] == run.id][-1]


def cold(conversations: Conversations) -> Conversations:
    """A reader over the same store and estimate that has built and kept nothing."""
    return Conversations(
        conversations.store,
        context_tokens=conversations.context_tokens,
        tool_result_max_chars=conversations.tool_result_max_chars,
        estimator=conversations.estimator,
    )


def rows_returned(monkeypatch: Any) -> list[int]:
    """The number of rows each history read's store call returns, from now on."""
    returned: list[int] = []
    real = conversation_module.turn_events_before

    async def counting(*args: Any, **kwargs: Any) -> list[Any]:
        rows = await real(*args, **kwargs)
        returned.append(len(rows))
        return rows

    monkeypatch.setattr(conversation_module, "turn_events_before", counting)
    return returned


async def test_a_read_along_the_order_reads_the_marks_of_what_is_new_only(
    tmp_path: Path, monkeypatch: Any
) -> None:
    """On a 30-turn thread, the next run's history read is given the previous run's
    marks and the order's newest one: a handful of rows, not the whole history's."""
    returned = rows_returned(monkeypatch)
    settings = Settings(database_url=f"sqlite+aiosqlite:///{tmp_path / 'tenet.db'}")
    async with Service(settings) as service:
        user, _ = await service.store.create_user("long-talker")
        thread = await service.store.create_thread(user.id)
        for i in range(30):
            await turn(service, user.id, thread.id, f"what is {i}+1?")
        conversations = service.engine.conversations
        returned.clear()
        warm = await conversations.turns(user.id, thread.id, LATER)
        rows_read = sum(returned)
        whole = await cold(conversations).turns(user.id, thread.id, LATER)
    assert len(warm) == 30 and warm == whole
    # The previous run's marks (its start, call, result and end) and the order's newest:
    # a read of every mark would return 4 per turn, 120.
    assert rows_read <= 5, returned


async def test_a_read_along_the_order_is_what_a_read_of_the_store_alone_builds(
    tmp_path: Path,
) -> None:
    """Runs with tool calls, long inputs and plain answers; between them, turns a process
    never built (run elsewhere), kept turns and orders let go, the estimate moved; reads
    at budgets from a few tokens to all of it. Every read equals a cold reader's."""
    rng = random.Random(7)
    settings = Settings(
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'tenet.db'}", context_tokens=600
    )
    async with Service(settings) as service:
        conversations = service.engine.conversations
        kept = conversations.turns_kept
        user, _ = await service.store.create_user("talker")
        stranger, _ = await service.store.create_user("stranger")
        thread = await service.store.create_thread(user.id)
        inputs = [
            lambda i: f"what is {i}*3?",
            lambda i: f"hello number {i}, " + "and so on " * rng.randrange(1, 60),
            lambda i: f"remember that {i} is lucky",
            lambda i: "what did I say first?",
        ]
        checked = 0
        for i in range(60):
            end = await turn(service, user.id, thread.id, rng.choice(inputs)(i))
            assert end["type"] == "agent_completed", end
            roll = rng.random()
            if roll < 0.15:  # a turn this process never built: it ran in another one
                kept.entries.pop((user.id, end["run_id"]), None)
            elif roll < 0.22:
                kept.entries.clear()
                kept.size = 0
            elif roll < 0.27:
                kept.orders.clear()
                kept.orders_size = 0
            if rng.random() < 0.1:
                conversations.estimator.chars_per_token = rng.choice((2.5, 3.5, 4.0))
            for budget in (rng.randrange(5, 200), rng.randrange(200, 600), None):
                warm = await conversations.turns(user.id, thread.id, LATER, budget=budget)
                whole = await cold(conversations).turns(user.id, thread.id, LATER, budget=budget)
                assert warm == whole, (i, budget)
                checked += 1
            assert await conversations.turns(stranger.id, thread.id, LATER) == []
        assert checked == 180 and kept.orders  # the orders were in use
        # A deleted thread's order is never used: its newest mark is gone from the store.
        await service.store.delete_thread(user.id, thread.id)
        assert (user.id, thread.id) in kept.orders
        assert await conversations.turns(user.id, thread.id, LATER) == []


async def test_what_is_kept_stays_within_the_history_cache_setting(tmp_path: Path) -> None:
    """``TENET_HISTORY_CACHE_BYTES`` bounds what a process keeps of conversations (half for
    turns, half for orders), however many threads run; reads stay what the store builds."""
    limit = 512 * 1024
    settings = Settings(
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'tenet.db'}", history_cache_bytes=limit
    )
    async with Service(settings) as service:
        conversations = service.engine.conversations
        kept = conversations.turns_kept
        user, _ = await service.store.create_user("many-threads")
        threads = [(await service.store.create_thread(user.id)).id for _ in range(40)]
        for i in range(12):
            for thread_id in threads:
                await turn(service, user.id, thread_id, f"hello {i}, " + "more words " * 20)
                assert kept.size <= limit // 2 and kept.orders_size <= limit // 2
        # Something was kept, and the bound let some go: it was reached.
        assert 0 < len(kept.orders) < len(threads) and 0 < len(kept.entries) < 11 * len(threads)
        for thread_id in threads:
            warm = await conversations.turns(user.id, thread_id, LATER)
            assert len(warm) == 12
            assert warm == await cold(conversations).turns(user.id, thread_id, LATER)
