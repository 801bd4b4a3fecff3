"""The engine: accepts, executes, cancels and waits for runs, from the queue it is given.

A run is accepted as ``queued`` (stored first) and handed to the engine's
:class:`~tenet.queue.RunQueue`, which decides when it starts: in one process the
in-memory lanes (:mod:`tenet.local_queue`), in a cluster the ``runs`` table
(:mod:`tenet.cluster`). A started run executes as a
:class:`~tenet.run_lifecycle.RunExecution` in its own task with a timeout;
whatever happens inside it (an exception, a timeout, a cancel) ends that run
alone with exactly one terminal event. The engine also stops: it refuses new
runs, gives running ones a grace period, then cancels the rest.
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Callable
from typing import Any

from .approvals import Approvals
from .conversation import Conversations
from .errors import Invalid, TooLarge, Unavailable, queue_full
from .events import RunStart
from .ids import new_id
from .mcp_tools import MCPHub
from .model_calls import ModelCalls
from .models.base import ChatModel
from .queue import RunQueue
from .registry import AgentRegistry
from .run_lifecycle import RunExecution, RunSettler, RunStatus
from .runtime import RunRuntime
from .sessions import UserSession, UserSessions
from .settings import Settings
from .store.db import Store
from .store.run_end import STARTED_OR_QUEUED, request_cancel
from .store.secrets import SecretBox
from .store.tables import Run
from .store.writer import EventWriter
from .thread_gate import ThreadGate
from .tool_threads import ToolThreads
from .usage import Quota, UsageMeter


class Engine:
    """Accepts, executes, cancels and waits for runs; see the module docstring."""

    def __init__(
        self,
        *,
        settings: Settings,
        store: Store,
        writer: EventWriter,
        registry: AgentRegistry,
        sessions: UserSessions,
        model: ChatModel,
        queue: RunQueue,
        mcp: MCPHub | None = None,
        secrets: SecretBox | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.writer = writer
        self.registry = registry.freeze()
        self.sessions = sessions
        self.model = model
        #: Per-process MCP limits and the secrets store, handed to every run.
        self.mcp = mcp
        self.secrets = secrets
        self.worker_id = f"{socket.gethostname()}:{os.getpid()}:{new_id('con')[4:12]}"
        #: The runs in memory (queued here, or executing here), by run id.
        self.runs: dict[str, RunExecution] = {}
        self.settler = RunSettler(store, writer)
        self.queue = queue
        #: Refuses runs of a thread while it is being deleted (:mod:`tenet.thread_gate`).
        self.thread_gate = ThreadGate()
        #: Where synchronous tools run, bounded per user (:mod:`tenet.tool_threads`).
        self.tool_threads = ToolThreads(settings.tool_threads, settings.tool_threads_per_user)
        self._running_total = 0
        self._closing = False
        #: Reads threads' conversations for runs (settings and the token estimate only).
        self.conversations = Conversations(
            store,
            context_tokens=settings.context_tokens,
            tool_result_max_chars=settings.tool_result_max_chars,
            cache_bytes=settings.history_cache_bytes,
        )
        self.quota = Quota(store, settings.user_tokens_per_day)
        self.usage_meter = UsageMeter()
        self.model_calls = ModelCalls(
            store=store,
            conversations=self.conversations,
            quota=self.quota,
            meter=self.usage_meter,
            delta_burst=settings.delta_burst,
            delta_interval_s=settings.delta_interval_ms / 1000,
        )
        queue.bind(self)
        #: Runs waiting for a person: answers, timeouts, cancels (:mod:`tenet.approvals`).
        self.approvals = Approvals(
            settings=settings,
            store=store,
            writer=writer,
            registry=self.registry,
            settler=self.settler,
            queue=queue,
        )

    @property
    def finished(self) -> dict[str, int]:
        """The runs this process ended, by final status."""
        return self.settler.finished

    # Lifecycle --------------------------------------------------------------------------------

    async def start(self) -> None:
        """Start the queue (which settles what a previous process left, where that is its job)."""
        await self.queue.start()
        await self.approvals.start()

    async def close(self, *, grace_s: float = 0.0) -> None:
        """Stop: refuse new runs, let running ones finish for ``grace_s``, cancel the rest.

        Queued runs stay queued in the store and are picked up by the next start.
        """
        self.stop_accepting()
        await self.queue.quiesce()
        running = [e for e in self.runs.values() if e.task is not None]
        if running and grace_s > 0:
            await asyncio.wait([e.task for e in running if e.task], timeout=grace_s)
        for execution in list(self.runs.values()):
            execution.request_cancel("shutdown")
        tasks = [e.task for e in self.runs.values() if e.task is not None]
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        # A task cancelled before its first step never runs its cleanup, and queued
        # runs never start: release their waiters (the store keeps them for next start).
        for execution in list(self.runs.values()):
            self.forget(execution)
        self.tool_threads.close()
        await self.approvals.close()
        await self.settler.close()
        await self.queue.close()

    @property
    def accepting(self) -> bool:
        return not self._closing

    def stop_accepting(self) -> None:
        """Refuse new runs (``Unavailable``) and start no queued one; running runs go on."""
        self._closing = True
        self.queue.stop()

    async def drain(self, grace_s: float, *, abort: Callable[[], bool] | None = None) -> None:
        """Graceful shutdown: refuse new runs, let running ones finish for ``grace_s``, then close.

        ``abort`` is polled while waiting (a second Ctrl-C cuts the grace short).
        """
        self.stop_accepting()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace_s
        while (
            any(e.task is not None and not e.task.done() for e in self.runs.values())
            and loop.time() < deadline
            and not (abort is not None and abort())
        ):
            await asyncio.sleep(0.05)
        await self.close(grace_s=0)

    # Accepting and cancelling -----------------------------------------------------------------

    def check_request(self, agent: Any, input: Any) -> None:
        """Raise the error a bad run request gets, before anything is stored."""
        if not isinstance(agent, str) or agent not in self.registry:
            raise Invalid(f"unknown agent {str(agent)[:100]!r}")
        if not isinstance(input, str):
            raise Invalid("input must be a string")
        if len(input) > self.settings.max_input_chars:
            raise TooLarge(f"input is longer than {self.settings.max_input_chars} characters")

    async def admit(self, user_id: str, agent: Any, input: Any) -> None:
        """Raise the refusal a run request gets without storing anything.

        ``unavailable`` while shutting down, ``invalid``/``too_large`` for a bad
        request (:meth:`check_request`), ``quota_exceeded`` over the day's tokens,
        ``rate_limited`` when this process counts the user's queue full. A caller
        that stores something before :meth:`submit` (a new thread) asks here first,
        so that a refused run costs no write and leaves nothing behind.
        """
        await self._admit(user_id, agent, input, quota=True)

    async def _admit(self, user_id: str, agent: Any, input: Any, *, quota: bool) -> None:
        if self._closing:
            raise Unavailable("the server is shutting down")
        self.check_request(agent, input)
        if quota:  # a store read when a quota is set: made once per run
            await self.quota.check(user_id)
        if self.queue.full(self.sessions.get(user_id)):
            raise queue_full(self.settings.user_max_queued)

    async def submit(
        self,
        user_id: str,
        thread_id: str,
        agent: str,
        input: str,
        metadata: dict[str, Any] | None = None,
        *,
        admitted: bool = False,
    ) -> Run:
        """Store a queued run (and the user's message) and schedule it.

        Raises what :meth:`admit` raises, and ``rate_limited`` when the store finds
        the user's queue full (in a cluster, where only the store counts it).
        ``admitted``: the caller has just called :meth:`admit` for this request, so
        the quota is not read again (the other checks cost nothing and are made again).
        """
        await self._admit(user_id, agent, input, quota=not admitted)
        session = self.sessions.get(user_id)
        queue = self.queue
        with self.thread_gate.entering(thread_id):  # NotFound while the thread is deleted
            session.queued += 1  # reserved before the await, so concurrent submits see it
            try:
                run = await self.store.create_run(
                    user_id, thread_id, agent, input, metadata, max_queued=queue.stored_queue_limit
                )
            except BaseException:
                session.queued -= 1
                raise
            session.queued -= 1
            queue.accepted(run, session)
        return run

    async def cancel(self, user_id: str, run_id: str, *, reason: str = "user") -> Run:
        """Cancel a queued or running run of ``user_id``; a finished run is returned as is."""
        run, _won = await self.cancel_request(user_id, run_id, reason=reason)
        return run

    async def cancel_request(
        self, user_id: str, run_id: str, *, reason: str = "user"
    ) -> tuple[Run, bool]:
        """Cancel a run; also whether cancellation won (the run ends with ``run_cancelled``).

        The store decides between the cancel and the run's own end, whichever comes
        first (:mod:`tenet.store.run_end`): a run whose end is already stored is
        returned as it ended, and False. A run started here is decided here (its
        start may not be stored yet); any other is the queue's to cancel. Raises
        ``NotFound`` for a missing or foreign run.
        """
        execution = self.runs.get(run_id)
        if execution is not None and execution.user_id != user_id:
            execution = None
        if execution is None or execution.task is None:
            run, won = await self.queue.cancel(user_id, run_id, reason, execution)
            if won or run.status != RunStatus.REQUIRES_ACTION:
                return run, won
            # It waits for a person: no task to stop, the cancel's winner ends it.
            waiting = await self.approvals.cancel_waiting(user_id, run_id, reason)
            if waiting is not None:
                return waiting, True
            resumed = self.runs.get(run_id)  # it was queued again meanwhile
            if resumed is not None and resumed.user_id != user_id:
                resumed = None
            return await self.queue.cancel(user_id, run_id, reason, resumed)
        self.writer.cancel_reasons.setdefault(run_id, reason)
        won = await request_cancel(self.store, user_id, run_id, from_statuses=STARTED_OR_QUEUED)
        run = await self.store.get_run(user_id, run_id)
        if won or run.status == RunStatus.CANCELLING:
            execution.request_cancel(reason)  # too late: the store turns its end into a cancel
            return run, True
        if run.status == RunStatus.REQUIRES_ACTION:  # it paused as the cancel came
            waiting = await self.approvals.cancel_waiting(user_id, run_id, reason)
            if waiting is not None:
                return waiting, True
        self.writer.cancel_reasons.pop(run_id, None)
        return run, False

    async def wait(self, run_id: str) -> None:
        """Return once the run has finished (at once if it is not in memory)."""
        execution = self.runs.get(run_id)
        if execution is not None:
            await execution.done.wait()

    def queued_or_running(self, user_id: str, thread_id: str) -> list[str]:
        return self.queue.queued_or_running(user_id, thread_id)

    async def thread_runs(self, user_id: str, thread_id: str) -> list[str]:
        """The thread's runs not yet ended, wherever they are queued or execute, oldest first."""
        return await self.queue.thread_runs(user_id, thread_id)

    async def wait_ended(self, user_id: str, run_id: str) -> None:
        """Return once the run has ended, wherever it executes."""
        if run_id in self.runs:
            await self.wait(run_id)
            return
        await self.queue.wait_ended(user_id, run_id)

    @property
    def running_count(self) -> int:
        return self._running_total

    def counts(self) -> dict[str, int]:
        """Runs in memory by status (a run whose end is being written counts as running)."""
        queued = sum(1 for e in self.runs.values() if e.status is RunStatus.QUEUED)
        cancelling = sum(1 for e in self.runs.values() if e.status is RunStatus.CANCELLING)
        running = len(self.runs) - queued - cancelling
        return {"queued": queued, "running": running, "cancelling": cancelling, **self.finished}

    # What the queue and the executions call ---------------------------------------------------

    def launch(self, execution: RunExecution, session: UserSession) -> None:
        """Start executing a run the queue let through (it is already in ``runs``)."""
        session.running += 1
        self._running_total += 1
        execution.status = RunStatus.RUNNING
        execution.task = asyncio.create_task(
            execution.execute(self, session), name=f"run {execution.run_id}"
        )

    def ended(self, execution: RunExecution, session: UserSession) -> None:
        """A run's task is ending: free its slots, let the queue start what now may start."""
        session.running -= 1
        session.touch()
        self._running_total -= 1
        self.queue.ended(execution, session)
        self.forget(execution)
        self.queue.pump()

    def forget(self, execution: RunExecution) -> None:
        """The run leaves memory: release its waiters."""
        if self.runs.get(execution.run_id) is execution:  # not its resumed successor
            del self.runs[execution.run_id]
        execution.done.set()

    async def paused(self, execution: RunExecution) -> None:
        """A run paused for a person: resume it at once if it was answered meanwhile."""
        await self.approvals.after_pause(execution)

    def run_start(self) -> RunStart | None:
        return self.queue.run_start()

    async def release(self, execution: RunExecution, runtime: RunRuntime) -> bool:
        return await self.queue.release(execution, runtime)
