"""AG-UI: a view of a thread's stored events in the Agent User Interaction protocol.

``POST /v1/agents/{agent}/ag-ui`` takes AG-UI's ``RunAgentInput``, starts an
ordinary tenet run (the same path as ``POST /v1/threads/{id}/runs``) and answers
``text/event-stream``: the run's stored events, each mapped to AG-UI events by
:class:`AgUiView`, encoded by the official ``ag-ui-protocol`` package. The
mapping is documented in ``docs/ag-ui.md``; nothing here is known to agents.

The client's ``threadId`` names a thread *of the caller* (see
:mod:`tenet.store.ag_ui_threads`). Every SSE message group carries ``id: <seq>``
of the tenet event it was made from, so ``GET
/v1/agents/{agent}/ag-ui/{threadId}/stream`` with ``Last-Event-ID`` sends the
rest of that run, with no gap and no duplicate: the view replays the run's
earlier events without sending them, so it is in the same state it was in when
the client dropped.

Bad input is answered before the stream starts, with the protocol's error body
(422 a body that is not a ``RunAgentInput``, 404 an unknown agent or thread);
once the stream has started, a failure is a ``RUN_ERROR``.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Annotated, Any

import orjson
from ag_ui.core import (
    BaseEvent,
    MessagesSnapshotEvent,
    ReasoningEndEvent,
    ReasoningMessageContentEvent,
    ReasoningMessageEndEvent,
    ReasoningMessageStartEvent,
    ReasoningStartEvent,
    RunAgentInput,
    RunErrorEvent,
    RunFinishedEvent,
    RunFinishedSuccessOutcome,
    RunStartedEvent,
    StateSnapshotEvent,
    StepFinishedEvent,
    StepStartedEvent,
    TextMessageContentEvent,
    TextMessageEndEvent,
    TextMessageStartEvent,
    ToolCallArgsEvent,
    ToolCallEndEvent,
    ToolCallResultEvent,
    ToolCallStartEvent,
)
from ag_ui.encoder import EventEncoder
from fastapi import APIRouter, Depends, Request
from pydantic import ValidationError
from starlette.responses import StreamingResponse

from .. import linear_re
from ..bus.follow import follow
from ..context import (
    CLIENT_CONTEXT_KEY,
    CLIENT_FORWARDED_PROPS_KEY,
    CLIENT_RESULTS_KEY,
    CLIENT_STATE_KEY,
    CLIENT_TOOLS_KEY,
    ClientInput,
)
from ..conversation import handed_over
from ..errors import Invalid, NotFound, TenetError
from ..events import (
    AGENT_COMPLETED,
    AGENT_ERROR,
    AGENT_STARTED,
    AGENT_THINKING,
    MESSAGE_DELTA,
    RUN_CANCELLED,
    TOOL_COMPLETED,
    TOOL_EXECUTING,
    is_terminal,
)
from ..store.ag_ui_threads import MAX_CLIENT_THREAD_ID, AgUiThreads
from ..wire_value import check_storable
from . import ag_ui_interrupts, ag_ui_messages
from .auth import Caller, current_caller, server_state
from .errors import remove_refused_thread
from .params import header_seq
from .query import OnceQueryRoute
from .routes import ERROR_RESPONSES
from .sse import check_stream_room, event_stream
from .state import ServerState

log = logging.getLogger("tenet.server.ag_ui")

router = APIRouter(responses=ERROR_RESPONSES, route_class=OnceQueryRoute)
CallerDep = Annotated[Caller, Depends(current_caller)]

#: Where a run started over AG-UI keeps the client's ids, in the run's ``metadata``.
META_KEY = "ag_ui"
#: Set in the run's ``ag_ui`` metadata when its stream opened with ``MESSAGES_SNAPSHOT``.
SNAPSHOT_KEY = "messages_snapshot"
#: Where ``RUN_STARTED.metadata`` holds tenet's own ``run_id`` and ``thread_id``.
TENET_METADATA_KEY = "tenet"
#: In the run's ``ag_ui`` metadata: ``[[after, runId], ...]``, one per ``RunAgentInput``
#: that resumed the run from interrupts: its events after ``seq`` ``after`` are that
#: ``runId``'s (before the first: the ``runId`` that started it).
RESUMED_KEY = "resumed"


def _resumes(ids: dict[str, Any]) -> list[tuple[int, str]]:
    """The well-formed ``[after, runId]`` entries of the run's resumes, in order."""
    resumed = ids.get(RESUMED_KEY)
    return [
        (entry[0], str(entry[1]))
        for entry in (resumed if isinstance(resumed, list) else ())
        if isinstance(entry, list) and len(entry) == 2 and isinstance(entry[0], int)
    ]


