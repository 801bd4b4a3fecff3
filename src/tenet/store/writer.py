"""The event writer: numbers events per thread, stores them in batches, then publishes.

All events of the process pass through one writer task. It takes whatever is
waiting (up to ``TENET_EVENT_BATCH_MAX``), gives each event the next ``seq`` of
its thread, inserts the batch in one transaction, and only after the commit
publishes each event on the bus and wakes its emitter. Batching is what keeps
many concurrent runs cheap: a hundred runs emitting at once cost one commit, not
a hundred. Because the writer is the single place where ``seq`` is assigned in
a process, a thread's numbering needs no lock; the store's unique
``(thread_id, seq)`` turns any mistake into an error rather than a duplicate.

When more events wait than ``backlog_max``, runs wait their turn before making
more (:meth:`EventWriter.room`): under more load than the store can take, an
event's latency stays bounded and the excess waits as runs not yet producing,
not as events piling up in memory.

A batch that fails (a deleted thread, a constraint) is retried thread by
thread, so one user's bad event never fails another user's; a thread's events
are retried with a fresh ``seq`` so that a stale cache (another process wrote to
the thread since) costs a retry, never a duplicate.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict, deque
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import orjson

from ..events import Event
from ..ids import new_id
from ..text import repair, repair_value
from . import run_end, units
from .approvals import request_row
from .db import Store

if TYPE_CHECKING:
    from ..bus import Bus

log = logging.getLogger("tenet.writer")

#: Threads whose last ``seq`` is kept (those with a run executing: a thread's entry goes
#: with its run's end); any other costs one indexed lookup in its next batch.
_SEQ_CACHE_MAX = 4_096
#: Extra tries of one thread's batch that met a stale ``seq`` (another process wrote there):
#: each numbers the batch afresh from the store, so only a thread written without pause by
#: another process can exhaust them.
SEQ_CONFLICT_RETRIES = 16
#: Events a run let through by :meth:`EventWriter.room` may submit before it asks again.
ROOM_GRANT = 8


class EventWriter:
    """Stores events in batches, then publishes them; see the module docstring."""

    def __init__(
        self, store: Store, bus: Bus, *, batch_max: int = 512, backlog_max: int = 128
    ) -> None:
        self._store = store
        self._bus = bus
        self._batch_max = batch_max
        self._backlog_max = backlog_max
        self._pending: list[Event] = []
        self._room_waiters: deque[asyncio.Future[None]] = deque()
        self._wakeup = asyncio.Event()
        self._last_seq: OrderedDict[str, int] = OrderedDict()
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self.batches = 0
        #: Why a run executing here is being cancelled, for an end that loses to the cancel
        #: (see :mod:`tenet.store.run_end`); dropped once the run's end is stored.
        self.cancel_reasons: dict[str, str] = {}
        self.events_written = 0

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._loop(), name="tenet-event-writer")

    async def close(self) -> None:
        """Writes what is pending, then stops."""
        self._closed = True
        self._wakeup.set()
        self._admit()
        if self._task is not None:
            await self._task
            self._task = None

    @property
    def bus(self) -> Bus:
        return self._bus

    @property
    def cached_threads(self) -> int:
        """How many threads' last ``seq`` is cached (those with a run executing here)."""
        return len(self._last_seq)

    def forget(self, thread_id: str) -> None:
        """Drop the cached last ``seq`` of a thread (another process may write to it next)."""
        self._last_seq.pop(thread_id, None)

    def submit(self, event: Event) -> None:
        """Queue one event without waiting (see :meth:`settled`).

        Events are written, and settled, in the order they were submitted, so a run
        may submit many and wait for the last (see :meth:`RunRuntime.flush`): that
        is what lets one run's events share a transaction, and costs one wake-up
        per wait, not one per event.
        """
        if self._closed and self._task is None:
            raise RuntimeError("event writer is closed")
        self._pending.append(event)
        self._wakeup.set()

    @property
    def congested(self) -> bool:
        """True while more events wait to be stored than ``backlog_max``."""
        return len(self._pending) >= self._backlog_max

    async def room(self) -> int:
        """Wait, in turn, until the backlog is below ``backlog_max``; returns a grant.

        Runs call this before making an event while the writer is congested. Under
        more load than the store can take, runs then wait before producing rather
        than piling events up in memory: an event's latency (made to delivered)
        stays bounded by the backlog, and runs take turns in arrival order. A run
        let through may submit ``ROOM_GRANT`` events before it asks again, so that
        a turn costs one wake-up per few events, not one per event.
        """
        while self.congested and not self._closed:
            waiter = asyncio.get_running_loop().create_future()
            self._room_waiters.append(waiter)
            try:
                await waiter
            except asyncio.CancelledError:
                if waiter.done() and not waiter.cancelled():
                    self._admit()  # pass the turn on
                raise
        return ROOM_GRANT

    def _admit(self) -> None:
        """Wake as many waiting runs as there is room for."""
        room = self._backlog_max - len(self._pending)
        while self._room_waiters and (room > 0 or self._closed):
            waiter = self._room_waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                room -= ROOM_GRANT

    def settled(self, event: Event) -> asyncio.Future[None]:
        """A future done once ``event`` is stored and published, or has failed (``event.error``)."""
        if event.waiter is None:
            event.waiter = asyncio.get_running_loop().create_future()
            if event.settled:
                event.waiter.set_result(None)
        return event.waiter

    async def write(self, event: Event) -> Event:
        """Queue one event; returns once it is stored and published, with its ``seq``."""
        self.submit(event)
        await asyncio.shield(self.settled(event))
        if event.error is not None:
            raise event.error
        return event

    async def _loop(self) -> None:
        while True:
            if not self._pending:
                if self._closed:
                    return
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            batch = self._pending[: self._batch_max]
            del self._pending[: len(batch)]
            if self._room_waiters:
                self._admit()
            try:
                await self._write_batch(batch)
            except Exception:  # pragma: no cover - _write_batch settles every future itself
                log.exception("event writer failed a batch")

    async def _write_batch(
        self, batch: list[Event], retries: int = 2, conflicts: int = SEQ_CONFLICT_RETRIES
    ) -> None:
        try:
            await self._store_events(batch)
        except Exception as exc:
            if _is_seq_conflict(exc) and conflicts > 0 and len({e.thread_id for e in batch}) == 1:
                # Another process wrote to the thread meanwhile (a queued run cancelled there
                # while the thread's running run writes here): number afresh and try again.
                self.forget(batch[0].thread_id)
                await self._write_batch(batch, retries, conflicts - 1)
                return
            for event in batch:
                self.forget(event.thread_id)  # the cached seq may be stale (another writer)
            by_thread: dict[str, list[Event]] = {}
            for event in batch:
                by_thread.setdefault(event.thread_id, []).append(event)
            if len(by_thread) > 1:
                # Isolate the failure: retry each thread's events on their own.
                for events in by_thread.values():
                    await self._write_batch(events, retries, conflicts)
            elif retries > 0:
                await self._write_batch(batch, retries - 1, conflicts)
            else:
                log.warning("could not store %d events of one thread: %s", len(batch), exc)
                for event in batch:
                    event.error = exc
                    _settle(event)
            return
        self.batches += 1
        self.events_written += len(batch)
        publish = self._bus.publish
        for event in batch:
            try:
                publish(event.thread_id, event)
            except Exception:
                log.exception("publishing an event failed; it is stored and can be replayed")
            _settle(event)

    def _transaction(
        self, events: list[Event], unknown: list[str], marked: list[Event]
    ) -> units.Steps:
        """The batch's unit of work: number, insert, and the runs' starts and ends."""
        known = (yield from units.max_seqs(unknown)) if unknown else {}
        if marked:  # an end that lost to a cancel request is stored as run_cancelled
            yield from run_end.decide_ends(marked, self.cancel_reasons)
        assigned = self._number(events, known)
        yield from units.insert_events([_row(e) for e in events])
        for unit, args in _run_marks(marked):
            yield from unit(*args)
        return assigned

    def _number(self, events: list[Event], known: dict[str, int]) -> dict[str, int]:
        """Give each event the next ``seq`` of its thread and its one serialized form."""
        assigned: dict[str, int] = {}
        for event in events:
            seq = assigned.get(event.thread_id)
            if seq is None:
                seq = self._last_seq.get(event.thread_id, known.get(event.thread_id, 0))
            seq += 1
            assigned[event.thread_id] = seq
            event.seq = seq
            event.data["seq"] = seq
            try:
                event.json = orjson.dumps(event.data).decode()
            except orjson.JSONEncodeError:
                event.json = _repaired_json(event)
        return assigned

    async def _store_events(self, events: list[Event]) -> None:
        unknown = list({e.thread_id for e in events if e.thread_id not in self._last_seq})
        # Runs' starts and ends ride with their first and terminal events, in one transaction,
        # and a request to a person with the event announcing it.
        marked = [
            e for e in events if e.start is not None or e.end is not None or e.pause is not None
        ]
        # One transaction: a batch that fails is retried whole, never half stored. On
        # Postgres, a batch without runs' starts or ends is one INSERT (atomic by itself),
        # and the max is read in a snapshot of its own, as under READ COMMITTED anyway;
        # the key (thread_id, seq) catches a stale seq.
        assigned = await self._store.executor.run(
            self._transaction, events, unknown, marked, atomic=bool(marked)
        )
        for thread_id, seq in assigned.items():
            self._last_seq[thread_id] = seq
            self._last_seq.move_to_end(thread_id)
        for event in marked:
            if event.end is not None:
                self.cancel_reasons.pop(event.run_id, None)
                # The run's end: its thread's seq is read again (one indexed lookup) by the
                # thread's next run, so users who ran and left leave nothing behind here.
                self._last_seq.pop(event.thread_id, None)
        while len(self._last_seq) > _SEQ_CACHE_MAX:
            self._last_seq.popitem(last=False)


