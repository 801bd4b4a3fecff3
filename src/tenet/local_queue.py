"""The queue of one process: a lane per thread, users taking turns.

A run accepted here waits in its thread's lane, and is started when three limits
allow: one running run per thread (runs of a thread go in the order they were
accepted), ``TENET_USER_MAX_RUNS`` per user and ``TENET_MAX_RUNS`` in all. Users
with runnable work take turns, so a user with a hundred queued runs does not
delay a user with one. The per-user counters (queued, running, ready threads)
live in the user's :class:`~tenet.sessions.UserSession`.

While the event loop is busy (:meth:`~tenet.loop_watch.LoopWatch.busy`), a user
may have only ``TENET_USER_MAX_RUNS_BUSY`` runs running: the loop is the one
resource every run of the process shares, and a user running four runs at once
would get four times the share of a user running one. A user's runs beyond it
wait in its lanes (and its queue, bounded by ``TENET_USER_MAX_QUEUED``) until
one of its runs ends; other users' runs are not behind them.

One process owns the store: at start, the runs its dead predecessor left
``running`` or ``cancelling`` are settled, and those still ``queued`` are queued
again.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from .events import RunStart
from .queue import QueueHost, user_run_limit
from .run_lifecycle import RunExecution, RunStatus
from .runtime import RunRuntime
from .sessions import UserSession, UserSessions
from .settings import Settings
from .store.db import Store
from .store.tables import Run


@dataclass(eq=False, slots=True)
class Lane:
    """One thread's accepted runs, in order; at most one running."""

    queue: deque[RunExecution] = field(default_factory=deque)
    running: RunExecution | None = None
    #: A run of the thread waiting for a person: it holds the thread, not a slot.
    paused: str | None = None
    paused_user: str | None = None

    @property
    def free(self) -> bool:
        return self.running is None and self.paused is None


