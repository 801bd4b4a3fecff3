"""Each audit check is able to fail: inject the fault it looks for, see it reported.

The faults are injected into the real server in-process (a misrouting bus, a
repository query without its owner filter, a skipped ``seq``, a 403 that
reveals that a foreign id exists); the audit, which only speaks the public
protocol, must report each one under the right check.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from tenet.audit import IsolationAudit
from tenet.bus.memory import MemoryBus
from tenet.errors import NotFound, TenetError
from tenet.events import Event
from tenet.store import units
from tenet.store.db import Store
from tenet.store.tables import Thread


@pytest.fixture
def database_url(tmp_path: Path) -> str:  # these tests need one database only
    return f"sqlite+aiosqlite:///{tmp_path / 'faults.db'}"


async def audit(deploy, **settings: Any):
    async with deploy(**settings) as d:
        return await IsolationAudit(d.url, d.server.admin_token, users=4, runs=1, timeout_s=5).run()


async def test_a_clean_server_passes(deploy) -> None:
    report = await audit(deploy)
    assert report.ok, {n: c.violations for n, c in report.checks.items() if c.violations}


async def test_a_misrouting_bus_is_caught(deploy, monkeypatch: pytest.MonkeyPatch) -> None:
    original = MemoryBus.publish
    owners: dict[str, str] = {}
    done: list[bool] = []

    def misroute(self: MemoryBus, thread_id: str, event: Event) -> None:
        original(self, thread_id, event)
        owners[thread_id] = event.user_id
        if done:
            return
        victims = [t for t in self._subs if owners.get(t, event.user_id) != event.user_id]
        if victims:
            done.append(True)
            forged = Event(
                data=event.data,
                user_id=event.user_id,
                thread_id=victims[0],
                run_id=event.run_id,
                seq=10_000,
                json=event.json,
            )
            for sub in tuple(self._subs[victims[0]]):
                sub.deliver(forged)

    monkeypatch.setattr(MemoryBus, "publish", misroute)
    report = await audit(deploy)
    assert done, "the fault was injected"
    assert not report.checks["guard"].ok or not report.checks["routing"].ok


async def test_a_query_without_owner_filter_is_caught(
    deploy, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def unscoped_get_thread(self: Store, user_id: str, thread_id: str) -> Thread:
        async with self.read() as s:
            row = (
                await s.execute(select(Thread).where(Thread.id == thread_id))
            ).scalar_one_or_none()
        if row is None:
            raise NotFound()
        return row

    monkeypatch.setattr(Store, "get_thread", unscoped_get_thread)
    report = await audit(deploy)
    assert not report.checks["probes"].ok
    assert not report.checks["content"].ok  # the foreign thread's metadata holds its secret


async def test_a_skipped_seq_is_caught(deploy, monkeypatch: pytest.MonkeyPatch) -> None:
    skipped: list[str] = []

    def skip_first(found: dict[str, int]) -> dict[str, int]:
        if not skipped and found:
            first = next(iter(found))
            skipped.append(first)
            found[first] += 1
        return found

    original = units.max_seqs  # the store's writer numbers events from this

    def skipping(thread_ids: list[str]) -> units.Steps:
        return skip_first((yield from original(thread_ids)))

    monkeypatch.setattr(units, "max_seqs", skipping)
    report = await audit(deploy)
    assert skipped
    assert not report.checks["sequence"].ok


async def test_a_403_that_reveals_a_foreign_id_is_caught(
    deploy, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tenet.server import errors as server_errors

    class Forbidden(TenetError):
        code = "forbidden"
        status = 403

    original = Store.get_thread

    async def revealing(self: Store, user_id: str, thread_id: str) -> Thread:
        try:
            return await original(self, user_id, thread_id)
        except NotFound:
            async with self.read() as s:
                exists = await s.scalar(select(Thread.id).where(Thread.id == thread_id))
            if exists:
                raise Forbidden("this thread belongs to another user") from None
            raise

    monkeypatch.setitem(server_errors._CODE_OF_STATUS, 403, "forbidden")
    monkeypatch.setattr(Store, "get_thread", revealing)
    report = await audit(deploy)
    assert not report.checks["probes"].ok
    assert any("403" in v for v in report.checks["probes"].violations)
