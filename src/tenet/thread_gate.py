"""Deleting a thread: no run enters it meanwhile, and the delete tells the truth.

``DELETE /v1/threads/{id}`` cancels the thread's queued and running runs,
waits for each to write its last event, then deletes the thread. While it does,
the thread is *closing*: a new run for it is refused as "not found" (the thread
is as good as gone), so no run accepted during the delete can start, and no
tool of a deleted thread ever runs. Submissions already past the gate when the
delete starts finish storing first, and are cancelled with the rest.

The gate against new runs holds on every process: the delete first marks the
thread's row as being deleted (``threads.deleting_until``), and the statement
that stores a run, on any process, refuses a marked thread (404) as it refuses
another user's. The thread's runs are found and waited for on every process
(through the store). The mark lasts the delete's wait for the run it is waiting
for plus :data:`MARK_GRACE_S`, extended before each wait: a delete that gives up
clears it, and the mark of a deleter that crashed expires by itself, so no
thread stays closed.

A run that takes longer than the delete's wait to stop is not a store outage:
the delete answers 409 ``conflict`` (the thread and its runs are left as they
are, the runs still stopping) and may simply be retried.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol

from .clock import utc_now
from .errors import Conflict, NotFound

if TYPE_CHECKING:
    from .store.db import Store
    from .store.writer import EventWriter


#: Seconds a delete mark outlasts the wait it covers: time for the delete's own
#: statements, and for clocks of a cluster's processes that differ a little.
MARK_GRACE_S = 5.0


class ThreadGate:
    """Per thread: whether it is being deleted, and how many run submissions are inside.

    Infrastructure keyed by thread: an entry lives only while a submission or a
    delete of that thread is in progress.
    """

    def __init__(self) -> None:
        self._closing: dict[str, int] = {}
        self._inside: dict[str, int] = {}
        self._emptied: dict[str, asyncio.Event] = {}

    def is_closing(self, thread_id: str) -> bool:
        return thread_id in self._closing

    @contextlib.contextmanager
    def entering(self, thread_id: str) -> Iterator[None]:
        """Around storing and scheduling a run: ``NotFound`` while the thread is closing."""
        if thread_id in self._closing:
            raise NotFound()
        self._inside[thread_id] = self._inside.get(thread_id, 0) + 1
        try:
            yield
        finally:
            left = self._inside[thread_id] - 1
            if left:
                self._inside[thread_id] = left
            else:
                del self._inside[thread_id]
                emptied = self._emptied.pop(thread_id, None)
                if emptied is not None:
                    emptied.set()

    @contextlib.asynccontextmanager
    async def closing(self, thread_id: str) -> AsyncIterator[None]:
        """Refuse new runs of the thread, wait for those being submitted, then yield."""
        self._closing[thread_id] = self._closing.get(thread_id, 0) + 1
        try:
            while thread_id in self._inside:
                emptied = self._emptied.setdefault(thread_id, asyncio.Event())
                await emptied.wait()
            yield
        finally:
            left = self._closing[thread_id] - 1
            if left:
                self._closing[thread_id] = left
            else:
                del self._closing[thread_id]


class ThreadRuns(Protocol):
    """What deleting a thread needs from the engine (:class:`~tenet.engine.Engine`)."""

    store: Store
    writer: EventWriter
    thread_gate: ThreadGate

    async def thread_runs(self, user_id: str, thread_id: str) -> list[str]:
        """The thread's runs not yet ended, on every process, oldest first."""

    async def cancel(self, user_id: str, run_id: str, *, reason: str = "user") -> Any:
        """Cancel a run (``NotFound`` if it is gone)."""

    async def wait_ended(self, user_id: str, run_id: str) -> None:
        """Return once the run has ended, wherever it executes."""


async def delete_thread(engine: ThreadRuns, user_id: str, thread_id: str, *, wait_s: float) -> None:
    """Cancel the thread's runs, wait up to ``wait_s`` for each to end, delete the thread.

    Raises ``NotFound`` (not the caller's), or ``Conflict`` when a run is still
    stopping after ``wait_s`` (nothing is deleted, the thread accepts runs again;
    retrying is safe).
    """
    store = engine.store

    async def mark() -> datetime:
        until = utc_now() + timedelta(seconds=wait_s + MARK_GRACE_S)
        await store.mark_thread_deleting(user_id, thread_id, until)  # NotFound: not theirs
        return until

    until = await mark()
    deleted = False
    try:
        async with engine.thread_gate.closing(thread_id):
            # Cancel first and wait for each run's last event, so no event is written after.
            for run_id in reversed(await engine.thread_runs(user_id, thread_id)):
                try:
                    await engine.cancel(user_id, run_id, reason="thread_deleted")
                except NotFound:
                    continue
                until = await mark()  # lasts this wait, whatever the waits before took
                try:
                    async with asyncio.timeout(wait_s):
                        await engine.wait_ended(user_id, run_id)
                except TimeoutError:
                    raise Conflict(
                        "a run of this thread is still stopping; retry the delete shortly"
                    ) from None
            await store.delete_thread(user_id, thread_id)
            deleted = True
            engine.writer.forget(thread_id)
    finally:
        if not deleted:
            with contextlib.suppress(Exception):  # if it cannot be cleared, it expires
                await store.clear_thread_deleting(user_id, thread_id, until)