def resumed_at(ids: dict[str, Any]) -> set[int]:
    """The ``seq`` after which the run went on under a new ``runId`` (its pauses' ends)."""
    return {after for after, _ in _resumes(ids)}


def client_run_id_after(run_id: str, ids: dict[str, Any], seq: int | None) -> str:
    """The client's ``runId`` of the run's events after ``seq`` (None: from its start)."""
    found = str(ids.get("run_id") or run_id)
    if seq is None:
        return found
    for after, client_run_id in _resumes(ids):  # in the order they came: the last wins
        if after <= seq:
            found = client_run_id
    return found


class AgUiView:
    """Maps one run's stored tenet events, in order, to AG-UI events.

    It is stateful only in what AG-UI needs closed: the text message being
    streamed (``message_delta`` pieces of one execution form one message, closed
    by any other event) and whether the run's own agent streamed any text (if
    not, its final answer is sent as one message before ``RUN_FINISHED``). Ids it
    makes are derived from the run's ids and the order of its events, so a view
    fed the same events makes the same ids: that is what lets a resumed stream
    continue the client's messages.
    """

    def __init__(
        self,
        *,
        run_id: str,
        client_thread_id: str,
        client_run_id: str,
        thread_id: str | None = None,
        opening: list[BaseEvent] | None = None,
    ) -> None:
        self.run_id = run_id
        self.thread_id = thread_id
        self.client_thread_id = client_thread_id
        self.client_run_id = client_run_id
        self._open_text: str | None = None
        self._open_execution: str | None = None
        self._root_execution: str | None = None
        self._root_streamed = False
        self._count = 0
        #: Calls of client tools: handed to the client, answered by its next run.
        self._pending: list[str] = []
        #: Calls made in this run (a result for any other is the client's own, not shown).
        self._calls: set[str] = set()
        #: Sent right after ``RUN_STARTED`` (snapshots of messages and state).
        self.opening = opening or []
        self.finished = False

    def _id(self, kind: str) -> str:
        self._count += 1
        return f"{self.run_id}-{kind}-{self._count}"

    def _close_text(self) -> list[BaseEvent]:
        if self._open_text is None:
            return []
        message_id, self._open_text, self._open_execution = self._open_text, None, None
        return [TextMessageEndEvent(message_id=message_id)]

    def _text(self, text: str) -> list[BaseEvent]:
        message_id = self._id("msg")
        return [
            TextMessageStartEvent(message_id=message_id, role="assistant"),
            TextMessageContentEvent(message_id=message_id, delta=text),
            TextMessageEndEvent(message_id=message_id),
        ]

    def map(self, event: dict[str, Any]) -> list[BaseEvent]:
        """The AG-UI events for one stored tenet event (none for a type not shown)."""
        kind = event.get("type")
        depth = event.get("depth", 0)
        if kind == MESSAGE_DELTA:
            text = str(event.get("text") or "")
            if not text:
                return []
            out: list[BaseEvent] = []
            execution = event.get("execution_id")
            if self._open_text is None or self._open_execution != execution:
                out += self._close_text()
                self._open_text = self._id("msg")
                self._open_execution = execution
                out.append(TextMessageStartEvent(message_id=self._open_text, role="assistant"))
            if execution == self._root_execution:
                self._root_streamed = True
            out.append(TextMessageContentEvent(message_id=self._open_text, delta=text))
            return out
        out = self._close_text()
        if kind == AGENT_STARTED:
            if depth == 0:
                self._root_execution = event.get("execution_id")
                # tenet's own ids, so a client can also use tenet's API (cancel, events).
                tenet = {"run_id": self.run_id, "thread_id": self.thread_id}
                out.append(
                    RunStartedEvent(
                        thread_id=self.client_thread_id,
                        run_id=self.client_run_id,
                        metadata={TENET_METADATA_KEY: tenet},
                    )
                )
                out += self.opening
            else:
                out.append(StepStartedEvent(step_name=str(event.get("agent_name"))))
        elif kind == AGENT_THINKING:
            reasoning = str(event.get("reasoning") or "")
            message_id = self._id("reasoning")
            out.append(ReasoningStartEvent(message_id=message_id))
            out.append(ReasoningMessageStartEvent(message_id=message_id, role="reasoning"))
            if reasoning:
                out.append(ReasoningMessageContentEvent(message_id=message_id, delta=reasoning))
            out.append(ReasoningMessageEndEvent(message_id=message_id))
            out.append(ReasoningEndEvent(message_id=message_id))
        elif kind == TOOL_EXECUTING:
            call_id = str(event.get("call_id"))
            self._calls.add(call_id)
            out.append(
                ToolCallStartEvent(tool_call_id=call_id, tool_call_name=str(event.get("tool_name")))
            )
            out.append(
                ToolCallArgsEvent(
                    tool_call_id=call_id,
                    delta=orjson.dumps(event.get("parameters") or {}).decode(),
                )
            )
            out.append(ToolCallEndEvent(tool_call_id=call_id))
        elif kind == TOOL_COMPLETED:
            call_id = str(event.get("call_id"))
            if call_id not in self._calls:  # the client's result for the last run's call
                return out
            if handed_over(event):
                self._pending.append(call_id)  # the client runs it: no result from here
                return out
            if event.get("ok"):
                content = event.get("results")
            else:
                content = {"error": event.get("error")}
            out.append(
                ToolCallResultEvent(
                    message_id=f"{call_id}-result",
                    tool_call_id=call_id,
                    content=content if isinstance(content, str) else orjson.dumps(content).decode(),
                    role="tool",
                )
            )
        elif kind in (AGENT_COMPLETED, AGENT_ERROR) and depth != 0:
            out.append(StepFinishedEvent(step_name=str(event.get("agent_name"))))
        elif kind == AGENT_COMPLETED:
            final = str(event.get("final_response") or "")
            if final and not self._root_streamed:
                out += self._text(final)
            outcome = None
            if self._pending:
                outcome = RunFinishedSuccessOutcome(pending_tool_call_ids=list(self._pending))
            out.append(
                RunFinishedEvent(
                    thread_id=self.client_thread_id,
                    run_id=self.client_run_id,
                    result=final,
                    outcome=outcome,
                )
            )
        elif kind == AGENT_ERROR:
            error = event.get("error") or {}
            out.append(
                RunErrorEvent(
                    message=str(error.get("message") or "the run failed"),
                    code=str(error.get("code") or "agent_error"),
                )
            )
        elif kind == RUN_CANCELLED:
            out.append(
                RunErrorEvent(
                    message=f"the run was cancelled ({event.get('reason') or 'user'})",
                    code="cancelled",
                )
            )
        if is_terminal(event):
            self.finished = True
        return out


