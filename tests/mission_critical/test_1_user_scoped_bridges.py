"""Category 1: nothing that carries events is shared across users.

Each user gets a session of their own and each connection receives only the
events of its own user's runs, even when many users connect and run at once.
"""

from __future__ import annotations

import asyncio

from mc_support import BOTH_AUTH, User


@BOTH_AUTH
async def test_each_user_has_a_distinct_session_and_sees_only_own_events(deploy) -> None:
    async with deploy() as d:
        users = await d.users(10)
        sockets = await asyncio.gather(*(u.socket() for u in users))
        sessions = {u.user_id: d.service.sessions.peek(u.user_id) for u in users}
        assert all(s is not None for s in sessions.values())
        assert len({id(s) for s in sessions.values()}) == len(users)
        for u, s in sessions.items():
            assert s.user_id == u and len(s.connections) == 1

        async def work(u: User, ws) -> list[str]:
            return [await u.run(ws, "assistant", f"what is {i} + {len(u.name)}?") for i in range(3)]

        runs = dict(
            zip(
                [u.user_id for u in users],
                await asyncio.gather(*(work(u, ws) for u, ws in zip(users, sockets, strict=True))),
                strict=True,
            )
        )
        for u in users:
            assert u.events, "every user received its events"
            for e in u.events:
                assert e["user_id"] == u.user_id
                assert e["run_id"] in runs[u.user_id]
            executions = {e["execution_id"] for e in u.events}
            for other in users:
                if other is not u:
                    assert executions.isdisjoint({e["execution_id"] for e in other.events})
        for ws in sockets:
            await ws.close()
