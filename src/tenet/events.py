"""Event types, their wire form, and where a run's events go.

An event is one flat JSON object (PROTOCOL.md, Events). It is stamped from the
:class:`~tenet.context.RunContext` that produced it, never from arguments, given
its per-thread ``seq`` by the event writer, stored, and only then published.
It is serialized once, when stored; every reader (WebSocket, SSE, REST replay)
sends those same bytes.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Protocol

from .clock import now_us, wire_time
from .ids import new_id
from .wire_value import carriable

if TYPE_CHECKING:
    from .context import RunContext

AGENT_STARTED: Final = "agent_started"
AGENT_THINKING: Final = "agent_thinking"
MESSAGE_DELTA: Final = "message_delta"
TOOL_EXECUTING: Final = "tool_executing"
TOOL_COMPLETED: Final = "tool_completed"
AGENT_COMPLETED: Final = "agent_completed"
AGENT_ERROR: Final = "agent_error"
RUN_CANCELLED: Final = "run_cancelled"
APPROVAL_REQUESTED: Final = "approval_requested"
APPROVAL_RESOLVED: Final = "approval_resolved"
INPUT_REQUESTED: Final = "input_requested"
INPUT_RECEIVED: Final = "input_received"

EVENT_TYPES: Final = frozenset(
    {
        AGENT_STARTED,
        AGENT_THINKING,
        MESSAGE_DELTA,
        TOOL_EXECUTING,
        TOOL_COMPLETED,
        AGENT_COMPLETED,
        AGENT_ERROR,
        RUN_CANCELLED,
        APPROVAL_REQUESTED,
        APPROVAL_RESOLVED,
        INPUT_REQUESTED,
        INPUT_RECEIVED,
    }
)
#: The identity fields every event carries (a cancel that wins over a run's end keeps them).
IDENTITY_FIELDS: Final = (
    "type",
    "event_id",
    "seq",
    "user_id",
    "thread_id",
    "run_id",
    "execution_id",
    "agent_name",
    "timestamp",
)


def is_terminal(event: dict[str, Any]) -> bool:
    """True for the one event that ends a run."""
    t = event.get("type")
    return t == RUN_CANCELLED or (t in (AGENT_COMPLETED, AGENT_ERROR) and event.get("depth") == 0)


@dataclass(frozen=True, slots=True)
class RunEnd:
    """A run's final status, stored in the same transaction as its terminal event.

    So that a client that has seen the terminal event never reads the run as still
    running, and so that ending a run costs no transaction of its own.
    """

    status: str
    output: str | None = None
    error: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class RunStart:
    """A run's start (status ``running``), stored in the same transaction as its first event.

    So that starting a run costs it neither a transaction nor a wait of its own,
    and a run found ``running`` has made at least one event.
    """

    worker_id: str


@dataclass(frozen=True, slots=True)
class RunPause:
    """A request to a person, stored in the same transaction as the event announcing it.

    ``request`` is the request's row (see :mod:`tenet.store.approvals`): once a client
    has seen the event, the request can be answered. ``state``, on the last request
    of a pause, is what the run resumes from; storing it makes the run
    ``requires_action`` (see :mod:`tenet.journal`).
    """

    request: dict[str, Any]
    state: dict[str, Any] | None = None


@dataclass(slots=True)
class Event:
    """One event, as made by an emitter and, once stored, as delivered.

    ``data`` is the flat protocol object; ``json`` its serialized form, set when the
    writer assigns ``seq``. Routing fields are copied out so that the bus and the
    isolation guard need not parse anything. ``settled`` is set once the writer is
    done with it: stored and published, or failed with ``error``. ``start``, on a
    run's first event, and ``end``, on its terminal event, are the run's status
    changes, stored with them.
    """

    data: dict[str, Any]
    user_id: str
    thread_id: str
    run_id: str
    seq: int = 0
    json: str = ""
    #: When it was made, in microseconds since the epoch (see :mod:`tenet.clock`).
    created: int = 0
    settled: bool = False
    error: BaseException | None = None
    waiter: asyncio.Future[None] | None = None
    start: RunStart | None = None
    end: RunEnd | None = None
    #: A request to a person this event announces (``approval_requested``, ``input_requested``).
    pause: RunPause | None = None

    @property
    def type(self) -> str:
        return self.data["type"]


def make_event(ctx: RunContext, type: str, fields: dict[str, Any]) -> Event:
    """Build an event stamped from ``ctx``; ``fields`` cannot override the identity fields."""
    if type not in EVENT_TYPES:
        raise ValueError(f"unknown event type {type!r}")
    now = now_us()
    data: dict[str, Any] = {
        "type": type,
        "event_id": new_id("evt"),
        "seq": 0,
        "user_id": ctx.user_id,
        "thread_id": ctx.thread_id,
        "run_id": ctx.run_id,
        "execution_id": ctx.execution_id,
        "agent_name": ctx.agent_name,
        "timestamp": wire_time(now),
    }
    fields = carriable(fields, f"{type} event")  # fails this run alone, never the writer
    for key, value in fields.items():
        if key not in data:
            data[key] = value
    return Event(
        data=data, user_id=ctx.user_id, thread_id=ctx.thread_id, run_id=ctx.run_id, created=now
    )


class EventSink(Protocol):
    """Where emitted events go: the writer that numbers, stores, then publishes them."""

    @property
    def congested(self) -> bool: ...

    async def room(self) -> int: ...

    def submit(self, event: Event) -> None: ...

    def settled(self, event: Event) -> asyncio.Future[None]: ...