def encode(events: list[BaseEvent], seq: int) -> bytes:
    """One SSE message per AG-UI event; the last carries ``id: <seq>`` of the tenet event.

    Only the last message of a group carries the id, so a client that drops in the
    middle of a group resumes from the previous tenet event and gets the whole
    group again, never half of it.
    """
    encoder = EventEncoder()
    parts = [encoder.encode(e) for e in events]
    parts[-1] = f"id: {seq}\n{parts[-1]}"
    return "".join(parts).encode()


def encode_unnumbered(events: list[BaseEvent]) -> bytes:
    """SSE messages made from no stored event (so without ``id:``)."""
    encoder = EventEncoder()
    return "".join(encoder.encode(e) for e in events).encode()


async def run_frames(
    state: ServerState,
    user_id: str,
    thread_id: str,
    view: AgUiView,
    *,
    after: int,
    send_after: int = 0,
    prelude: list[BaseEvent] | None = None,
) -> AsyncIterator[tuple[str, bytes]]:
    """The run's AG-UI frames: the thread's events after ``after``, of ``view.run_id``.

    Events up to ``send_after`` go through the view without being sent (to rebuild
    its state on a resume); ``prelude`` goes before the first event sent (the
    ``RUN_STARTED`` of a run resumed from interrupts). Ends after the run's terminal
    event, or with the interrupt outcome once the run waits for a person
    (:mod:`tenet.server.ag_ui_interrupts`). If reading the
    events fails (the store went away), the stream ends with a ``RUN_ERROR``
    (``unavailable``) after the last whole event, so the client knows to resume.
    """
    service = state.service
    waiting = ag_ui_interrupts.Waiting()
    try:
        async for body in follow(service.store, service.bus, user_id, thread_id, after=after):
            event = orjson.loads(body)
            if event.get("run_id") != view.run_id:
                continue
            mapped = view.map(event)
            live = event["seq"] > send_after
            if live and prelude:
                mapped, prelude = prelude + mapped, None
            asked = waiting.see(event)
            if asked and live:
                interrupts = await ag_ui_interrupts.paused(state, user_id, view.run_id, waiting)
                if interrupts:
                    mapped.append(
                        ag_ui_interrupts.finished(
                            view.client_thread_id, view.client_run_id, interrupts
                        )
                    )
                    yield body, encode(mapped, event["seq"])
                    return
            if mapped and live:
                yield body, encode(mapped, event["seq"])
            if view.finished:
                return
    except Exception:
        log.exception("AG-UI stream of run %s failed", view.run_id)
        failed = RunErrorEvent(
            message="the event stream broke; resume with Last-Event-ID", code="unavailable"
        )
        # Addressed to the stream's own user: the isolation guard checks that, as for events.
        yield orjson.dumps({"user_id": user_id}).decode(), encode_unnumbered([failed])


