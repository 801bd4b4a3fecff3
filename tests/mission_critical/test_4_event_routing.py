"""Category 4: every event is delivered exactly once to its own user, and to no one else."""

from __future__ import annotations

import asyncio
from collections import Counter

from mc_support import BOTH_AUTH, User


@BOTH_AUTH
async def test_every_event_delivered_exactly_once_to_its_owner_only(deploy) -> None:
    async with deploy() as d:
        users = await d.users(12)

        async def work(u: User) -> list[str]:
            ws = await u.socket()
            await u.run(ws, "benchmark", "events=30")
            thread_id = u.events[0]["thread_id"]
            await u.run(ws, "assistant", "what is 6 * 7?", thread_id)
            await u.run(ws, "researcher", "sqlite")
            await ws.close()
            return sorted({e["thread_id"] for e in u.events})

        threads = await asyncio.gather(*(work(u) for u in users))
        for u, own_threads in zip(users, threads, strict=True):
            stored = [e for t in own_threads for e in await u.stored(t)]
            received = Counter(e["event_id"] for e in u.events)
            assert set(received) == {e["event_id"] for e in stored}, (
                "all of the user's events, no other"
            )
            assert max(received.values()) == 1, "no event twice"
            for other in users:
                if other is not u:
                    assert not set(received) & {e["event_id"] for e in other.events}
        total_received = sum(len(u.events) for u in users)
        assert total_received == sum(len({e["event_id"] for e in u.events}) for u in users)
