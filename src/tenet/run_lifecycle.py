"""One run's lifecycle: its status, its execution and its settling.

A run is accepted as ``queued`` and stored first. When its queue starts it, a
:class:`RunExecution` executes it in a task of its own: it builds the run's
runtime and context, runs the agent under ``TENET_RUN_TIMEOUT_S``, and ends the
run with exactly one terminal event whatever happens (an exception, a timeout, a
cancel). A run whose end could not be stored because the store was unreachable
is handed to the :class:`RunSettler`, which settles it once the store answers
again; the settler also ends the runs that are not executing anywhere (a run
cancelled while queued, a run a dead process left).

The statuses (:class:`RunStatus`) are the strings stored in ``runs.status`` and
sent on the wire::

    queued -> running -> completed | failed | cancelled
              running <-> requires_action
    queued | running | requires_action -> cancelling -> cancelled

``requires_action`` is a run waiting for a person (an approval, an answer). Such
a run is data, not a task: it holds no task and no slot, and an answer re-enters
it from what is stored. Nothing enters that status yet.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Protocol

from .context import ClientInput, RunContext, current_context
from .conversation import Conversations
from .errors import Invalid, NotFound
from .events import AGENT_ERROR, RUN_CANCELLED, RunEnd, RunStart, make_event
from .ids import new_id
from .model_calls import ModelCalls
from .models.base import ChatModel
from .recovery import close_open_ends
from .registry import AgentRegistry
from .runtime import RunRuntime, error_of
from .sessions import UserSession
from .settings import Settings
from .store.db import Store
from .store.writer import EventWriter
from .tool_threads import ToolThreads
from .usage import RunUsage, run_usage

if TYPE_CHECKING:
    from .mcp_tools import MCPHub
    from .store.secrets import SecretBox
    from .store.tables import Run

log = logging.getLogger("tenet.engine")


class RunStatus(StrEnum):
    """A run's status: each member's value is the string stored and sent on the wire."""

    QUEUED = "queued"
    RUNNING = "running"
    #: Waiting for a person (an approval, an answer): stored only, no task, no slot.
    REQUIRES_ACTION = "requires_action"
    CANCELLING = "cancelling"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        """True for the statuses a run never leaves."""
        return self in _TERMINAL


_TERMINAL = frozenset({RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELLED})


def bare_context(user_id: str, thread_id: str, run_id: str, agent: str) -> RunContext:
    """A context for events written about a run that is not executing."""
    return RunContext(
        user_id=user_id,
        thread_id=thread_id,
        run_id=run_id,
        execution_id=new_id("exe"),
        agent_name=agent,
    )


class RunHost(Protocol):
    """What an execution uses from the engine that runs it (one host for all its runs)."""

    settings: Settings
    store: Store
    writer: EventWriter
    registry: AgentRegistry
    model: ChatModel
    settler: RunSettler
    #: Where the runs' synchronous tools execute.
    tool_threads: ToolThreads
    #: The process's MCP limits and the users' secrets (None: none configured).
    mcp: MCPHub | None
    secrets: SecretBox | None
    conversations: Conversations
    model_calls: ModelCalls

    def run_start(self) -> RunStart | None:
        """What a run's first event stores as its start (None: its queue stored it)."""

    async def release(self, execution: RunExecution, runtime: RunRuntime) -> bool:
        """A cancelled run: True if its queue took it back, so it writes no end here."""

    def ended(self, execution: RunExecution, session: UserSession) -> None:
        """The execution's task is ending (whatever happened): free its slot."""