def _run_marks(events: list[Event]) -> list[tuple[Any, tuple[Any, ...]]]:
    """The runs' starts, requests, pauses and ends a batch carries, in order, as units.

    The arguments are those of every backend's units: a run started when its first
    event was made and ended when its terminal one was; a request to a person is
    stored with the event announcing it, and the last request of a pause makes the
    run wait (``requires_action``) with the state it resumes from.
    """
    marks: list[tuple[Any, tuple[Any, ...]]] = []
    for e in events:
        if e.start is not None:
            marks.append((units.start_run, (e.user_id, e.run_id, e.created, e.start.worker_id)))
        if (pause := e.pause) is not None:
            marks.append((units.insert_request, (request_row(pause.request, e.created),)))
            if pause.state is not None:
                marks.append((units.pause_run, (e.user_id, e.run_id, pause.state)))
        if (end := e.end) is not None:
            when, message_id = e.created, new_id("msg")
            args = (e.user_id, e.run_id, end.status, end.output, end.error, when, message_id)
            marks.append((units.finish_run, args))
    return marks


def _is_seq_conflict(exc: BaseException) -> bool:
    """Whether a batch failed on the thread's ``(thread_id, seq)`` key: a stale ``seq``."""
    text = str(exc)
    return ("UNIQUE constraint failed: events" in text) or (
        "duplicate key" in text and "events_pkey" in text
    )


def _repaired_json(event: Event) -> str:
    """The JSON of an event whose fields held text UTF-8 cannot encode, or a non-JSON value.

    Its text is repaired (:mod:`tenet.text`) and any other value written as its
    ``str``, the run's end included: an event once emitted is stored, never dropped
    for its content.
    """
    event.data = repair_value(event.data)
    if (end := event.end) is not None:
        output = repair(end.output) if end.output is not None else None
        event.end = replace(end, output=output, error=repair_value(end.error))
    return orjson.dumps(event.data, default=str, option=orjson.OPT_NON_STR_KEYS).decode()


def _settle(event: Event) -> None:
    event.settled = True
    waiter = event.waiter
    if waiter is not None and not waiter.done():
        waiter.set_result(None)


def _row(e: Event) -> tuple[Any, ...]:
    """An ``events`` row in column order: id, user, thread, run, seq, type, time, body.

    The time is the event's stamp (microseconds); each executor stores it its way.
    """
    return (
        e.data["event_id"],
        e.user_id,
        e.thread_id,
        e.run_id,
        e.seq,
        e.data["type"],
        e.created,
        e.json,
    )
