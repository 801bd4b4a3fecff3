"""Answering a run that waits for a person: approvals, answers, timeouts, cancels.

A run that needs a person (a tool call that requires approval, ``ctx.ask``)
stores its requests and ends its execution (:mod:`tenet.journal`); its status is
``requires_action`` and it holds no task and no slot. This module is the other
side, the same on every process:

- :meth:`Approvals.approve` / :meth:`Approvals.respond` take a user's answer: the
  request is looked up under the caller's ``user_id`` (another user's is "not
  found", exactly like a missing one), checked (edited arguments against the
  tool's schema, a value against the question's schema: ``Invalid``), stored once
  (a second answer is a ``Conflict``), announced (``approval_resolved``,
  ``input_received``), and, when it was the run's last pending request, the run
  is queued again to resume (on whichever process claims it).
- The timeout sweep resolves requests left unanswered past their stored
  ``expires_at`` (``TENET_APPROVAL_TIMEOUT_S``) ``by: "timeout"``: the call is
  denied, the question gets None. Every process sweeps; the store lets one
  answer win. A person's answer that comes after ``expires_at`` but before a
  sweep does not count: it resolves the request by timeout itself and is
  refused (``Conflict``), so the deadline is exact whatever the sweep's lag.
- :meth:`Approvals.cancel_waiting` ends a waiting run that is cancelled: there is
  no task to stop, so the cancel's winner writes its ``run_cancelled``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Protocol

import jsonschema

from .clock import utc_now
from .context import RunContext
from .errors import Invalid, NotFound, TenetError, ToolFailed
from .events import APPROVAL_RESOLVED, INPUT_RECEIVED, RUN_CANCELLED, make_event
from .ids import is_valid
from .registry import AgentRegistry
from .run_lifecycle import RunExecution, RunSettler, bare_context
from .settings import Settings
from .store import approvals as stored
from .store.db import Store
from .store.writer import EventWriter
from .usage import run_usage
from .wire_value import check_storable

if TYPE_CHECKING:
    from .store.tables import Run

log = logging.getLogger("tenet.approvals")

#: The value of an answer that sent none (refused after the request is looked up, so
#: that another user's request is "not found" whatever the body).
MISSING: Any = object()

#: A note sent with an answer may have up to this many characters (a longer one is ``Invalid``).
NOTE_MAX_CHARS = 2_000


class WaitingRuns(Protocol):
    """What the queue does when a run stops or starts waiting (``tenet.queue.RunQueue``)."""

    def resumed(self, run: Run) -> None:
        """A waiting run was queued again: it resumes before later runs of its thread."""

    def unpaused(self, user_id: str, thread_id: str, run_id: str) -> None:
        """A waiting run ended without resuming (cancelled): its thread is free."""


class Approvals:
    """Answers, timeouts and cancels of waiting runs; see the module docstring."""

    def __init__(
        self,
        *,
        settings: Settings,
        store: Store,
        writer: EventWriter,
        registry: AgentRegistry,
        settler: RunSettler,
        queue: WaitingRuns,
    ) -> None:
        self.settings = settings
        self.store = store
        self.writer = writer
        self.registry = registry
        self.settler = settler
        self.queue = queue
        self._task: asyncio.Task[None] | None = None
        #: Requests this process resolved by timeout (metrics, tests).
        self.timed_out = 0

    # Answers ----------------------------------------------------------------------------------

    async def approve(
        self,
        user_id: str,
        run_id: str,
        call_id: Any,
        approved: Any,
        arguments: Any = None,
        note: Any = None,
    ) -> Run:
        """A user's decision on a tool call waiting for approval; returns the run.

        ``NotFound`` for a call that is not the user's or not waiting for approval,
        ``Conflict`` for a second answer, ``Invalid`` for a malformed decision or
        edited ``arguments`` the tool would refuse.
        """
        if not isinstance(call_id, str):
            raise NotFound()
        found = await stored.request(self.store, user_id, run_id, call_id, stored.APPROVAL)
        if not isinstance(approved, bool):
            raise Invalid("approved must be true or false")
        if note is not None and not isinstance(note, str):
            raise Invalid("note must be a string")
        if note is not None and len(note) > NOTE_MAX_CHARS:  # as HTTP's body model refuses it
            raise Invalid(f"note must be at most {NOTE_MAX_CHARS} characters")
        if arguments is not None:
            if not approved:
                raise Invalid("arguments can only be given with an approval")
            self._check_arguments(found, arguments)
            check_storable(arguments, "arguments")
        answer: dict[str, Any] = {"approved": approved, "by": "user"}
        if arguments is not None:
            answer["arguments"] = arguments
        if note:
            answer["note"] = note
        await self._resolve(user_id, run_id, call_id, stored.APPROVAL, answer)
        return await self.store.get_run(user_id, run_id)

    async def respond(self, user_id: str, run_id: str, request_id: Any, value: Any) -> Run:
        """A user's answer to a question; returns the run (errors as :meth:`approve`)."""
        if not isinstance(request_id, str):
            raise NotFound()
        found = await stored.request(self.store, user_id, run_id, request_id, stored.INPUT)
        if value is MISSING:
            raise Invalid("missing field 'value'")
        schema = found.body.get("schema")
        if schema is not None:
            try:
                jsonschema.validate(value, schema)
            except jsonschema.ValidationError as exc:
                raise Invalid(
                    f"the value does not match the question's schema: {exc.message}"
                ) from None
            except jsonschema.SchemaError as exc:  # the flow's schema is broken: say so
                raise Invalid(f"the question's schema is invalid: {exc.message}") from None
        check_storable(value, "value")
        await self._resolve(
            user_id, run_id, request_id, stored.INPUT, {"value": value, "by": "user"}
        )
        return await self.store.get_run(user_id, run_id)

    def _check_arguments(self, found: stored.Answered, arguments: Any) -> None:
        """Edited arguments are checked as the model's are (the call checks them again)."""
        if not isinstance(arguments, dict):
            raise Invalid("arguments must be an object")
        agent = self.registry.get(found.agent_name)
        tool = agent.tool(str(found.body.get("tool_name"))) if agent is not None else None
        if tool is None:
            return
        try:
            tool.validate(arguments)
        except ToolFailed as exc:
            raise Invalid(f"arguments: {exc.message}") from None

    async def _resolve(
        self, user_id: str, run_id: str, request_id: str, kind: str, answer: dict[str, Any]
    ) -> None:
        """Store the answer (first wins), announce it, and resume the run if it was the last.

        A person's answer to a request past its ``expires_at`` resolves it as the timeout
        sweep would have (``by: "timeout"``, here and now) and is refused with
        ``stored.Expired`` (a ``Conflict``): the sweep runs every few seconds, and an
        answer in that lag must not count as the user's.
        """
        by_timeout = answer["by"] == "timeout"
        try:
            found = await stored.answer(
                self.store,
                user_id,
                run_id,
                request_id,
                kind,
                answer,
                None if by_timeout else utc_now(),
            )
        except stored.Expired:
            with contextlib.suppress(TenetError):  # the sweep may be resolving it right now
                await self._resolve(user_id, run_id, request_id, kind, timeout_answer(kind))
                self.timed_out += 1
            raise
        ctx = RunContext(
            user_id=user_id,
            thread_id=found.thread_id,
            run_id=run_id,
            execution_id=found.execution_id,
            agent_name=found.agent_name,
        )
        if kind == stored.APPROVAL:
            fields: dict[str, Any] = {
                "call_id": request_id,
                "approved": answer["approved"],
                "by": answer["by"],
            }
            for extra in ("arguments", "note"):
                if extra in answer:
                    fields[extra] = answer[extra]
            event = make_event(ctx, APPROVAL_RESOLVED, fields)
        else:
            event = make_event(ctx, INPUT_RECEIVED, {"request_id": request_id, "by": answer["by"]})
        await self.writer.write(event)
        await self.resume_if_ready(user_id, run_id)

    async def resume_if_ready(self, user_id: str, run_id: str) -> None:
        """Queue the waiting run again if nothing it asked is pending (once, anywhere)."""
        if await stored.resume(self.store, user_id, run_id):
            self.queue.resumed(await self.store.get_run(user_id, run_id))

    async def after_pause(self, execution: RunExecution) -> None:
        """A run just paused: answers that came while it stopped may have answered it all."""
        try:
            await self.resume_if_ready(execution.user_id, execution.run_id)
        except Exception:  # the sweep, or the next answer, resumes it
            log.exception("resuming run %s after its pause failed", execution.run_id)

    # Cancels ----------------------------------------------------------------------------------

    async def cancel_waiting(self, user_id: str, run_id: str, reason: str) -> Run | None:
        """End a waiting run with ``run_cancelled``; None if it was not waiting."""
        if not await stored.cancel_waiting(self.store, user_id, run_id):
            return None
        run = await self.store.get_run(user_id, run_id)
        ctx = bare_context(user_id, run.thread_id, run_id, run.agent)
        execution_id = (run.resume_state or {}).get("execution_id")
        if is_valid(execution_id, "exe"):  # its end carries the run's own execution
            ctx = replace(ctx, execution_id=execution_id)
        fields = {"status": "cancelled", "reason": reason, "usage": run_usage(run)}
        await self.writer.write(make_event(ctx, RUN_CANCELLED, fields))
        await self.store.finish_run(user_id, run_id, status="cancelled")
        self.settler.finished["cancelled"] += 1
        self.queue.unpaused(user_id, run.thread_id, run_id)
        return await self.store.get_run(user_id, run_id)

    # Timeouts ---------------------------------------------------------------------------------

    async def start(self) -> None:
        """Queue the runs a stopped process left answered but waiting, then sweep expired
        requests in the background (every process does both)."""
        for user_id, run_id in await stored.stranded(self.store):
            await self.resume_if_ready(user_id, run_id)
        if self._task is None:
            self._task = asyncio.create_task(self._sweep_loop(), name="tenet-approval-sweep")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    @property
    def sweep_every_s(self) -> float:
        """How often requests are checked for expiry: a tenth of the timeout, 0.1 to 5 s."""
        return min(5.0, max(0.1, self.settings.approval_timeout_s / 10))

    async def _sweep_loop(self) -> None:
        while True:
            await asyncio.sleep(self.sweep_every_s)
            try:
                await self.sweep_once()
            except Exception as exc:
                log.warning("sweeping expired requests failed: %s", exc)

    async def sweep_once(self) -> int:
        """Resolve every request past its expiry by ``timeout``; returns how many this did."""
        done = 0
        for user_id, run_id, request_id, kind in await stored.expired(self.store, utc_now()):
            try:
                await self._resolve(user_id, run_id, request_id, kind, timeout_answer(kind))
            except TenetError:  # answered, or its run deleted, meanwhile
                continue
            done += 1
        self.timed_out += done
        return done


def timeout_answer(kind: str) -> dict[str, Any]:
    """The answer of a request nobody answered in time: a denial, or a null value."""
    if kind == stored.APPROVAL:
        return {"approved": False, "by": "timeout"}
    return {"value": None, "by": "timeout"}
