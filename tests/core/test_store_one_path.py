"""The store has one path: every method runs the same code on SQLite and on Postgres.

What differs between the databases is only the executor that runs a unit's
statements (``sqlite_direct`` and ``postgres_direct``) and the SQL each
statement compiles to. The catalogue must compile for both dialects; and the
same calls, traced line by line through the store's own modules (the methods,
the units of work, the event writer, the row shapes), must run exactly the same
lines on both: a method that branched on the backend would run some lines on
one and not the other.
"""

from __future__ import annotations

import contextlib
import sys
from collections import defaultdict
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import FrameType
from typing import Any

import pytest

from tenet.bus import MemoryBus
from tenet.context import RunContext
from tenet.errors import NotFound, RateLimited, TenetError
from tenet.events import RunEnd, RunStart, make_event
from tenet.ids import new_id
from tenet.store import db
from tenet.store.db import Store
from tenet.store.history import NEWEST, turn_events_before
from tenet.store.migrate import upgrade
from tenet.store.usage import add_run_usage, tokens_since, usage_by_agent
from tenet.store.writer import EventWriter

STORE = Path(db.__file__).resolve().parent
#: The modules whose lines must be the same on every database (the executors' may differ).
ONE_PATH = {str(STORE / name) for name in ("db.py", "units.py", "rows.py", "writer.py")}


def test_the_statement_catalogue_compiles_for_both_dialects() -> None:
    from tenet.store import statements

    sqlite = statements.compiled("sqlite")
    postgres = statements.compiled("postgresql")
    assert len(sqlite) == len(postgres) == len(statements.CATALOGUE) > 10
    for stmt, lite, pg in zip(statements.CATALOGUE, sqlite, postgres, strict=True):
        assert lite.name == pg.name == stmt.name
        # Each binds the declared parameters, in the driver's own style (a chained
        # statement is one statement on Postgres, two on SQLite).
        lite_sql = lite.sql + (lite.then.sql if lite.then is not None else "")
        assert (lite.then is None) == (stmt.then is None) and pg.then is None, stmt.name
        assert "$" not in lite_sql and "?" not in pg.sql, stmt.name
        assert lite_sql.count("?") >= len(stmt.params), stmt.name
        assert all(f"${i}" in pg.sql for i in range(1, len(stmt.params) + 1)), stmt.name


class LineTrace:
    """Records, per label, the lines run in the store's one-path modules."""

    def __init__(self) -> None:
        self.lines: dict[str, set[tuple[str, int]]] = defaultdict(set)
        self.label: str | None = None

    def _local(self, frame: FrameType, event: str, _arg: Any) -> Callable[..., Any] | None:
        if event == "line" and self.label is not None:
            self.lines[self.label].add((Path(frame.f_code.co_filename).name, frame.f_lineno))
        return self._local

    def _global(self, frame: FrameType, _event: str, _arg: Any) -> Callable[..., Any] | None:
        return self._local if frame.f_code.co_filename in ONE_PATH else None

    @contextlib.contextmanager
    def __call__(self, label: str) -> Iterator[None]:
        self.label = label
        try:
            yield
        finally:
            self.label = None

    @contextlib.contextmanager
    def running(self) -> Iterator[None]:
        previous = sys.gettrace()
        sys.settrace(self._global)
        try:
            yield
        finally:
            sys.settrace(previous)