def _describe(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors()[:5]:
        loc = ".".join(str(p) for p in err.get("loc", ())) or "body"
        parts.append(f"{loc}: {err.get('msg', 'invalid')}")
    return "; ".join(parts) or "invalid request"


def parse_input(raw: bytes) -> RunAgentInput:
    """The request body as a ``RunAgentInput``; ``Invalid`` (422) if it is not one."""
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise Invalid("the body is not JSON") from None
    if not isinstance(data, dict):
        raise Invalid("the body must be a RunAgentInput object")
    try:
        run_input = RunAgentInput.model_validate(data)
    except ValidationError as exc:
        raise Invalid(_describe(exc)) from None
    if not run_input.thread_id or len(run_input.thread_id) > MAX_CLIENT_THREAD_ID:
        raise Invalid(f"threadId must be 1 to {MAX_CLIENT_THREAD_ID} characters")
    if not run_input.run_id or len(run_input.run_id) > MAX_CLIENT_THREAD_ID:
        raise Invalid(f"runId must be 1 to {MAX_CLIENT_THREAD_ID} characters")
    return run_input


def _agent_or_404(state: ServerState, agent: str) -> None:
    if agent not in state.service.registry:
        raise NotFound()


#: What a model accepts as a tool name (the OpenAI function-name rule).
TOOL_NAME = linear_re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def client_tools(state: ServerState, agent: str, run_input: RunAgentInput) -> list[dict[str, Any]]:
    """The front-end tools of ``run_input`` as client tool specs of the run.

    Raises ``Invalid`` for a name a model cannot take, a name given twice, or one
    that would shadow a tool of the agent (the server's tool would silently win).
    """
    found = state.service.registry.get(agent)
    own = {t.name for t in found.tools} if found is not None else set()
    tools: list[dict[str, Any]] = []
    for tool in run_input.tools or ():
        if not TOOL_NAME.match(tool.name):
            raise Invalid(f"front-end tool name {tool.name[:80]!r} is not a valid tool name")
        if tool.name in own:
            raise Invalid(f"front-end tool {tool.name!r} has the name of a tool of {agent}")
        if any(t["name"] == tool.name for t in tools):
            raise Invalid(f"front-end tool {tool.name!r} is given twice")
        parameters = tool.parameters if isinstance(tool.parameters, dict) else None
        tools.append(
            {
                "name": tool.name,
                "description": tool.description,
                "parameters": parameters or {"type": "object", "properties": {}},
            }
        )
    return tools


def opening(client: ClientInput, messages: list[Any] | None) -> list[BaseEvent]:
    """What follows ``RUN_STARTED``: the conversation when the client's differs, the state.

    ``MESSAGES_SNAPSHOT`` (the stored conversation the model is sent, this run's input
    last) replaces the client's list; ``STATE_SNAPSHOT`` echoes the state the client
    sent (tenet does not change it), when there is one.
    """
    out: list[BaseEvent] = []
    if messages is not None:
        out.append(MessagesSnapshotEvent(messages=messages))
    if client.state is not None:
        out.append(StateSnapshotEvent(snapshot=client.state))
    return out


def refused(run_input: RunAgentInput, error: Invalid) -> StreamingResponse:
    """A run refused once AG-UI expects a stream: ``RUN_STARTED`` then ``RUN_ERROR``."""
    events: list[BaseEvent] = [
        RunStartedEvent(thread_id=run_input.thread_id, run_id=run_input.run_id),
        RunErrorEvent(message=error.message, code=error.code),
    ]
    body = encode_unnumbered(events)

    async def once() -> AsyncIterator[bytes]:
        yield body

    return StreamingResponse(
        once(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"}
    )


@router.post(
    "/v1/agents/{agent}/ag-ui",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}, "description": "AG-UI events"}},
)
async def run_agent(agent: str, request: Request, caller: CallerDep) -> StreamingResponse:
    """Run ``agent`` on the caller's thread for ``threadId``; stream the run as AG-UI events."""
    state = server_state(request)
    service = state.service
    _agent_or_404(state, agent)
    run_input = parse_input(await request.body())
    if run_input.resume:
        return await resume_run(state, caller, agent, run_input)
    threads = AgUiThreads(service.store)
    open_calls: dict[str, dict[str, Any]] = {}
    if ag_ui_messages.answers_tool_calls(run_input):  # results for the last run's calls?
        known = await threads.find_or_none(caller.user_id, run_input.thread_id)
        if known is not None:
            open_calls = await service.engine.conversations.open_client_calls(caller.user_id, known)
    text, results = ag_ui_messages.turn_input(run_input, open_calls)
    # Too large, over quota, queue full: answered before a thread is made.
    await service.engine.admit(caller.user_id, agent, text)
    await check_stream_room(state, caller)  # before the run is made: a 429 leaves nothing behind
    try:
        tools = client_tools(state, agent, run_input)
    except Invalid as exc:
        return refused(run_input, exc)
    context = [c.model_dump() for c in run_input.context or ()]
    # Kept with the run (one level down in its metadata): refused now, before a thread is made.
    forwarded = run_input.forwarded_props
    check_storable([tools, results, run_input.state, context, forwarded], "the body")
    ids: dict[str, Any] = {"thread_id": run_input.thread_id, "run_id": run_input.run_id}
    meta: dict[str, Any] = {META_KEY: ids}
    for key, value in (
        (CLIENT_TOOLS_KEY, tools),
        (CLIENT_RESULTS_KEY, results),
        (CLIENT_STATE_KEY, run_input.state),
        (CLIENT_CONTEXT_KEY, context),
        (CLIENT_FORWARDED_PROPS_KEY, forwarded),
    ):
        if value not in (None, {}, []):
            meta[key] = value
    client = ClientInput.of(meta)
    thread_id, made = await threads.open(
        caller.user_id, run_input.thread_id, limit=state.settings.max_threads_per_user
    )
    try:
        after = await service.store.last_seq(caller.user_id, thread_id)
        # The conversation this run will be sent, read before it exists (so without it).
        turns = await ag_ui_messages.conversation(
            service.engine.conversations,
            caller.user_id,
            thread_id,
            "",
            text,
            client,
            before=after + 1,
        )
        if ag_ui_messages.differs(run_input.messages, ag_ui_messages.to_ag_ui(turns)):
            ids[SNAPSHOT_KEY] = True  # so that the resume stream sends it too
        run = await service.engine.submit(
            caller.user_id, thread_id, agent, text, meta, admitted=True
        )
    except TenetError:
        # Refused after all (a cluster's queue is counted only as the run is stored;
        # requests racing for the last place all pass admit): its new thread goes.
        if made:
            removal = threads.discard(caller.user_id, run_input.thread_id, thread_id)
            await remove_refused_thread(removal, caller.user_id, thread_id)
        raise
    messages = None
    if ids.get(SNAPSHOT_KEY):
        messages = ag_ui_messages.to_ag_ui([(rid or run.id, m) for rid, m in turns])
    view = AgUiView(
        run_id=run.id,
        client_thread_id=run_input.thread_id,
        client_run_id=run_input.run_id,
        thread_id=thread_id,
        opening=opening(client, messages),
    )
    frames = run_frames(state, caller.user_id, thread_id, view, after=after)
    return await event_stream(state, caller, frames, name=f"ag-ui {run.id}")


