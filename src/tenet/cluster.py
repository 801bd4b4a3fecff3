"""The queue of a cluster: runs claimed from Postgres, signals over Redis.

In cluster mode (``TENET_REDIS_URL`` set, Postgres as the store) every process
is identical. A run is stored as ``queued``; each process's dispatcher claims
runnable runs with ``SELECT ... FOR UPDATE SKIP LOCKED`` (one running run per
thread, the user's limit held cluster-wide, ``TENET_MAX_RUNS`` per process) and
hands them to its engine, which executes them exactly as in one process. The claiming process heartbeats
its runs; a sweeper on every process finds runs whose worker stopped
heartbeating and either requeues them (a run that had not emitted anything yet,
up to ``TENET_RUN_MAX_ATTEMPTS`` claims) or ends them with ``agent_error`` code
``interrupted`` (``run_cancelled`` if it was being cancelled). A cancel sent to
any process reaches the executing one through a Redis signal.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from datetime import timedelta

import orjson
from sqlalchemy import select

from .bus import Bus
from .clock import utc_now
from .errors import NotFound
from .events import RunStart
from .queue import QueueHost, user_run_limit
from .run_lifecycle import RunExecution, RunStatus
from .runtime import RunRuntime
from .sessions import UserSession, UserSessions
from .settings import Settings
from .store.db import Store
from .store.run_end import request_cancel
from .store.tables import Run
from .store.writer import EventWriter

log = logging.getLogger("tenet.cluster")

WAKE = "wake"
CANCEL = "cancel"
#: The cancel reason of a run another process took over (never written to the store).
LOST = "lost"


class ClusterQueue:
    """A :class:`~tenet.queue.RunQueue` that is the ``runs`` table, shared by every process."""

    def __init__(
        self,
        *,
        settings: Settings,
        store: Store,
        writer: EventWriter,
        bus: Bus,
        sessions: UserSessions,
        busy: Callable[[], bool] = lambda: False,
    ) -> None:
        self.settings = settings
        #: Whether this process's event loop is busy now (see local_queue.py).
        self.busy = busy
        self.store = store
        self.writer = writer
        self.bus = bus
        self.sessions = sessions
        self._host: QueueHost
        self._wake = asyncio.Event()
        # Runs claimed before the last heartbeat: only those can have been lost (a run
        # claimed a moment ago may not be in the heartbeat's answer yet).
        self._claimed_before: set[str] = set()
        self._tasks: list[asyncio.Task[None]] = []
        self._stopped = False
        self.claimed = 0

    def bind(self, host: QueueHost) -> None:
        self._host = host

    # Lifecycle --------------------------------------------------------------------------------

    async def start(self) -> None:
        """Listen for signals, then dispatch, heartbeat and sweep (the sweeper recovers)."""
        self.bus.on_signal(WAKE, lambda _payload: self._wake.set())
        self.bus.on_signal(CANCEL, self._on_cancel_signal)
        self._tasks = [
            asyncio.create_task(self._dispatch(), name="tenet-dispatch"),
            asyncio.create_task(self._heartbeat(), name="tenet-heartbeat"),
            asyncio.create_task(self._sweep(), name="tenet-sweeper"),
        ]
        self._wake.set()

    def stop(self) -> None:
        """Claim nothing more; keep heartbeating while running runs finish or stop,
        so that no other process takes them over meanwhile."""
        self._stopped = True

    async def quiesce(self) -> None:
        await asyncio.sleep(0)  # runs claimed just now start, so their cancel is handled

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []

    # Accepting and cancelling -----------------------------------------------------------------

    def full(self, session: UserSession) -> bool:
        return False  # the user's runs may be queued on any process: the store counts them

    @property
    def stored_queue_limit(self) -> int | None:
        return self.settings.user_max_queued

    def accepted(self, run: Run, session: UserSession) -> None:
        self._wake.set()
        self.bus.signal(WAKE, run.id)

    def pump(self) -> None:
        self._wake.set()

    def ended(self, execution: RunExecution, session: UserSession) -> None:
        """Nothing to do: the next dispatch claims into the freed slot."""

    def resumed(self, run: Run) -> None:
        """A waiting run is ``queued`` again: whichever process claims first resumes it."""
        self.accepted(run, self.sessions.get(run.user_id))

    def unpaused(self, user_id: str, thread_id: str, run_id: str) -> None:
        """The thread is free in the store: the next claim sees it."""
        self._wake.set()
        self.bus.signal(WAKE, run_id)

    def queued_or_running(self, user_id: str, thread_id: str) -> list[str]:
        return []  # the queue is the store's, not this process's

    async def cancel(
        self, user_id: str, run_id: str, reason: str, execution: RunExecution | None
    ) -> tuple[Run, bool]:
        """Cancel a run wherever it is; the store decides whether cancellation won.

        Queued: whichever process claims its settlement first ends it. Running
        elsewhere: its row becomes ``cancelling`` and the executing process is
        told over the bus. Ended first: returned as it ended, and False. A run's
        status only moves forward (queued, running, cancelling, ended), so a few
        rounds always settle the race with a claim or an end.
        """
        run = await self.store.get_run(user_id, run_id)  # NotFound when foreign or missing
        won = False
        for _ in range(8):
            if run.status == RunStatus.QUEUED:
                if await self.store.admin_claim_settlement(user_id, run_id, self._host.worker_id):
                    await self._host.settler.cancel_unstarted(
                        user_id, run.thread_id, run_id, run.agent, reason
                    )
                    return await self.store.get_run(user_id, run_id), True
            elif run.status == RunStatus.RUNNING:
                if await request_cancel(self.store, user_id, run_id):
                    won = True
                    break
            else:
                won = run.status == RunStatus.CANCELLING
                break
            run = await self.store.get_run(user_id, run_id)  # it moved on meanwhile
        if not won:
            return run, False
        payload = orjson.dumps({"run_id": run_id, "reason": reason}).decode()
        self.bus.signal(CANCEL, payload)
        return await self.store.get_run(user_id, run_id), True

    async def thread_runs(self, user_id: str, thread_id: str) -> list[str]:
        """The thread's runs not yet ended, on any process, oldest first (from the store)."""
        async with self.store.read() as s:
            rows = await s.scalars(
                select(Run.id)
                .where(
                    Run.user_id == user_id,
                    Run.thread_id == thread_id,
                    Run.status.in_(
                        (
                            RunStatus.QUEUED,
                            RunStatus.RUNNING,
                            RunStatus.REQUIRES_ACTION,
                            RunStatus.CANCELLING,
                        )
                    ),
                )
                .order_by(Run.created_at, Run.id)
            )
            return list(rows)

    async def wait_ended(self, user_id: str, run_id: str) -> None:
        """Poll the run's row until it says the run ended (or it is gone)."""
        while True:
            try:
                run = await self.store.get_run(user_id, run_id)
            except NotFound:
                return
            if RunStatus(run.status).terminal:
                return
            await asyncio.sleep(self.settings.cluster_poll_s / 10)

    def _on_cancel_signal(self, payload: str) -> None:
        try:
            message = orjson.loads(payload)
            execution = self._host.runs.get(message["run_id"])
        except (orjson.JSONDecodeError, KeyError, TypeError):
            return
        if execution is not None:
            reason = str(message.get("reason") or "user")
            self.writer.cancel_reasons.setdefault(execution.run_id, reason)
            execution.request_cancel(reason)

    # Executing --------------------------------------------------------------------------------

    def run_start(self) -> RunStart | None:
        """None: a claimed run is already stored as ``running`` by its claim."""
        return None

    async def release(self, execution: RunExecution, runtime: RunRuntime) -> bool:
        """At shutdown, a run that has emitted nothing goes back to the queue for another process.

        A run that has emitted events cannot be restarted (its ``agent_started`` is
        out); it ends with ``run_cancelled`` reason ``shutdown``. A run another
        process took over is left to it: its new owner writes its end.
        """
        reason = execution.cancel_reason or "shutdown"
        if reason == LOST:
            return True
        if (
            reason == "shutdown"
            and self._stopped
            and runtime.emitted == 0
            and await self.store.admin_requeue(execution.run_id, self._host.worker_id)
        ):
            log.warning("released run %s to the queue at shutdown", execution.run_id)
            execution.status = RunStatus.QUEUED
            self.bus.signal(WAKE, execution.run_id)
            return True
        return False

    # Background work --------------------------------------------------------------------------

    async def _dispatch(self) -> None:
        poll = self.settings.cluster_poll_s
        host = self._host
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), poll)
            self._wake.clear()
            if self._stopped:
                # Stop for good (not just skip a turn): on Python 3.11 a cancel that lands as
                # wait_for's inner wait completes is lost, and close() would wait forever.
                return
            free = self.settings.max_runs - host.running_count
            if free <= 0:
                continue
            try:
                runs = await self.store.claim_runs(
                    host.worker_id, free, user_run_limit(self.settings, self.busy())
                )
            except Exception as exc:
                log.warning("claiming runs failed: %s", exc)
                await asyncio.sleep(poll)
                continue
            if runs is None:  # another process is claiming; try again shortly
                await asyncio.sleep(0.02)
                self._wake.set()
                continue
            for run in runs:
                self._start_claimed(run)
            if len(runs) == free:
                self._wake.set()  # there may be more to claim

    def _start_claimed(self, run: Run) -> None:
        execution = RunExecution.of(run)
        self._host.runs[run.id] = execution
        self.claimed += 1
        self.writer.forget(run.thread_id)  # another process may have written to it last
        self._host.launch(execution, self.sessions.get(run.user_id))

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(self.settings.heartbeat_s)
            try:
                held = await self.store.heartbeat(self._host.worker_id)
            except Exception as exc:
                log.warning("heartbeat failed: %s", exc)
                continue
            self.drop_lost_runs(held)

    def drop_lost_runs(self, held: set[str]) -> int:
        """Stop, without a word, the runs this process executes but no longer holds.

        A run is taken from a process only when the cluster presumed it dead (its
        heartbeats stopped for ``TENET_DEAD_AFTER_BEATS``); if it was merely slow,
        another process now owns the run, and two executions must not go on at once.
        The new owner writes the run's events and end; this one writes nothing more.
        """
        runs = self._host.runs
        lost = [
            e
            for e in runs.values()
            if e.cancellable and e.run_id not in held and e.run_id in self._claimed_before
        ]
        for execution in lost:
            log.error(
                "run %s was taken over by another process; stopping it here", execution.run_id
            )
            execution.request_cancel(LOST)
        self._claimed_before = set(runs)
        return len(lost)

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(self.settings.heartbeat_s)
            try:
                await self.sweep_once()
            except Exception as exc:
                log.warning("sweeping dead runs failed: %s", exc)

    async def sweep_once(self) -> int:
        """Requeue or end the runs of workers that stopped heartbeating; returns how many."""
        dead_after = timedelta(seconds=self.settings.heartbeat_s * self.settings.dead_after_beats)
        host = self._host
        handled = 0
        for run in await self.store.admin_dead_runs(utc_now() - dead_after):
            if run.id in host.runs:
                continue  # ours, alive
            if (
                run.status == RunStatus.RUNNING
                and run.attempts < self.settings.run_max_attempts
                and not await self.store.run_has_events(run.id)
                and await self.store.admin_requeue(run.id, run.worker_id)
            ):
                log.warning("requeued run %s of dead worker %s", run.id, run.worker_id)
                self.bus.signal(WAKE, run.id)
                handled += 1
                continue
            if await self.store.admin_take_over(run.id, run.worker_id, host.worker_id):
                log.warning("ending run %s of dead worker %s", run.id, run.worker_id)
                with contextlib.suppress(NotFound):
                    await host.settler.settle(
                        run.user_id, run.thread_id, run.id, run.agent, interrupted=run.status
                    )
                handled += 1
        return handled