async def _every_method(store: Store, trace: LineTrace) -> None:
    """Each public store method, in each of its outcomes, under its own label."""
    user, token = await store.create_user("ada")
    other, _ = await store.create_user("bob")
    with trace.running():
        with trace("user_for_token"):
            assert (await store.user_for_token(token)) is not None
        with trace("create_thread"):
            thread = await store.create_thread(user.id, {"topic": "tea"}, limit=3)
            await store.create_thread(user.id)
        with trace("create_thread over its limit"), pytest.raises(RateLimited):
            await store.create_thread(user.id, limit=2)
        with trace("get_thread"):
            assert (await store.get_thread(user.id, thread.id)).meta == {"topic": "tea"}
        with trace("get_thread of another user"), pytest.raises(NotFound):
            await store.get_thread(other.id, thread.id)
        with trace("list_threads"):
            assert len(await store.list_threads(user.id)) == 2
        with trace("create_run"):
            run = await store.create_run(user.id, thread.id, "a", "hi", {"k": 1}, max_queued=5)
            second = await store.create_run(user.id, thread.id, "a", "again")
        with trace("create_run of another user's thread"), pytest.raises(NotFound):
            await store.create_run(other.id, thread.id, "a", "hi", max_queued=5)
        with trace("create_run over the queue limit"), pytest.raises(TenetError):
            await store.create_run(user.id, thread.id, "a", "hi", max_queued=2)
        with trace("get_run"):
            assert (await store.get_run(user.id, run.id)).meta == {"k": 1}
        with trace("get_run of another user"), pytest.raises(NotFound):
            await store.get_run(other.id, run.id)
        with trace("update_run"):
            await store.update_run(user.id, run.id, status="running", worker_id="w", error=None)
        with trace("events"):
            writer = EventWriter(store, MemoryBus())
            writer.start()
            ctx = RunContext(
                user_id=user.id,
                thread_id=thread.id,
                run_id=run.id,
                execution_id=new_id("exe"),
                agent_name="a",
            )
            first = make_event(ctx, "agent_started", {"input": "hi", "depth": 0})
            first.start = RunStart("w")
            await writer.write(first)
            await writer.write(make_event(ctx, "agent_thinking", {"reasoning": "", "step": 1}))
            fields = {"status": "completed", "final_response": "ok", "duration_ms": 1, "depth": 0}
            last = make_event(ctx, "agent_completed", fields)
            last.end = RunEnd("completed", output="ok")
            await writer.write(last)
            await writer.close()
        with trace("finish_run"):
            await store.finish_run(user.id, second.id, status="failed", error={"code": "x"})
            await store.finish_run(user.id, second.id, status="completed", output="late")
        with trace("list_events"):
            assert len(await store.list_events(user.id, thread.id)) == 3
        with trace("list_events of another user"), pytest.raises(NotFound):
            await store.list_events(other.id, thread.id)
        with trace("reads"):
            assert len(await store.list_messages(user.id, thread.id)) == 3
            assert await store.last_seq(user.id, thread.id) == 3
            assert await store.run_has_events(run.id)
            assert (await store.run_terminal_event(user.id, run.id)) is not None
            assert await store.admin_root_execution(run.id) is not None
            assert len(await store.admin_runs_with_status(["completed", "failed"])) == 2
        with trace("history"):
            turns = await turn_events_before(store, user.id, thread.id, NEWEST, 10, second.id)
            assert [seq for seq, _ in turns] == [3, 1]  # the start and the end, not the thinking
        with trace("usage"):
            await add_run_usage(store, user.id, run.id, 2**40, 5, 1)
            since = datetime(2000, 1, 1, tzinfo=UTC)
            assert await tokens_since(store, user.id, since) == 2**40 + 5
            assert await usage_by_agent(store, user.id, since) == {"a": (2**40, 5, 1, 2)}
            assert await tokens_since(store, other.id, since) == 0
        with trace("notes"):
            await store.add_note(user.id, "ada likes tea")
            assert len(await store.list_notes(user.id, query="tea")) == 1
        assert (await store.get_run(user.id, second.id)).status == "failed"
        with trace("delete_thread"):
            await store.delete_thread(user.id, thread.id)
        marked = await store.create_thread(user.id)
        with trace("a thread being deleted refuses runs"):
            until = datetime.now(UTC) + timedelta(seconds=60)
            await store.mark_thread_deleting(user.id, marked.id, until)
            with pytest.raises(NotFound):
                await store.create_run(user.id, marked.id, "a", "hi", max_queued=5)
            with pytest.raises(NotFound):
                await store.create_run(user.id, marked.id, "a", "hi")
        with trace("a delete that gave up clears its mark"):
            await store.clear_thread_deleting(user.id, marked.id, until)
            await store.create_run(user.id, marked.id, "a", "x", max_queued=5)
        with trace("a crashed deleter's mark expires"):
            await store.mark_thread_deleting(user.id, marked.id, datetime.now(UTC))
            await store.create_run(user.id, marked.id, "a", "y", max_queued=5)
        with trace("marking another user's thread"), pytest.raises(NotFound):
            await store.mark_thread_deleting(other.id, marked.id, until)


async def _trace_on(url: str) -> dict[str, set[tuple[str, int]]]:
    store = Store(url)
    try:
        await upgrade(store.engine)
        trace = LineTrace()
        await _every_method(store, trace)
        return dict(trace.lines)
    finally:
        await store.close()


async def test_every_store_method_runs_the_same_lines_on_sqlite_and_postgres(
    sqlite_url: str, postgres_url: str
) -> None:
    on_sqlite = await _trace_on(sqlite_url)
    on_postgres = await _trace_on(postgres_url)
    assert on_sqlite.keys() == on_postgres.keys()
    differ = {
        label: (
            sorted(on_sqlite[label] - on_postgres[label]),
            sorted(on_postgres[label] - on_sqlite[label]),
        )
        for label in on_sqlite
        if on_sqlite[label] != on_postgres[label]
    }
    assert differ == {}, f"lines run only on SQLite / only on Postgres: {differ}"
    assert any(f == "units.py" for lines in on_sqlite.values() for f, _ in lines)
