"""The dispatcher and executor of runs.

A run is accepted as ``queued`` (stored first), waits in its thread's lane, and
is started when three limits allow: one running run per thread (runs of a thread
go in the order they were accepted), ``TENET_USER_MAX_RUNS`` per user and
``TENET_MAX_RUNS`` in all. Users with runnable work take turns, so a user with a
hundred queued runs does not delay a user with one. Each run executes in its
own task with a timeout; whatever happens inside it (an exception, a timeout, a
cancel) ends that run alone with exactly one terminal event.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from .context import RunContext, current_context
from .conversation import Conversations
from .errors import Invalid, NotFound, TooLarge, Unavailable, queue_full
from .events import AGENT_ERROR, RUN_CANCELLED, RunEnd, RunStart, make_event
from .ids import new_id
from .model_calls import ModelCalls
from .models.base import ChatModel
from .registry import AgentRegistry
from .runtime import RunRuntime, error_of
from .sessions import UserSession, UserSessions
from .settings import Settings
from .store.db import Store
from .store.tables import Run
from .store.writer import EventWriter
from .usage import Quota, RunUsage, UsageMeter, run_usage

log = logging.getLogger("tenet.engine")


@dataclass(eq=False)
class RunHandle:
    """An accepted run while it is in memory (queued or running)."""

    run_id: str
    user_id: str
    thread_id: str
    agent: str
    input: str
    state: str = "queued"  # queued -> running -> (cancelling) -> finishing -> done
    task: asyncio.Task[None] | None = None
    cancel_reason: str | None = None
    done: asyncio.Event = field(default_factory=asyncio.Event)


@dataclass(eq=False)
class Lane:
    """One thread's accepted runs, in order; at most one running."""

    queue: deque[RunHandle] = field(default_factory=deque)
    running: RunHandle | None = None