async def resume_run(
    state: ServerState, caller: Caller, agent: str, run_input: RunAgentInput
) -> StreamingResponse:
    """Answer the interrupts of the caller's waiting run on ``threadId``; stream it on.

    Errors (404 an interrupt id not pending on the caller's thread, whoever's it
    is; 422 a malformed answer; 409 one answered meanwhile) come before the
    stream. The stream is the same tenet run, from ``RUN_STARTED`` with the
    client's new ``runId``: earlier events go through the view unsent, so its
    message ids continue.
    """
    store = state.service.store
    user_id = caller.user_id
    run_id = await ag_ui_interrupts.waiting_run(state, user_id, run_input.thread_id, agent)
    await check_stream_room(state, caller)
    run = await store.get_run(user_id, run_id)
    threads = AgUiThreads(store)
    first = await threads.run_first_seq(user_id, run.thread_id, run_id) or 1
    after = await store.last_seq(user_id, run.thread_id)  # before the answers' events
    # Noted before answering (while the run waits: once answered it may end at once, and
    # an ended run's row is not changed), so a later resume of this stream with
    # Last-Event-ID labels what follows ``after`` with this runId; taken back if refused.
    meta = dict(run.meta or {})
    ids = dict(meta.get(META_KEY) or {})
    ids[RESUMED_KEY] = [*([a, r] for a, r in _resumes(ids)), [after, run_input.run_id]]
    meta[META_KEY] = ids
    await store.update_run(user_id, run_id, metadata=meta)
    try:
        await ag_ui_interrupts.answer(state, user_id, run_id, list(run_input.resume or ()))
    except Exception:
        try:
            await store.update_run(user_id, run_id, metadata=run.meta or {})
        except Exception:  # left as is: a later resume from the same point supersedes it
            log.warning("taking back the refused resume of run %s failed", run_id)
        raise
    tenet = {"run_id": run_id, "thread_id": run.thread_id}
    view = AgUiView(
        run_id=run_id,
        client_thread_id=run_input.thread_id,
        client_run_id=run_input.run_id,
        thread_id=run.thread_id,
    )
    started = RunStartedEvent(
        thread_id=run_input.thread_id,
        run_id=run_input.run_id,
        metadata={TENET_METADATA_KEY: tenet},
    )
    frames = run_frames(
        state, user_id, run.thread_id, view, after=first - 1, send_after=after, prelude=[started]
    )
    return await event_stream(state, caller, frames, name=f"ag-ui {run_id}")


