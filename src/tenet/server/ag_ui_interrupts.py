"""AG-UI interrupts: a run waiting for a person, as AG-UI's ``RUN_FINISHED`` outcome.

A run that asks for an approval or an answer (``approval_requested``,
``input_requested``) pauses (``requires_action``). Over AG-UI its stream then
ends with ``RUN_FINISHED`` whose ``outcome`` is ``ag_ui.core.RunFinishedInterruptOutcome``:
one ``Interrupt`` per pending request, its ``id`` tenet's ``call_id`` /
``request_id``. The client answers with the next ``RunAgentInput``'s ``resume``
(``ag_ui.core.ResumeEntry``); :func:`answer` turns each entry into the answer
:class:`tenet.approvals.Approvals` takes from every other API (same checks, same
events, same resume of the run), and the stream follows the same tenet run on.

Ids are looked up under the caller only: the waiting run is the latest run of the
caller's own thread for ``threadId``, so another user's interrupt id answers
exactly as one that never existed (404 ``not_found``).
"""

from __future__ import annotations

from typing import Any

from ag_ui.core import Interrupt, ResumeEntry, RunFinishedEvent, RunFinishedInterruptOutcome

from ..errors import Invalid, NotFound
from ..events import APPROVAL_REQUESTED, APPROVAL_RESOLVED, INPUT_RECEIVED, INPUT_REQUESTED
from ..store import approvals as stored
from ..store.ag_ui_threads import AgUiThreads
from .state import ServerState

#: ``Interrupt.reason`` of an approval and of a question (AG-UI leaves it an open string).
APPROVAL_REASON = "tool_approval"
INPUT_REASON = "input_required"
#: The run status while it waits for a person.
WAITING = "requires_action"


class Waiting:
    """The requests of a run seen on its stream and not yet answered, as ``Interrupt``s."""

    def __init__(self) -> None:
        self.interrupts: dict[str, Interrupt] = {}

    def see(self, event: dict[str, Any]) -> bool:
        """Note a request or its answer; True for a request (the run may now be waiting)."""
        kind = event.get("type")
        if kind == APPROVAL_REQUESTED:
            call_id = str(event.get("call_id"))
            tool = str(event.get("tool_name"))
            self.interrupts[call_id] = Interrupt(
                id=call_id,
                reason=APPROVAL_REASON,
                message=f"Allow the call of {tool}?",
                tool_call_id=call_id,
                expires_at=event.get("expires_at"),
                metadata={"tool_name": tool, "parameters": event.get("parameters") or {}},
            )
            return True
        if kind == INPUT_REQUESTED:
            request_id = str(event.get("request_id"))
            schema = event.get("schema")
            self.interrupts[request_id] = Interrupt(
                id=request_id,
                reason=INPUT_REASON,
                message=str(event.get("prompt") or ""),
                response_schema=schema if isinstance(schema, dict) else None,
                expires_at=event.get("expires_at"),
            )
            return True
        if kind == APPROVAL_RESOLVED:
            self.interrupts.pop(str(event.get("call_id")), None)
        elif kind == INPUT_RECEIVED:
            self.interrupts.pop(str(event.get("request_id")), None)
        return False


async def paused(
    state: ServerState, user_id: str, run_id: str, waiting: Waiting
) -> list[Interrupt] | None:
    """The interrupts to end the stream with, or None if the run is not (yet) waiting.

    The last request of a pause is stored in the same transaction as the run's
    ``requires_action``; so once the run waits and every pending request has been
    seen on the stream, the pause is whole. A request answered meanwhile (through
    tenet's own API) is left out; if all are, the run goes on and so does the stream.
    """
    store = state.service.store
    run = await store.get_run(user_id, run_id)
    if run.status != WAITING:
        return None
    pending = await stored.pending(store, user_id, run_id)
    if not pending or any(p not in waiting.interrupts for p in pending):
        return None
    return [waiting.interrupts[p] for p in pending]


def finished(client_thread_id: str, client_run_id: str, interrupts: list[Interrupt]) -> Any:
    """``RUN_FINISHED`` with the interrupt outcome."""
    return RunFinishedEvent(
        thread_id=client_thread_id,
        run_id=client_run_id,
        outcome=RunFinishedInterruptOutcome(interrupts=interrupts),
    )


async def waiting_run(state: ServerState, user_id: str, client_thread_id: str, agent: str) -> str:
    """The id of the caller's run waiting on ``threadId``; ``NotFound`` if there is none."""
    store = state.service.store
    threads = AgUiThreads(store)
    thread_id = await threads.find_or_none(user_id, client_thread_id)
    if thread_id is None:
        raise NotFound()
    seq = await store.last_seq(user_id, thread_id)
    run_id = await threads.run_of_event(user_id, thread_id, seq) if seq else None
    if run_id is None:
        raise NotFound()
    run = await store.get_run(user_id, run_id)
    if run.status != WAITING or run.agent != agent:
        raise NotFound()
    return run_id


async def answer(state: ServerState, user_id: str, run_id: str, resume: list[ResumeEntry]) -> None:
    """Answer every pending request of the waiting run from ``resume`` entries.

    Each entry must name a pending request of the run (``NotFound`` otherwise, the
    same for another user's id as for an unknown one) and all of them must be
    answered at once (``Invalid``), as AG-UI's client requires. An approval:
    ``cancelled``, or ``resolved`` with payload ``false`` / ``{"approved": false}``,
    denies; ``true`` / ``{"approved": true, "arguments"?, "note"?}`` approves. A
    question: the payload is the value (``cancelled``: ``null``). Each is then
    checked and stored by :class:`tenet.approvals.Approvals`.
    """
    pending = await stored.pending(state.service.store, user_id, run_id)
    named = [entry.interrupt_id for entry in resume]
    if any(i not in pending for i in named):
        raise NotFound()
    if len(set(named)) != len(named):
        raise Invalid("resume names an interrupt twice")
    left = [p for p in pending if p not in named]
    if left:
        raise Invalid(f"resume must answer every pending interrupt; not answered: {left}")
    approvals = state.service.engine.approvals
    for entry in resume:
        payload = entry.payload if entry.status == "resolved" else None
        try:
            kind = await stored.request(
                state.service.store, user_id, run_id, entry.interrupt_id, stored.APPROVAL
            )
        except NotFound:
            kind = None
        if kind is not None:
            decision = payload if isinstance(payload, dict) else {"approved": payload}
            if entry.status == "cancelled":
                decision = {"approved": False}
            await approvals.approve(
                user_id,
                run_id,
                entry.interrupt_id,
                decision.get("approved"),
                decision.get("arguments"),
                decision.get("note"),
            )
        else:
            await approvals.respond(user_id, run_id, entry.interrupt_id, payload)
