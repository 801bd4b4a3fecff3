"""(user, AG-UI threadId) -> one thread of that user, made on first use; SQLite and Postgres."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from tenet.store.ag_ui_threads import AgUiThreads
from tenet.store.db import Store
from tenet.store.migrate import upgrade


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[Store]:
    store = Store(database_url)
    await upgrade(store.engine)
    try:
        yield store
    finally:
        await store.close()


async def test_concurrent_first_uses_of_one_thread_id_make_one_thread(store: Store) -> None:
    user, _ = await store.create_user("ann")
    # Separate mappers, as separate requests or processes have: each tries to insert.
    got = await asyncio.gather(*(AgUiThreads(store).thread_for(user.id, "t") for _ in range(12)))
    assert len(set(got)) == 1
    threads = await store.list_threads(user.id)
    assert [t.id for t in threads] == [got[0]]  # the losers' threads are gone


async def test_one_thread_id_names_a_thread_of_each_user(store: Store) -> None:
    ann, _ = await store.create_user("ann")
    bob, _ = await store.create_user("bob")
    mine = await AgUiThreads(store).thread_for(ann.id, "shared")
    theirs = await AgUiThreads(store).thread_for(bob.id, "shared")
    assert mine != theirs
    assert await AgUiThreads(store).find(ann.id, "shared") == mine
    assert (await store.get_thread(bob.id, theirs)).user_id == bob.id