@router.get(
    "/v1/agents/{agent}/ag-ui/{client_thread_id}/stream",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}, "description": "AG-UI events"}},
)
async def resume_stream(
    agent: str, client_thread_id: str, request: Request, caller: CallerDep
) -> StreamingResponse:
    """The rest of a run after ``Last-Event-ID`` (without one: the latest run, whole)."""
    state = server_state(request)
    store = state.service.store
    _agent_or_404(state, agent)
    threads = AgUiThreads(store)
    thread_id = await threads.find(caller.user_id, client_thread_id)
    resume = header_seq(request.headers.get("last-event-id"))
    seq = resume if resume is not None else await store.last_seq(caller.user_id, thread_id)
    run_id = await threads.run_of_event(caller.user_id, thread_id, seq) if seq else None
    if run_id is None:
        raise NotFound()
    run = await store.get_run(caller.user_id, run_id)
    if run.agent != agent:
        raise NotFound()
    ids = (run.meta or {}).get(META_KEY) or {}
    first = await threads.run_first_seq(caller.user_id, thread_id, run_id) or seq
    opened: list[BaseEvent] = []
    if resume is None or resume < first:  # RUN_STARTED is sent: so is what followed it
        client = ClientInput.of(run.meta)
        messages = None
        if ids.get(SNAPSHOT_KEY):
            turns = await ag_ui_messages.conversation(
                state.service.engine.conversations,
                caller.user_id,
                thread_id,
                run_id,
                run.input,
                client,
                before=first,
            )
            messages = ag_ui_messages.to_ag_ui(turns)
        opened = opening(client, messages)
    view = AgUiView(
        run_id=run_id,
        client_thread_id=client_thread_id,
        client_run_id=client_run_id_after(run_id, ids, resume),
        thread_id=thread_id,
        opening=opened,
    )
    prelude: list[BaseEvent] = []
    if resume is not None and resume >= first and resume in resumed_at(ids):
        # The client has the interrupt and not yet the resumed run's RUN_STARTED.
        tenet = {"run_id": run_id, "thread_id": thread_id}
        prelude.append(
            RunStartedEvent(
                thread_id=client_thread_id,
                run_id=view.client_run_id,
                metadata={TENET_METADATA_KEY: tenet},
            )
        )
    frames = run_frames(
        state,
        caller.user_id,
        thread_id,
        view,
        after=first - 1,
        send_after=resume if resume is not None else 0,
        prelude=prelude,
    )
    return await event_stream(state, caller, frames, name=f"ag-ui {run_id}")