class Engine:
    """Accepts, schedules, executes and cancels runs; see the module docstring."""

    def __init__(
        self,
        *,
        settings: Settings,
        store: Store,
        writer: EventWriter,
        registry: AgentRegistry,
        sessions: UserSessions,
        model: ChatModel,
    ) -> None:
        self.settings = settings
        self.store = store
        self.writer = writer
        self.registry = registry.freeze()
        self.sessions = sessions
        self.model = model
        self.worker_id = f"{socket.gethostname()}:{os.getpid()}:{new_id('con')[4:12]}"
        self._runs: dict[str, RunHandle] = {}
        self._lanes: dict[str, Lane] = {}
        self._ready_users: deque[str] = deque()
        self._running_total = 0
        self._closing = False
        self.finished: dict[str, int] = {"completed": 0, "failed": 0, "cancelled": 0}
        # Runs whose end could not be stored (the store was unreachable), settled once it is back.
        self._unsettled: dict[str, RunHandle] = {}
        self._settler: asyncio.Task[None] | None = None
        self.conversations = Conversations(
            store,
            context_tokens=settings.context_tokens,
            tool_result_max_chars=settings.tool_result_max_chars,
        )
        self.quota = Quota(store, settings.user_tokens_per_day)
        self.usage_meter = UsageMeter()
        self.model_calls = ModelCalls(
            conversations=self.conversations, quota=self.quota, meter=self.usage_meter
        )

    # Lifecycle --------------------------------------------------------------------------------

    async def start(self) -> None:
        """Settle what a previous process left, then start scheduling."""
        await self._recover()
        self._pump()

    async def _recover(self) -> None:
        """One process owns the store: fail its dead predecessor's running runs, requeue the queued."""
        for run in await self.store.admin_runs_with_status(["running", "cancelling"]):
            await self.settle(run.user_id, run.thread_id, run.id, run.agent, interrupted=run.status)
        for run in await self.store.admin_runs_with_status(["queued"]):
            self._enqueue(run, self.sessions.get(run.user_id))

    async def settle(
        self, user_id: str, thread_id: str, run_id: str, agent: str, *, interrupted: str
    ) -> None:
        """End a run that is not executing here with its terminal event and status.

        ``interrupted`` is the status it was found in: a run being cancelled ends
        with ``run_cancelled``, a running one with ``agent_error`` code ``interrupted``.
        """
        ctx = _bare_context(user_id, thread_id, run_id, agent)
        root = await self.store.admin_root_execution(run_id)
        if root is not None:  # the run's own agent had started: its end carries its execution
            ctx = replace(ctx, execution_id=root)
        try:
            usage = run_usage(await self.store.get_run(user_id, run_id))
        except NotFound:  # deleted meanwhile: its end is written for its live readers
            usage = RunUsage().as_dict()
        if interrupted == "cancelling":
            await self.writer.write(
                make_event(
                    ctx,
                    RUN_CANCELLED,
                    {"status": "cancelled", "reason": "interrupted", "usage": usage},
                )
            )
            await self.store.finish_run(user_id, run_id, status="cancelled")
            self.finished["cancelled"] += 1
        else:
            error = {
                "code": "interrupted",
                "message": "the server stopped while the run was running",
            }
            await self.writer.write(
                make_event(
                    ctx,
                    AGENT_ERROR,
                    {"status": "failed", "error": error, "depth": 0, "usage": usage},
                )
            )
            await self.store.finish_run(user_id, run_id, status="failed", error=error)
            self.finished["failed"] += 1

    async def close(self, *, grace_s: float = 0.0) -> None:
        """Stop: refuse new runs, let running ones finish for ``grace_s``, cancel the rest.

        Queued runs stay queued in the store and are picked up by the next start.
        """
        self._closing = True
        running = [h for h in self._runs.values() if h.task is not None]
        if running and grace_s > 0:
            await asyncio.wait([h.task for h in running if h.task], timeout=grace_s)
        for handle in list(self._runs.values()):
            self._cancel_task(handle, "shutdown")
        tasks = [h.task for h in self._runs.values() if h.task is not None]
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        # A task cancelled before its first step never runs its cleanup, and queued
        # runs never start: release their waiters (the store keeps them for next start).
        for handle in list(self._runs.values()):
            self._forget(handle)
        if self._settler is not None:
            self._settler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._settler
            self._settler = None

    @property
    def accepting(self) -> bool:
        return not self._closing

    def stop_accepting(self) -> None:
        """Refuse new runs (``Unavailable``) and start no queued one; running runs go on."""
        self._closing = True

    async def drain(self, grace_s: float, *, abort: Callable[[], bool] | None = None) -> None:
        """Graceful shutdown: refuse new runs, let running ones finish for ``grace_s``, then close.

        ``abort`` is polled while waiting (a second Ctrl-C cuts the grace short).
        """
        self.stop_accepting()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace_s
        while (
            any(h.task is not None and not h.task.done() for h in self._runs.values())
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

    async def submit(
        self,
        user_id: str,
        thread_id: str,
        agent: str,
        input: str,
        metadata: dict[str, Any] | None = None,
    ) -> Run:
        """Store a queued run (and the user's message) and schedule it."""
        if self._closing:
            raise Unavailable("the server is shutting down")
        self.check_request(agent, input)
        await self.quota.check(user_id)
        session = self.sessions.get(user_id)
        if self._queue_full(session):
            raise queue_full(self.settings.user_max_queued)
        session.queued += 1  # reserved before the await, so concurrent submits see it
        try:
            run = await self.store.create_run(
                user_id, thread_id, agent, input, metadata, max_queued=self._stored_queue_limit()
            )
        except BaseException:
            session.queued -= 1
            raise
        session.queued -= 1
        self._accepted(run, session)
        return run

    def _queue_full(self, session: UserSession) -> bool:
        """This process's own count: every queued run of an embedded server is here."""
        return session.queued >= self.settings.user_max_queued

    def _stored_queue_limit(self) -> int | None:
        """A queue limit the store checks as it stores the run (None: checked here)."""
        return None

    def _accepted(self, run: Run, session: UserSession) -> None:
        """A run was stored as queued: schedule it."""
        self._enqueue(run, session)
        self._pump()

    async def cancel(self, user_id: str, run_id: str, *, reason: str = "user") -> Run:
        """Cancel a queued or running run of ``user_id``; a finished run is returned as is."""
        handle = self._runs.get(run_id)
        if handle is None or handle.user_id != user_id:
            return await self.store.get_run(user_id, run_id)  # NotFound when foreign or missing
        if handle.state == "queued":
            lane = self._lanes.get(handle.thread_id)
            if lane is not None and handle in lane.queue:
                lane.queue.remove(handle)
            session = self.sessions.get(user_id)
            session.queued -= 1
            handle.state = "finishing"
            try:
                ctx = _bare_context(user_id, handle.thread_id, run_id, handle.agent)
                await self.writer.write(
                    make_event(
                        ctx,
                        RUN_CANCELLED,
                        {"status": "cancelled", "reason": reason, "usage": RunUsage().as_dict()},
                    )
                )
                await self.store.finish_run(user_id, run_id, status="cancelled")
                self.finished["cancelled"] += 1
            finally:
                self._forget(handle)
                self._drop_lane_if_idle(handle.thread_id)
        elif handle.state == "running" and handle.task is not None:
            self._cancel_task(handle, reason)
            await self.store.update_run(user_id, run_id, status="cancelling")
        return await self.store.get_run(user_id, run_id)

    def _cancel_task(self, handle: RunHandle, reason: str) -> bool:
        """Stop a run executing here; its task writes ``run_cancelled``. False if too late."""
        if handle.state != "running" or handle.task is None:
            return False
        handle.state = "cancelling"
        handle.cancel_reason = reason
        handle.task.cancel()
        return True

    async def wait(self, run_id: str) -> None:
        """Return once the run has finished (at once if it is not in memory)."""
        handle = self._runs.get(run_id)
        if handle is not None:
            await handle.done.wait()

    def queued_or_running(self, user_id: str, thread_id: str) -> list[str]:
        lane = self._lanes.get(thread_id)
        if lane is None:
            return []
        ids = [h.run_id for h in lane.queue if h.user_id == user_id]
        if lane.running is not None and lane.running.user_id == user_id:
            ids.insert(0, lane.running.run_id)
        return ids

    @property
    def running_count(self) -> int:
        return self._running_total

    def counts(self) -> dict[str, int]:
        queued = sum(1 for h in self._runs.values() if h.state == "queued")
        running = sum(1 for h in self._runs.values() if h.state in ("running", "finishing"))
        cancelling = sum(1 for h in self._runs.values() if h.state == "cancelling")
        return {"queued": queued, "running": running, "cancelling": cancelling, **self.finished}

    # Scheduling -------------------------------------------------------------------------------

    def _enqueue(self, run: Run, session: UserSession) -> None:
        handle = RunHandle(run.id, run.user_id, run.thread_id, run.agent, run.input)
        self._runs[run.id] = handle
        lane = self._lanes.get(run.thread_id)
        if lane is None:
            lane = self._lanes[run.thread_id] = Lane()
        lane.queue.append(handle)
        session.queued += 1
        if lane.running is None and len(lane.queue) == 1:
            self._mark_ready(session, run.thread_id)

    def _mark_ready(self, session: UserSession, thread_id: str) -> None:
        session.ready_threads.append(thread_id)
        if not session.in_ready_users:
            session.in_ready_users = True
            self._ready_users.append(session.user_id)

    def _pump(self) -> None:
        """Start every run the limits allow, users taking turns."""
        limit = self.settings.user_max_runs
        while (
            self._running_total < self.settings.max_runs and self._ready_users and not self._closing
        ):
            user_id = self._ready_users.popleft()
            session = self.sessions.get(user_id)
            session.in_ready_users = False
            if session.running >= limit:
                continue  # re-queued when one of its runs finishes
            lane = None
            while session.ready_threads:
                candidate = self._lanes.get(session.ready_threads.popleft())
                if candidate is not None and candidate.running is None and candidate.queue:
                    lane = candidate
                    break
            if lane is None:
                continue
            handle = lane.queue.popleft()
            lane.running = handle
            session.queued -= 1
            session.running += 1
            self._running_total += 1
            handle.state = "running"
            handle.task = asyncio.create_task(
                self._execute(handle, session), name=f"run {handle.run_id}"
            )
            if session.running < limit and session.ready_threads:
                session.in_ready_users = True
                self._ready_users.append(user_id)

    def _forget(self, handle: RunHandle) -> None:
        handle.state = "done"
        self._runs.pop(handle.run_id, None)
        handle.done.set()

    def _drop_lane_if_idle(self, thread_id: str) -> None:
        lane = self._lanes.get(thread_id)
        if lane is not None and lane.running is None and not lane.queue:
            del self._lanes[thread_id]

    # Executing --------------------------------------------------------------------------------

    async def _execute(self, handle: RunHandle, session: UserSession) -> None:
        runtime = RunRuntime(
            sink=self.writer,
            store=self.store,
            registry=self.registry,
            model=self.model,
            session=session,
            tool_timeout=self.settings.tool_timeout_s,
            max_steps=self.settings.agent_max_steps,
            start=self._run_start(),
            conversations=self.conversations,
            calls=self.model_calls,
        )
        ctx = RunContext.for_run(
            user_id=handle.user_id,
            thread_id=handle.thread_id,
            run_id=handle.run_id,
            agent_name=handle.agent,
            runtime=runtime,
        )
        token = current_context.set(ctx)
        try:
            await self._run_to_end(handle, ctx, runtime)
        except Exception:
            log.exception("run %s could not be finished cleanly", handle.run_id)
            self._settle_later(handle)
        finally:
            current_context.reset(token)
            session.running -= 1
            session.touch()
            self._running_total -= 1
            lane = self._lanes.get(handle.thread_id)
            if lane is not None:
                lane.running = None
                if lane.queue:
                    self._mark_ready(session, handle.thread_id)
                else:
                    del self._lanes[handle.thread_id]
            if session.ready_threads and not session.in_ready_users:
                session.in_ready_users = True
                self._ready_users.append(session.user_id)
            self._forget(handle)
            self._pump()

    def _run_start(self) -> RunStart | None:
        """What a run's first event stores as its start: status ``running``, by this process."""
        return RunStart(self.worker_id)

    async def _run_to_end(self, handle: RunHandle, ctx: RunContext, runtime: RunRuntime) -> None:
        """Execute, then write exactly one terminal event and the final status."""
        try:
            agent = self.registry.get(handle.agent)
            if agent is None:  # a queued run of an agent that is no longer served
                raise Invalid(f"agent {handle.agent!r} is not available")
            async with asyncio.timeout(self.settings.run_timeout_s):
                await runtime.execute(ctx, agent, handle.input)
                await runtime.flush()
        except TimeoutError:
            handle.state = "finishing"
            if not runtime.completing:
                limit = self.settings.run_timeout_s
                error = {"code": "timeout", "message": f"the run took longer than {limit:g}s"}
                await self._fail(ctx, runtime, error)
                return
        except asyncio.CancelledError:
            handle.state = "finishing"
            if not runtime.completing:
                reason = handle.cancel_reason or "shutdown"
                await asyncio.shield(self._cancelled(ctx, runtime, reason))
                return
        except Exception as exc:
            handle.state = "finishing"
            await self._fail(ctx, runtime, error_of(exc))
            return
        handle.state = "finishing"
        # Raises unless the agent_completed, and with it the run's end, was stored.
        await runtime.flush()
        self.finished["completed"] += 1

    async def _fail(self, ctx: RunContext, runtime: RunRuntime, error: dict[str, str]) -> None:
        await runtime.emit(
            ctx,
            AGENT_ERROR,
            {"status": "failed", "error": error, "depth": 0, "usage": runtime.usage.as_dict()},
            end=RunEnd("failed", error=error),
        )
        await runtime.flush()  # raises unless the event and the run's end were stored
        self.finished["failed"] += 1

    async def _cancelled(self, ctx: RunContext, runtime: RunRuntime, reason: str) -> None:
        await runtime.emit(
            ctx,
            RUN_CANCELLED,
            {"status": "cancelled", "reason": reason, "usage": runtime.usage.as_dict()},
            end=RunEnd("cancelled"),
        )
        await runtime.flush()  # raises unless the event and the run's end were stored
        self.finished["cancelled"] += 1

    # Store outages ----------------------------------------------------------------------------

    def _settle_later(self, handle: RunHandle) -> None:
        """A run's end could not be stored: settle it in the background once the store is back."""
        self._unsettled[handle.run_id] = handle
        if self._settler is None or self._settler.done():
            self._settler = asyncio.create_task(self._settle_loop(), name="tenet-settler")

    async def _settle_loop(self) -> None:
        delay = 0.2
        while self._unsettled:
            await asyncio.sleep(delay)
            for run_id, handle in list(self._unsettled.items()):
                try:
                    await self._settle_unfinished(handle)
                except NotFound:
                    pass  # deleted meanwhile: nothing left to settle
                except Exception as exc:
                    log.warning("settling run %s failed (%s); will retry", run_id, exc)
                    delay = min(delay * 2, 5.0)
                    break
                self._unsettled.pop(run_id, None)
            else:
                delay = 0.2

    async def _settle_unfinished(self, handle: RunHandle) -> None:
        """Give a run that stopped without a stored end its one terminal event and status.

        If its terminal event was stored before the outage, only the status is fixed
        from it; otherwise it ends with ``agent_error`` code ``interrupted``
        (``run_cancelled`` if it was being cancelled).
        """
        run = await self.store.get_run(handle.user_id, handle.run_id)
        if run.status in ("completed", "failed", "cancelled"):
            return
        terminal = await self._stored_terminal(handle)
        if terminal is None:
            await self.settle(
                handle.user_id,
                handle.thread_id,
                handle.run_id,
                handle.agent,
                interrupted="cancelling" if run.status == "cancelling" else "running",
            )
            return
        status = terminal.get("status", "failed")
        await self.store.finish_run(
            handle.user_id,
            handle.run_id,
            status=status,
            output=terminal.get("final_response") if status == "completed" else None,
            error=terminal.get("error") if status == "failed" else None,
        )
        self.finished[status] = self.finished.get(status, 0) + 1

    async def _stored_terminal(self, handle: RunHandle) -> dict[str, Any] | None:
        return await self.store.run_terminal_event(handle.user_id, handle.run_id)


def _bare_context(user_id: str, thread_id: str, run_id: str, agent: str) -> RunContext:
    """A context for events the engine writes about a run that is not executing."""
    return RunContext(
        user_id=user_id,
        thread_id=thread_id,
        run_id=run_id,
        execution_id=new_id("exe"),
        agent_name=agent,
    )
