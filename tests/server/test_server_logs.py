"""Log lines carry the user, thread and run they are about."""

from __future__ import annotations

import logging

from tenet.context import RunContext, current_context
from tenet.ids import new_id
from tenet.server.logs import ContextFilter


def _record(**extra: str) -> logging.LogRecord:
    record = logging.LogRecord("tenet.test", logging.INFO, __file__, 1, "hello", None, None)
    record.__dict__.update(extra)
    return record


def test_ids_come_from_the_run_context() -> None:
    ctx = RunContext(
        user_id=new_id("usr"),
        thread_id=new_id("thr"),
        run_id=new_id("run"),
        execution_id=new_id("exe"),
        agent_name="assistant",
    )
    token = current_context.set(ctx)
    try:
        record = _record()
        assert ContextFilter().filter(record)
    finally:
        current_context.reset(token)
    assert (record.user_id, record.thread_id, record.run_id) == (  # type: ignore[attr-defined]
        ctx.user_id,
        ctx.thread_id,
        ctx.run_id,
    )


def test_explicit_ids_win_and_unknown_ones_are_dashes() -> None:
    record = _record(user_id="usr_explicit")
    ContextFilter().filter(record)
    assert record.user_id == "usr_explicit"  # type: ignore[attr-defined]
    assert record.thread_id == "-" and record.run_id == "-"  # type: ignore[attr-defined]
