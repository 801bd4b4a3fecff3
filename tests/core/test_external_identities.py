"""(issuer, subject) -> user: made once, on first use, never anyone else; SQLite and Postgres."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from tenet.store.db import Store
from tenet.store.identities import ExternalIdentities
from tenet.store.migrate import upgrade


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[Store]:
    store = Store(database_url)
    await upgrade(store.engine)
    try:
        yield store
    finally:
        await store.close()


async def test_concurrent_first_sign_ins_of_one_subject_make_one_user(store: Store) -> None:
    # Separate mappers, as separate processes would have: each inserts the new subject.
    users = await asyncio.gather(
        *(ExternalIdentities(store).user_for("https://idp", "sub-1", "Ann") for _ in range(12))
    )
    assert len({u.user_id for u in users}) == 1


async def test_the_same_subject_from_another_issuer_is_another_user(store: Store) -> None:
    ids = ExternalIdentities(store)
    one = await ids.user_for("https://one", "same", "S")
    two = await ids.user_for("https://two", "same", "S")
    assert one.user_id != two.user_id
    assert (await ids.user_for("https://one", "same", "S")).user_id == one.user_id


async def test_a_user_made_by_name_is_never_reached_by_a_subject(store: Store) -> None:
    named, _token = await store.create_user("carol")
    ids = ExternalIdentities(store)
    for subject in ("carol", named.id, named.name):
        assert (await ids.user_for("https://idp", subject, "carol")).user_id != named.id


async def test_the_display_name_is_kept_current(store: Store) -> None:
    ids = ExternalIdentities(store)
    first = await ids.user_for("https://idp", "dave", "Dave")
    renamed = await ids.user_for("https://idp", "dave", "David")
    assert renamed.user_id == first.user_id and renamed.name == "David"
    assert (await ExternalIdentities(store).user_for("https://idp", "dave", "David")).name == (
        "David"
    )