@dataclass(eq=False, slots=True)
class RunExecution:
    """An accepted run while it is in memory (queued here, or executing here).

    ``status`` follows the stored status, except that it turns terminal as soon as
    the run's end is decided (its terminal event is being written): from then on a
    cancel is too late. ``done`` is set once the run has left memory.
    """

    run_id: str
    user_id: str
    thread_id: str
    agent: str
    input: str
    status: RunStatus = RunStatus.QUEUED
    task: asyncio.Task[None] | None = None
    cancel_reason: str | None = None
    done: asyncio.Event = field(default_factory=asyncio.Event)
    #: What the run's caller gave beside the input (client tools, results, state, context).
    client: ClientInput = field(default_factory=ClientInput)

    @classmethod
    def of(cls, run: Run) -> RunExecution:
        """The execution of a stored, queued run (either queue's way into memory)."""
        return cls(
            run.id,
            run.user_id,
            run.thread_id,
            run.agent,
            run.input,
            client=ClientInput.of(run.meta),
        )

    @property
    def cancellable(self) -> bool:
        """Executing here and its end not decided yet."""
        return self.status is RunStatus.RUNNING and self.task is not None

    def request_cancel(self, reason: str) -> bool:
        """Stop the run's task; the task writes ``run_cancelled``. False if too late."""
        if not self.cancellable:
            return False
        self.status = RunStatus.CANCELLING
        self.cancel_reason = reason
        self.task.cancel()  # type: ignore[union-attr]
        return True

    # Executing --------------------------------------------------------------------------------

    async def execute(self, host: RunHost, session: UserSession) -> None:
        """The run's task: execute it to its one terminal event, then free its slot."""
        settings = host.settings
        runtime = RunRuntime(
            sink=host.writer,
            store=host.store,
            registry=host.registry,
            model=host.model,
            session=session,
            tool_timeout=settings.tool_timeout_s,
            max_steps=settings.agent_max_steps,
            start=host.run_start(),
            tool_threads=host.tool_threads,
            mcp=host.mcp,
            secrets=host.secrets,
            conversations=host.conversations,
            calls=host.model_calls,
        )
        ctx = RunContext.for_run(
            user_id=self.user_id,
            thread_id=self.thread_id,
            run_id=self.run_id,
            agent_name=self.agent,
            runtime=runtime,
            client=self.client,
        )
        token = current_context.set(ctx)
        try:
            await self._run_to_end(host, ctx, runtime)
        except Exception:
            log.exception("run %s could not be finished cleanly", self.run_id)
            host.settler.later(self)
        finally:
            current_context.reset(token)
            host.ended(self, session)

    async def _run_to_end(self, host: RunHost, ctx: RunContext, runtime: RunRuntime) -> None:
        """Execute, then write exactly one terminal event and the final status."""
        try:
            agent = host.registry.get(self.agent)
            if agent is None:  # a queued run of an agent that is no longer served
                raise Invalid(f"agent {self.agent!r} is not available")
            async with asyncio.timeout(host.settings.run_timeout_s):
                await runtime.execute(ctx, agent, self.input)
                await runtime.flush()
        except TimeoutError:
            if not runtime.completing:
                self.status = RunStatus.FAILED
                limit = host.settings.run_timeout_s
                error = {"code": "timeout", "message": f"the run took longer than {limit:g}s"}
                await self._fail(host, ctx, runtime, error)
                return
        except asyncio.CancelledError:
            if not runtime.completing:
                self.status = RunStatus.CANCELLED
                reason = self.cancel_reason or "shutdown"
                await asyncio.shield(self._cancelled(host, ctx, runtime, reason))
                return
        except Exception as exc:
            self.status = RunStatus.FAILED
            await self._fail(host, ctx, runtime, error_of(exc))
            return
        self.status = RunStatus.COMPLETED
        # Raises unless the agent_completed, and with it the run's end, was stored.
        await runtime.flush()
        host.settler.finished["completed"] += 1

    async def _fail(
        self, host: RunHost, ctx: RunContext, runtime: RunRuntime, error: dict[str, str]
    ) -> None:
        await runtime.emit(
            ctx,
            AGENT_ERROR,
            {"status": "failed", "error": error, "depth": 0, "usage": runtime.usage.as_dict()},
            end=RunEnd("failed", error=error),
        )
        await runtime.flush()  # raises unless the event and the run's end were stored
        host.settler.finished["failed"] += 1

    async def _cancelled(
        self, host: RunHost, ctx: RunContext, runtime: RunRuntime, reason: str
    ) -> None:
        if await host.release(self, runtime):
            return
        await runtime.emit(
            ctx,
            RUN_CANCELLED,
            {"status": "cancelled", "reason": reason, "usage": runtime.usage.as_dict()},
            end=RunEnd("cancelled"),
        )
        await runtime.flush()  # raises unless the event and the run's end were stored
        host.settler.finished["cancelled"] += 1


