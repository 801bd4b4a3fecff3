"""The reads a thread's conversation is built from: its turn events, newest first, in pages.

:mod:`tenet.conversation` asks for one page at a time and stops as soon as the
context budget is spent, so what is read is bounded by the budget, not by the
length of the thread. Only the event types a conversation is made of are
returned (a run's start and end, its tool calls and results, ``TURN_MARKS``),
through a partial index on them: streamed text and reasoning are not even read.
The index holds every column of a turn's mark (``seq``, run, type, user), so the
marks are read from it alone; the text of a mark is read only for the events a
reader does not hold built already.
Every read filters by the caller's ``user_id`` beside the thread id: another
user's events are never returned, even for a thread id they share.

The read is a unit (``units.turn_events_before``): the marks
(``statements.TURN_MARKS_BEFORE``), then, only if some are above the reader's
hint, those marks' text (``statements.TURN_BODIES_BETWEEN``); the store's
executor runs it the same way on every database.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from . import units

if TYPE_CHECKING:
    from .db import Store


#: A ``seq`` above every stored one (the column is a 64-bit integer): "from the newest".
NEWEST = 2**63 - 1


async def turn_events_before(
    store: Store,
    user_id: str,
    thread_id: str,
    before: int,
    limit: int,
    skip_run: str,
    fresh: int = -1,
    low: int = 0,
) -> list[tuple[int, str, str, str | None]]:
    """Up to ``limit`` ``(seq, run_id, type, body)`` of the thread's turn events with
    ``low <= seq < before``, newest first, leaving out the run ``skip_run`` (the one asking).

    The run and type come as columns so that a reader can pass over rows it does not
    need without decoding them; ``body`` is None for ``seq <= fresh`` (rows of runs
    the reader probably holds built already: it reads their text only if it must,
    with :func:`turn_bodies_between`)."""
    return await store.executor.run(
        units.turn_events_before,
        user_id,
        thread_id,
        before,
        limit,
        skip_run,
        fresh,
        low,
        write=False,
    )


async def turn_bodies_between(
    store: Store, user_id: str, thread_id: str, low: int, high: int, skip_run: str
) -> dict[int, str]:
    """``{seq: body}`` of the thread's turn events with ``low <= seq <= high`` (this
    user's only), leaving out the run ``skip_run``."""
    return await store.executor.run(
        units.turn_bodies_between, user_id, thread_id, low, high, skip_run, write=False
    )