class LocalQueue:
    """A :class:`~tenet.queue.RunQueue` in this process's memory; see the module docstring."""

    def __init__(
        self,
        *,
        settings: Settings,
        store: Store,
        sessions: UserSessions,
        busy: Callable[[], bool] = lambda: False,
    ) -> None:
        self.settings = settings
        #: Whether the event loop is busy now (see the module docstring).
        self.busy = busy
        self.store = store
        self.sessions = sessions
        self._host: QueueHost
        self._lanes: dict[str, Lane] = {}
        self._ready_users: deque[str] = deque()
        self._stopped = False

    def bind(self, host: QueueHost) -> None:
        self._host = host

    # Lifecycle --------------------------------------------------------------------------------

    async def start(self) -> None:
        """Settle what a previous process left, then start scheduling."""
        await self._recover()
        self.pump()

    async def _recover(self) -> None:
        """One process owns the store: fail its dead predecessor's running runs, requeue the queued."""
        settler = self._host.settler
        for run in await self.store.admin_runs_with_status(["running", "cancelling"]):
            await settler.settle(
                run.user_id, run.thread_id, run.id, run.agent, interrupted=run.status
            )
        for run in await self.store.admin_runs_with_status(["requires_action"]):
            lane = self._lanes.setdefault(run.thread_id, Lane())
            lane.paused, lane.paused_user = run.id, run.user_id
        for run in await self.store.admin_runs_with_status(["queued"]):
            self._enqueue(run, self.sessions.get(run.user_id))

    def stop(self) -> None:
        self._stopped = True

    async def quiesce(self) -> None:
        """Nothing to wait for: a run this queue starts has its task at once."""

    async def close(self) -> None:
        """Nothing runs in the background; queued runs stay queued in the store."""

    # Accepting and cancelling -----------------------------------------------------------------

    def full(self, session: UserSession) -> bool:
        """This process's own count: every queued run of an embedded server is here."""
        return session.queued >= self.settings.user_max_queued

    @property
    def stored_queue_limit(self) -> int | None:
        return None

    def accepted(self, run: Run, session: UserSession) -> None:
        self._enqueue(run, session)
        self.pump()

    async def cancel(
        self, user_id: str, run_id: str, reason: str, execution: RunExecution | None
    ) -> tuple[Run, bool]:
        """A queued run leaves its lane and ends with ``run_cancelled``; others are returned.

        A run not in memory here is not executing anywhere: its cancel won only if
        its row already says ``cancelling``.
        """
        if execution is not None and execution.status is RunStatus.QUEUED:
            thread_id = execution.thread_id
            lane = self._lanes.get(thread_id)
            if lane is not None and execution in lane.queue:
                lane.queue.remove(execution)
            self.sessions.get(user_id).queued -= 1
            execution.status = RunStatus.CANCELLED
            try:
                await self._host.settler.cancel_unstarted(
                    user_id, thread_id, run_id, execution.agent, reason
                )
            finally:
                self._host.forget(execution)
                lane = self._lanes.get(thread_id)
                if lane is not None and lane.free and not lane.queue:
                    del self._lanes[thread_id]
            return await self.store.get_run(user_id, run_id), True
        run = await self.store.get_run(user_id, run_id)  # NotFound when foreign or missing
        return run, run.status == RunStatus.CANCELLING

    def run_start(self) -> RunStart | None:
        """A run's start is stored with its first event: status ``running``, by this process."""
        return RunStart(self._host.worker_id)

    async def release(self, execution: RunExecution, runtime: RunRuntime) -> bool:
        return False  # a cancelled run ends here, always

    def queued_or_running(self, user_id: str, thread_id: str) -> list[str]:
        lane = self._lanes.get(thread_id)
        if lane is None:
            return []
        ids = [e.run_id for e in lane.queue if e.user_id == user_id]
        if lane.running is not None and lane.running.user_id == user_id:
            ids.insert(0, lane.running.run_id)
        if lane.paused is not None and lane.paused_user == user_id:
            ids.insert(0, lane.paused)
        return ids

    async def thread_runs(self, user_id: str, thread_id: str) -> list[str]:
        """Every run of an embedded server is in this process's lanes."""
        return self.queued_or_running(user_id, thread_id)

    async def wait_ended(self, user_id: str, run_id: str) -> None:
        """Nothing to wait for: a run not in this process's memory is not executing."""

    # Scheduling -------------------------------------------------------------------------------

    def _enqueue(self, run: Run, session: UserSession) -> None:
        execution = RunExecution.of(run)
        self._host.runs[run.id] = execution
        lane = self._lanes.get(run.thread_id)
        if lane is None:
            lane = self._lanes[run.thread_id] = Lane()
        lane.queue.append(execution)
        session.queued += 1
        if lane.free and len(lane.queue) == 1:
            self._mark_ready(session, run.thread_id)

    def _mark_ready(self, session: UserSession, thread_id: str) -> None:
        session.ready_threads.append(thread_id)
        if not session.in_ready_users:
            session.in_ready_users = True
            self._ready_users.append(session.user_id)

    def pump(self) -> None:
        """Start every run the limits allow, users taking turns."""
        host = self._host
        limit = user_run_limit(self.settings, self.busy())
        while (
            host.running_count < self.settings.max_runs and self._ready_users and not self._stopped
        ):
            user_id = self._ready_users.popleft()
            session = self.sessions.get(user_id)
            session.in_ready_users = False
            if session.running >= limit:
                continue  # re-queued when one of its runs finishes
            lane = None
            while session.ready_threads:
                candidate = self._lanes.get(session.ready_threads.popleft())
                if candidate is not None and candidate.free and candidate.queue:
                    lane = candidate
                    break
            if lane is None:
                continue
            execution = lane.queue.popleft()
            lane.running = execution
            session.queued -= 1
            host.launch(execution, session)
            if session.running < limit and session.ready_threads:
                session.in_ready_users = True
                self._ready_users.append(user_id)

    def ended(self, execution: RunExecution, session: UserSession) -> None:
        """The thread's next run becomes ready (or the idle lane goes), the user takes a turn."""
        thread_id = execution.thread_id
        lane = self._lanes.get(thread_id)
        if lane is not None:
            lane.running = None
            resumed = bool(lane.queue) and lane.queue[0].run_id == execution.run_id
            if execution.status is RunStatus.REQUIRES_ACTION and not resumed:
                # It holds the thread, not its slot.
                lane.paused, lane.paused_user = execution.run_id, execution.user_id
            elif lane.queue:
                self._mark_ready(session, thread_id)
            else:
                del self._lanes[thread_id]
        self._take_turn(session)

    def _take_turn(self, session: UserSession) -> None:
        if session.ready_threads and not session.in_ready_users:
            session.in_ready_users = True
            self._ready_users.append(session.user_id)

    # Runs waiting for a person ----------------------------------------------------------------

    def resumed(self, run: Run) -> None:
        """The waiting run goes first in its thread's lane, to start when a slot allows."""
        session = self.sessions.get(run.user_id)
        execution = RunExecution.of(run)
        self._host.runs[run.id] = execution
        lane = self._lanes.setdefault(run.thread_id, Lane())
        lane.queue.appendleft(execution)
        session.queued += 1
        if lane.paused == run.id:
            lane.paused = None
        if lane.running is None:  # else the pausing execution is still ending: it marks it
            self._mark_ready(session, run.thread_id)
            self._take_turn(session)
            self.pump()

    def unpaused(self, user_id: str, thread_id: str, run_id: str) -> None:
        """The waiting run ended (cancelled): the thread's next run may start."""
        lane = self._lanes.get(thread_id)
        if lane is None:
            return
        if lane.running is not None and lane.running.run_id == run_id:
            lane.running.status = RunStatus.CANCELLED  # still ending its pause: hold nothing
            return
        if lane.paused != run_id:
            return
        lane.paused = None
        session = self.sessions.get(user_id)
        if lane.queue:
            self._mark_ready(session, thread_id)
            self._take_turn(session)
            self.pump()
        elif lane.running is None:
            del self._lanes[thread_id]