class RunSettler:
    """Ends runs that are not executing: their terminal event, then their final status.

    ``finished`` counts the runs this process ended, by final status (metrics).
    """

    def __init__(self, store: Store, writer: EventWriter) -> None:
        self.store = store
        self.writer = writer
        self.finished: dict[str, int] = {"completed": 0, "failed": 0, "cancelled": 0}
        # Runs whose end could not be stored (the store was unreachable), settled once it is back.
        self._unsettled: dict[str, RunExecution] = {}
        self._task: asyncio.Task[None] | None = None

    async def settle(
        self, user_id: str, thread_id: str, run_id: str, agent: str, *, interrupted: str
    ) -> None:
        """End a run that is not executing here with its terminal event and status.

        ``interrupted`` is the status it was found in: a run being cancelled ends
        with ``run_cancelled``, a running one with ``agent_error`` code ``interrupted``.
        Before that end, what the run left open (tool calls, delegated executions)
        is closed with code ``interrupted`` (:mod:`tenet.recovery`).
        """
        ctx = bare_context(user_id, thread_id, run_id, agent)
        root = await self.store.admin_root_execution(run_id)
        if root is not None:  # the run's own agent had started: its end carries its execution
            ctx = replace(ctx, execution_id=root)
            await close_open_ends(self.store, self.writer, ctx)  # tool calls, delegations
        try:
            usage = run_usage(await self.store.get_run(user_id, run_id))
        except NotFound:  # deleted meanwhile: its end is written for its live readers
            usage = RunUsage().as_dict()
        if interrupted == RunStatus.CANCELLING:
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

    async def cancel_unstarted(
        self, user_id: str, thread_id: str, run_id: str, agent: str, reason: str
    ) -> None:
        """End a run that never started with ``run_cancelled`` (``reason``) and its status."""
        ctx = bare_context(user_id, thread_id, run_id, agent)
        fields = {"status": "cancelled", "reason": reason, "usage": RunUsage().as_dict()}
        await self.writer.write(make_event(ctx, RUN_CANCELLED, fields))
        await self.store.finish_run(user_id, run_id, status="cancelled")
        self.finished["cancelled"] += 1

    # Store outages ----------------------------------------------------------------------------

    def later(self, execution: RunExecution) -> None:
        """A run's end could not be stored: settle it in the background once the store is back."""
        self._unsettled[execution.run_id] = execution
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._settle_loop(), name="tenet-settler")

    async def close(self) -> None:
        """Stop settling (what is left is settled by the next start's recovery or sweeper)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _settle_loop(self) -> None:
        delay = 0.2
        while self._unsettled:
            await asyncio.sleep(delay)
            for run_id, execution in list(self._unsettled.items()):
                try:
                    await self._settle_unfinished(execution)
                except NotFound:
                    pass  # deleted meanwhile: nothing left to settle
                except Exception as exc:
                    log.warning("settling run %s failed (%s); will retry", run_id, exc)
                    delay = min(delay * 2, 5.0)
                    break
                self._unsettled.pop(run_id, None)
            else:
                delay = 0.2

    async def _settle_unfinished(self, execution: RunExecution) -> None:
        """Give a run that stopped without a stored end its one terminal event and status.

        If its terminal event was stored before the outage, only the status is fixed
        from it; otherwise it ends with ``agent_error`` code ``interrupted``
        (``run_cancelled`` if it was being cancelled).
        """
        run = await self.store.get_run(execution.user_id, execution.run_id)
        if run.status in _TERMINAL:
            return
        terminal = await self._stored_terminal(execution)
        if terminal is None:
            await self.settle(
                execution.user_id,
                execution.thread_id,
                execution.run_id,
                execution.agent,
                interrupted="cancelling" if run.status == RunStatus.CANCELLING else "running",
            )
            return
        status = terminal.get("status", "failed")
        await self.store.finish_run(
            execution.user_id,
            execution.run_id,
            status=status,
            output=terminal.get("final_response") if status == "completed" else None,
            error=terminal.get("error") if status == "failed" else None,
        )
        self.finished[status] = self.finished.get(status, 0) + 1

    async def _stored_terminal(self, execution: RunExecution) -> dict[str, Any] | None:
        return await self.store.run_terminal_event(execution.user_id, execution.run_id)
