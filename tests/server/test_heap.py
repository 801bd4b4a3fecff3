"""A served process's start-up heap is kept out of full garbage collections.

Each full collection walks every object the collector tracks, with the event
loop stopped for every user; in a served process most of them are the start-up
heap (see :mod:`tenet.heap`). The timing is the hostile bench's to show; this
test holds the mechanism: ``tenet serve`` freezes what it holds once started,
and a server started inside another program (tests, an embedding app) does not
freeze that program's objects.
"""

from __future__ import annotations

import gc
import re

import httpx

from tenet.bench.procs import ServerProcess
from tenet.settings import Settings
from tenet.testing import running_server

ADMIN = "admin-" + "H3p" * 12


def _frozen(metrics: str) -> float:
    found = re.search(r"^tenet_gc_frozen_objects (\S+)$", metrics, re.M)
    assert found, "tenet_gc_frozen_objects is not exported"
    return float(found.group(1))


def test_tenet_serve_freezes_its_start_up_heap() -> None:
    """fails: nothing was frozen, every full collection walked the whole start-up heap."""
    with ServerProcess("tenet", admin_token=ADMIN) as server:
        headers = {"Authorization": f"Bearer {ADMIN}"}
        frozen = 0.0
        for _ in range(50):  # the freeze follows the first request by at most a loop turn
            frozen = _frozen(httpx.get(server.url + "/metrics", headers=headers).text)
            if frozen:
                break
        # The libraries, the app and the agents: well over 50,000 objects in any build.
        assert frozen > 50_000, frozen


async def test_a_server_inside_another_program_freezes_nothing_of_it(tmp_path) -> None:
    before = gc.get_freeze_count()
    settings = Settings(
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'heap.db'}", admin_token=ADMIN
    )
    async with running_server(settings) as server:
        async with httpx.AsyncClient(base_url=server.url) as c:
            r = await c.get("/metrics", headers={"Authorization": f"Bearer {ADMIN}"})
            assert _frozen(r.text) == before
    assert gc.get_freeze_count() == before
