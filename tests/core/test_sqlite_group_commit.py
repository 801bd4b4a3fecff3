"""The embedded store's direct path: calls that arrive together share one commit.

A call that fails fails alone: its group is rolled back and each call runs again
on its own, so the others commit and only the failing one's writes are gone. ORM
writes pause the direct path so that the two connections never wait on each
other's lock. Checkpoints run on a thread of their own, never in a commit on the
event loop, and the log starts over even while writes never stop.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
from pathlib import Path

import pytest

from tenet.store import sqlite_direct
from tenet.store.sqlite_direct import DirectSqlite


def _insert(conn: sqlite3.Connection, value: int) -> int:
    conn.execute("INSERT INTO t (v) VALUES (?)", (value,))
    return value


def _insert_then_fail(conn: sqlite3.Connection, value: int) -> int:
    conn.execute("INSERT INTO t (v) VALUES (?)", (value,))
    raise ValueError(f"call {value} failed after writing")


def _values(conn: sqlite3.Connection) -> list[int]:
    return [r[0] for r in conn.execute("SELECT v FROM t ORDER BY v")]


@pytest.fixture
async def direct(tmp_path: Path):
    path = str(tmp_path / "group.db")
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE t (v INTEGER PRIMARY KEY)")
    db = DirectSqlite(path)
    yield db
    await db.close()


async def test_calls_queued_together_share_one_commit(direct: DirectSqlite) -> None:
    await direct.read(_values)  # the connection is open
    groups_before = direct.groups
    async with direct.paused():
        tasks = [asyncio.create_task(direct.write(_insert, v)) for v in range(50)]
        await asyncio.sleep(0.05)
        assert not any(t.done() for t in tasks), "nothing runs while the direct path is paused"
    assert await asyncio.gather(*tasks) == list(range(50))
    assert direct.groups - groups_before == 1, "the 50 calls were committed together"
    assert await direct.read(_values) == list(range(50))


async def test_a_failing_call_rolls_back_only_its_own_writes(direct: DirectSqlite) -> None:
    async with direct.paused():
        tasks = [
            asyncio.create_task(direct.write(_insert_then_fail if v == 7 else _insert, v))
            for v in range(20)
        ]
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert isinstance(results[7], ValueError)
    assert [r for i, r in enumerate(results) if i != 7] == [v for v in range(20) if v != 7]
    assert await direct.read(_values) == [v for v in range(20) if v != 7]


async def test_a_constraint_error_fails_its_caller_only(direct: DirectSqlite) -> None:
    await direct.write(_insert, 1)
    async with direct.paused():
        duplicate = asyncio.create_task(direct.write(_insert, 1))
        fresh = asyncio.create_task(direct.write(_insert, 2))
    with pytest.raises(sqlite3.IntegrityError):
        await duplicate
    assert await fresh == 2
    assert await direct.read(_values) == [1, 2]


async def test_calls_after_close_are_refused(direct: DirectSqlite) -> None:
    await direct.write(_insert, 1)
    await direct.close()
    with pytest.raises(RuntimeError, match="closed"):
        await direct.write(_insert, 2)


def _wal_autocheckpoint(conn: sqlite3.Connection) -> int:
    return conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0]


async def test_the_log_is_checkpointed_off_the_event_loop(direct: DirectSqlite) -> None:
    """The writing connection never checkpoints (that would stall the loop); a thread does."""
    assert await direct.read(_wal_autocheckpoint) == 0
    for v in range(2 * sqlite_direct.CHECKPOINT_EVERY):
        await direct.write(_insert, v)
    checkpointer = direct._checkpointer
    assert checkpointer is not None
    for _ in range(200):
        if checkpointer.runs >= 1:
            break
        await asyncio.sleep(0.01)
    assert checkpointer.runs >= 1, "no checkpoint ran while the log grew"


def _size(path: str) -> int:
    return os.stat(path).st_size


def _insert_blob(conn: sqlite3.Connection, blob: bytes) -> None:
    conn.execute("INSERT INTO blobs (b) VALUES (?)", (blob,))


async def test_the_log_starts_over_while_writes_never_stop(tmp_path: Path) -> None:
    """A passive checkpoint racing a constant writer never empties the log, so it grew
    without end (gigabytes in a minute of load); holding the writer for the last pass
    lets it start over, and the file stays near the limit."""
    path = str(tmp_path / "log.db")
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE blobs (b BLOB)")
    db = DirectSqlite(path, log_limit=64)  # pages
    try:
        wal, largest, blob = path + "-wal", 0, os.urandom(16 * 1024)
        for _ in range(2000):  # one commit after another: about 40 MiB of log in all
            await db.write(_insert_blob, blob)
            largest = max(largest, _size(wal))
        checkpointer = db._checkpointer
        assert checkpointer is not None
        assert checkpointer.restarts >= 1, "the log never started over"
        assert largest < 8 * 1024 * 1024, f"the log grew to {largest / 2**20:.1f} MiB"
        assert (
            await db.read(lambda c: c.execute("SELECT count(*) FROM blobs").fetchone()[0]) == 2000
        )
    finally:
        await db.close()


async def test_calls_still_queued_when_the_store_closes_fail_instead_of_hanging(
    direct: DirectSqlite,
) -> None:
    async with direct.paused():
        queued = asyncio.create_task(direct.write(_insert, 1))
        await asyncio.sleep(0)
        await direct.close()
        with pytest.raises(RuntimeError, match="closed"):
            await asyncio.wait_for(queued, 5)
