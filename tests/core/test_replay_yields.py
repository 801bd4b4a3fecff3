"""A long replay hands the event loop back between slices of a page, so a client that
resubscribes to a thread of large events never holds everyone else's work for a page."""

from __future__ import annotations

import asyncio

from core_support import new_thread, new_user, run_to_end

from tenet import Service
from tenet.bus.follow import PAGE, ThreadCursor


async def test_a_replay_page_is_handed_on_in_slices(make_settings) -> None:
    async with Service(make_settings()) as svc:
        user = await new_user(svc)
        thread = await new_thread(svc, user)
        await run_to_end(svc, user, thread, "benchmark", "events=300")
        ticks = 0

        async def other_user() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0)

        ticker = asyncio.create_task(other_user())
        try:
            await asyncio.sleep(0)
            seen: list[int] = []
            async for _body in ThreadCursor(svc.store, user, thread, 0).replay():
                seen.append(ticks)
        finally:
            ticker.cancel()
    assert len(seen) == 300 < PAGE  # one page: no store read between these bodies
    # The other task ran between the first and the last body of the page, several times.
    assert seen[-1] - seen[0] >= 3, seen[::50]
