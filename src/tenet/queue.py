"""Where accepted runs wait, and who starts them: the one part of the engine that varies.

The :class:`~tenet.engine.Engine` accepts, executes, cancels and waits for runs
the same way in every deployment; what differs is the queue it is given:

- :class:`~tenet.local_queue.LocalQueue` (one process): the queue is in memory,
  one lane per thread, users taking turns, the per-user counters of
  :class:`~tenet.sessions.UserSession`; at start it settles what a dead
  predecessor left in the store.
- :class:`~tenet.cluster.ClusterQueue` (many processes): the queue is the
  ``runs`` table; each process claims runnable runs, heartbeats them, sweeps the
  runs of dead processes, and passes cancels and wake-ups over the bus.

A queue starts a run by handing a :class:`~tenet.run_lifecycle.RunExecution` to
its :class:`QueueHost` (``launch``), which executes it and calls back
``ended`` then ``pump`` when its task ends.
"""

from __future__ import annotations

from typing import Protocol

from .events import RunStart
from .run_lifecycle import RunExecution, RunSettler
from .runtime import RunRuntime
from .sessions import UserSession
from .settings import Settings
from .store.tables import Run


def user_run_limit(settings: Settings, busy: bool) -> int:
    """Runs one user may have running now: ``TENET_USER_MAX_RUNS``, or fewer while the
    event loop is busy (``TENET_USER_MAX_RUNS_BUSY``: the loop is shared by users, so a
    user's share must not grow with the runs it starts at once)."""
    if busy:
        return min(settings.user_max_runs, settings.user_max_runs_busy)
    return settings.user_max_runs


class QueueHost(Protocol):
    """What a queue uses from the engine it feeds."""

    #: This process's name in the store (``host:pid:random``): the worker of its runs.
    worker_id: str
    #: The runs in memory (queued here, or executing here), by run id.
    runs: dict[str, RunExecution]
    settler: RunSettler

    @property
    def running_count(self) -> int:
        """How many runs execute in this process now (``TENET_MAX_RUNS`` bounds it)."""

    def launch(self, execution: RunExecution, session: UserSession) -> None:
        """Start executing a run now, in a task of its own (it is already in ``runs``)."""

    def forget(self, execution: RunExecution) -> None:
        """The run left memory without executing: release its waiters."""


class RunQueue(Protocol):
    """The queue of accepted runs one engine starts from; see the module docstring."""

    def bind(self, host: QueueHost) -> None:
        """Attach to the engine that executes this queue's runs (once, before ``start``)."""

    async def start(self) -> None:
        """Begin starting runs (and recover what the store says is left to do)."""

    def stop(self) -> None:
        """Start nothing more; runs already executing go on."""

    async def quiesce(self) -> None:
        """Return once the runs this queue started just before ``stop`` are executing."""

    async def close(self) -> None:
        """Stop the queue's background work, after the engine's runs have ended."""

    def full(self, session: UserSession) -> bool:
        """True when the user may queue no more runs (as counted by this process)."""

    @property
    def stored_queue_limit(self) -> int | None:
        """A per-user queue limit the store checks as it stores a run (None: ``full`` does)."""

    def accepted(self, run: Run, session: UserSession) -> None:
        """A run was stored as ``queued``: schedule it."""

    async def cancel(
        self, user_id: str, run_id: str, reason: str, execution: RunExecution | None
    ) -> tuple[Run, bool]:
        """Cancel a run of ``user_id`` that is not executing here.

        Returns the run as stored and whether cancellation won (the run ends, or
        is ending, with ``run_cancelled``); the store decides against the run's own
        end (:mod:`tenet.store.run_end`). ``execution`` is the run's in-memory
        state here, if any. Raises ``NotFound`` for a missing or foreign run.
        """

    def run_start(self) -> RunStart | None:
        """What a run's first event stores as its start (None: its claim stored it)."""

    async def release(self, execution: RunExecution, runtime: RunRuntime) -> bool:
        """A cancelled run: True if the queue took it back (no end is written here)."""

    def ended(self, execution: RunExecution, session: UserSession) -> None:
        """A run's execution ended and its slot is free."""

    def pump(self) -> None:
        """Start what the limits now allow (called after a run ends)."""

    def resumed(self, run: Run) -> None:
        """A run that waited for a person was queued again (stored ``queued``): schedule it
        ahead of its thread's later runs."""

    def unpaused(self, user_id: str, thread_id: str, run_id: str) -> None:
        """A run that waited for a person ended without resuming: its thread is free."""

    def queued_or_running(self, user_id: str, thread_id: str) -> list[str]:
        """The ids of the user's runs of the thread this queue holds, the running one first."""

    async def thread_runs(self, user_id: str, thread_id: str) -> list[str]:
        """The user's runs of the thread not yet ended, on every process, oldest first."""

    async def wait_ended(self, user_id: str, run_id: str) -> None:
        """Return once a run not in this process's memory has ended (wherever it executes)."""
