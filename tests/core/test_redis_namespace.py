"""Deployments sharing a Redis server never see each other's traffic."""

from __future__ import annotations

import asyncio
import os

import orjson
import pytest

from tenet import Settings
from tenet.bus.namespace import derived_prefix, redis_prefix
from tenet.bus.redis import RedisBus
from tenet.events import Event
from tenet.ids import new_id

REDIS_URL = os.environ.get("TENET_TEST_REDIS_URL")
needs_redis = pytest.mark.skipif(
    not REDIS_URL, reason="set TENET_TEST_REDIS_URL to run the Redis tests"
)

PG_A = "postgresql+asyncpg://app:secret@db.example:5432/deployment_a"
PG_B = "postgresql+asyncpg://app:secret@db.example:5432/deployment_b"


def test_the_prefix_comes_from_the_database_and_the_setting_wins() -> None:
    assert derived_prefix(PG_A) != derived_prefix(PG_B)
    # The password is left out: rotating it keeps the deployment in one namespace.
    assert derived_prefix(PG_A) == derived_prefix(PG_A.replace("secret", "rotated"))
    assert redis_prefix(Settings(database_url=PG_A)) == derived_prefix(PG_A)
    assert redis_prefix(Settings(database_url=PG_A, redis_prefix="prod:")) == "prod:"


def _event(thread_id: str) -> Event:
    data = {"type": "agent_thinking", "user_id": new_id("usr"), "thread_id": thread_id}
    data.update(run_id=new_id("run"), seq=1)
    return Event(
        data=data,
        user_id=data["user_id"],
        thread_id=thread_id,
        run_id=data["run_id"],
        seq=1,
        json=orjson.dumps(data).decode(),
    )


@needs_redis
async def test_two_deployments_on_one_redis_share_no_event_nor_signal() -> None:
    assert REDIS_URL
    prefix_a, prefix_b = derived_prefix(PG_A), derived_prefix(PG_B)
    # Even a glob character in a prefix is taken literally.
    a = RedisBus(REDIS_URL, prefix=prefix_a + "[x]*")
    b = RedisBus(REDIS_URL, prefix=prefix_b)
    b_peer = RedisBus(REDIS_URL, prefix=prefix_b)  # another process of deployment B
    got_a: list[str] = []
    got_b: list[str] = []
    a.on_signal("wake", got_a.append)
    b.on_signal("wake", got_b.append)
    for bus in (a, b, b_peer):
        await bus.start()
        assert bus.connected.is_set()
    try:
        thread = new_id("thr")
        sub_b = b.subscribe(thread)
        sub_a = a.subscribe(thread)
        a.publish(thread, _event(thread))
        a.signal("wake", "from-a")
        async with asyncio.timeout(10):
            while "from-a" not in got_a or len(sub_a) == 0:
                await asyncio.sleep(0.01)  # A's traffic has gone through Redis
            # B's own traffic, sent after A's: B reads its channels in order, so A's
            # would have come first.
            b_peer.publish(thread, _event(thread))
            b_peer.signal("wake", "from-b")
            while "from-b" not in got_b or len(sub_b) == 0:
                await asyncio.sleep(0.01)
        assert got_b == ["from-b"] and got_a == ["from-a"]
        assert len(sub_b) == 1 and len(sub_a) == 1
    finally:
        for bus in (a, b, b_peer):
            await bus.close()


@pytest.mark.parametrize(
    ("prefix", "escaped"),
    [("p*", "p\\*"), ("p?", "p\\?"), ("[ab]", "\\[ab\\]"), ("p\\", "p\\\\")],
)
def test_glob_characters_in_a_prefix_are_literal(prefix: str, escaped: str) -> None:
    from tenet.bus.namespace import glob_escape

    assert glob_escape(prefix) == escaped
