"""What a run can do: emit events, call tools, delegate. One per run, never shared.

The :class:`RunRuntime` is the capability behind a :class:`~tenet.context.RunContext`.
Every event it emits is stamped from the context it is given (the execution
that produced it), so a tool event carries the execution id of the agent that
called the tool, and a delegated agent's events carry its own.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from .agents import Agent
from .clock import now_us, wire_time
from .context import RunContext, executing
from .errors import AgentFailed, DepthExceeded, ToolFailed
from .events import (
    AGENT_COMPLETED,
    AGENT_ERROR,
    AGENT_STARTED,
    AGENT_THINKING,
    APPROVAL_REQUESTED,
    INPUT_REQUESTED,
    MESSAGE_DELTA,
    TOOL_COMPLETED,
    TOOL_EXECUTING,
    Event,
    EventSink,
    RunEnd,
    RunPause,
    RunStart,
    make_event,
)
from .ids import new_id, token_hex
from .journal import Journal, RunPaused, key_of
from .mcp_tools import MCPHub, UserMCPSessions
from .models.base import ModelReply, ToolCall, Usage
from .models.metered import metered
from .store.notes import UserNotes
from .store.secrets import SecretBox, UserSecrets
from .store.tables import TURN_TYPES
from .text import HalfJoiner, repair
from .usage import RunUsage

if TYPE_CHECKING:
    from .conversation import Conversations
    from .model_calls import ModelCalls
    from .models.base import Callback, ChatMessage, ChatModel
    from .registry import AgentRegistry
    from .sessions import UserSession
    from .store.db import Store
    from .tool_threads import ToolThreads


#: The ``error`` of the ``tool_completed`` of a client tool's call: not run here, the
#: run's caller runs it (and a later run carries its result).
CLIENT_TOOL_ERROR: dict[str, str] = {
    "code": "client_tool",
    "message": "this tool runs in the client; the run ends here with the call handed over",
}

#: ``TENET_APPROVAL_TIMEOUT_S``'s default, for a runtime made without settings.
DEFAULT_APPROVAL_TIMEOUT_S = 86_400.0

#: A run waits for its events' commit at least this often (and before its end). It bounds
#: the burst one thread can publish at once: keep TENET_WS_QUEUE well above it.
FLUSH_EVERY = 16

#: The event types a turn is built from (``tenet.conversation``), collected as the run stores them.
_TURN_TYPES = frozenset(TURN_TYPES)


def error_of(exc: BaseException) -> dict[str, str]:
    """The ``{"code", "message"}`` an exception is reported as."""
    code = getattr(exc, "code", None)
    if not isinstance(code, str) or isinstance(exc, OSError):
        code = "agent_error"
    message = str(exc) or type(exc).__name__
    if code == "agent_error":
        message = f"{type(exc).__name__}: {message}"
    return {"code": code, "message": message[:1000]}


class RunRuntime:
    """The services one run uses, bound to that run's user."""

    def __init__(
        self,
        *,
        sink: EventSink,
        store: Store,
        registry: AgentRegistry,
        model: ChatModel,
        session: UserSession,
        tool_timeout: float,
        max_steps: int,
        start: RunStart | None = None,
        tool_threads: ToolThreads | None = None,
        mcp: MCPHub | None = None,
        secrets: SecretBox | None = None,
        conversations: Conversations | None = None,
        calls: ModelCalls,
        journal: Journal | None = None,
        approval_timeout_s: float = DEFAULT_APPROVAL_TIMEOUT_S,
    ) -> None:
        self.sink = sink
        self.store = store
        self.registry = registry
        #: The server's model; a flow's direct call to it is one of the run's counted calls.
        self.model = metered(model)
        self.session = session
        self.tool_timeout = tool_timeout
        self.tool_threads = tool_threads
        self.max_steps = max_steps
        self.mcp = mcp or MCPHub()
        self.secrets = secrets or SecretBox(store, None)
        self._steps: dict[str, int] = {}
        #: The run's start, stored with its first event (None: already stored).
        self._start = start
        self._unflushed: list[Event] = []
        #: Events this run may still submit while the writer is congested (its turn).
        self._granted = 0
        #: Events this run has submitted (a run that has emitted none may be retried).
        self.emitted = 0
        #: Set once the run's own agent_completed is being written: from then on a
        #: cancel or timeout cannot end the run a second time.
        self.completing = False
        #: Surrogate halves held back between streamed pieces, per execution.
        self._halves = HalfJoiner()
        #: The thread's conversation, read from the store (None: no history).
        self.conversations = conversations
        #: How model calls are made, counted and checked against the quota.
        self.calls = calls
        #: What the run's awaits returned, replayed when it resumes after waiting for a
        #: person (:mod:`tenet.journal`).
        self.journal = journal or Journal()
        #: Tokens and model calls of the whole run, every execution included.
        self.usage = RunUsage(**self.journal.usage)
        #: How long a request to a person waits before it is resolved by ``timeout``.
        self.approval_timeout_s = approval_timeout_s
        #: The run's own execution id (kept across resumes) and when this segment began.
        self.root_execution_id: str | None = None
        self.segment_started = time.monotonic()
        #: Whether this execution stored requests to a person (it was pausing).
        self.asked = False
        #: Approval decisions of the current model turn, by call id, until its tools run.
        self._decisions: dict[str, dict[str, Any]] = {}
        #: The stored text of the run's turn events so far (``TURN_TYPES``), kept built for
        #: the thread's next run once the run's end is stored (:meth:`_keep_turn`). None: not
        #: kept (no conversations; a resumed run, whose earlier events this process did not
        #: make; an event that may not have been stored; a turn too long to keep).
        self._turn: list[str] | None = (
            [] if conversations is not None and self.journal.execution_id is None else None
        )
        self._turn_bytes = 0

    async def history(self, ctx: RunContext) -> list[ChatMessage]:
        """The thread's turns before this run, within the context budget (a fresh list)."""
        if self.conversations is None:
            return []
        return await self.conversations.history(
            ctx.user_id, ctx.thread_id, ctx.run_id, answered=ctx.client.answers()
        )

    async def complete(
        self,
        ctx: RunContext,
        model: ChatModel,
        messages: list[ChatMessage],
        tools: list[dict[str, Any]],
        *,
        on_delta: Callback | None = ...,  # type: ignore[assignment]
        on_reasoning: Callback | None = ...,  # type: ignore[assignment]
    ) -> ModelReply:
        """One model call of ``ctx``'s execution: counted, quota-checked, and streamed as
        the execution's events (``message_delta``, ``agent_thinking``) unless the caller
        gives its own callbacks (None: not streamed).

        A resumed run gets the reply it got before, without calling the model again.
        """
        entry = self.journal.replayed("model", None)
        if entry is not None:
            return _reply_of(entry["r"])
        reply = await self.calls.complete(
            self.usage,
            ctx,
            model,
            messages,
            tools,
            on_delta=on_delta,
            on_reasoning=on_reasoning,
        )
        self.journal.record("model", None, r=_reply_json(reply))
        return reply

    async def emit(
        self,
        ctx: RunContext,
        type: str,
        fields: dict[str, Any],
        *,
        end: RunEnd | None = None,
        pause: RunPause | None = None,
    ) -> None:
        """Submit one event; it is stored, then published, in order.

        The run's first event carries its start (status ``running``) and ``end``, on
        the run's terminal event, its final status: each is stored in the same
        transaction as its event.

        The run does not wait for each event's commit: it waits every
        ``FLUSH_EVERY`` events and before the run's status changes (:meth:`flush`),
        so one run's events share transactions and a slow disk costs the run one
        wait, not one per event. While the writer is congested, the run waits for
        its turn before making the event (so an event's timestamp is when it was
        made, not when it was queued).

        A resumed run does not make again the events it made before it paused
        (:mod:`tenet.journal`); ``pause`` is a request to a person, stored with its event.
        """
        if end is None and pause is None and self.journal.suppress():
            return
        if self._granted > 0:
            self._granted -= 1
        elif self.emitted and end is None and self.sink.congested:
            # A run's first and terminal events never wait their turn (two per run, so
            # the backlog stays bounded): its user sees at once that the run started,
            # and once a run is ending, no cancel or timeout can catch it between
            # deciding its end and submitting it (the run would end without one).
            self._granted = await self.sink.room() - 1
        event = make_event(ctx, type, fields)
        event.end = end
        event.pause = pause
        if self._start is not None:
            event.start, self._start = self._start, None
        self.sink.submit(event)
        self._unflushed.append(event)
        self.emitted += 1
        if len(self._unflushed) >= FLUSH_EVERY:
            await self.flush()

    async def flush(self) -> None:
        """Wait until every event submitted so far is stored; raises if one could not be.

        Once the run's terminal event is stored, its turn is kept built for the
        thread's next run (:meth:`_keep_turn`)."""
        pending, self._unflushed = self._unflushed, []
        if not pending:
            return
        # The writer settles events in the order they were submitted: once the last is
        # settled, so is every one before it.
        try:
            await asyncio.shield(self.sink.settled(pending[-1]))
        except BaseException:
            self._turn = None  # these events' text is not collected: the turn is not kept
            raise
        for event in pending:
            if event.error is not None:
                self._turn = None  # the store may lack one of the run's turn events
                raise event.error
        if self._turn is not None:
            self._collect_turn(pending)

    def _collect_turn(self, stored: list[Event]) -> None:
        """Add the stored text of the turn events among ``stored`` to the run's turn; keep
        the turn once its terminal event (the run's last) is among them."""
        turn = self._turn
        assert turn is not None and self.conversations is not None
        for event in stored:
            if event.type in _TURN_TYPES:
                turn.append(event.json)
                self._turn_bytes += len(event.json)
        if self._turn_bytes > self.conversations.turns_kept.max_bytes // 16:
            self._turn = None  # a turn this long would not be kept
            return
        last = stored[-1]
        if last.end is not None:
            self._turn = None
            self.conversations.keep_turn(last.user_id, last.thread_id, last.run_id, turn, last.seq)

    async def say(self, ctx: RunContext, text: str) -> None:
        """Emit a piece of the answer; a surrogate half split across pieces is joined."""
        text = self._halves.join(ctx.execution_id, str(text))
        if text:
            await self.emit(ctx, MESSAGE_DELTA, {"text": text})

    async def think(self, ctx: RunContext, reasoning: str) -> None:
        step = self._steps.get(ctx.execution_id, 0) + 1
        self._steps[ctx.execution_id] = step
        await self.emit(ctx, AGENT_THINKING, {"reasoning": str(reasoning), "step": step})

    async def call_tool(
        self, ctx: RunContext, name: str, arguments: dict[str, Any], *, call_id: str | None = None
    ) -> Any:
        """Run one tool call (after its approval, if it needs one); a resumed run's
        earlier calls return their recorded results without running again."""
        key = [name, arguments]
        entry = self.journal.replayed("tool", key)
        if entry is not None:
            if entry["ok"]:
                return entry.get("r")
            error = entry.get("e") or {}
            raise ToolFailed(str(error.get("code")), str(error.get("message")))
        try:
            result = await self._call_tool(ctx, name, arguments, call_id)
        except ToolFailed as exc:
            self.journal.record("tool", key, ok=False, e=exc.as_error())
            raise
        self.journal.record("tool", key, ok=True, r=result)
        return result

    async def _call_tool(
        self, ctx: RunContext, name: str, arguments: dict[str, Any], call_id: str | None
    ) -> Any:
        agent = self.registry.get(ctx.agent_name)
        tool = agent.tool(name) if agent is not None else None
        call_id = call_id or "call_" + token_hex(8)
        if tool is not None and tool.needs_approval(ctx, arguments):
            decision = self._decisions.pop(call_id, None)
            if decision is None:
                await self.request_approvals(ctx, [(call_id, name, arguments)])
                decision = self._decisions.pop(call_id)
            if not decision["ok"]:
                note = decision.get("note")
                message = "the user declined this call" + (f": {note}" if note else "")
                if decision.get("by") == "timeout":
                    message = "nobody approved this call in time"
                error = {"code": "declined", "message": message}
                fields = {"tool_name": name, "call_id": call_id, "ok": False, "error": error}
                await self.emit(ctx, TOOL_COMPLETED, {**fields, "duration_ms": 0.0})
                raise ToolFailed("declined", message)
            if decision.get("args") is not None:
                arguments = decision["args"]
        await self.emit(
            ctx, TOOL_EXECUTING, {"tool_name": name, "call_id": call_id, "parameters": arguments}
        )
        started = time.perf_counter()
        fields: dict[str, Any] = {"tool_name": name, "call_id": call_id}
        if tool is None and any(t["name"] == name for t in ctx.client_tools):
            # The caller runs it: the call is recorded, handed over, and not run here.
            fields.update(ok=False, error=CLIENT_TOOL_ERROR, duration_ms=_ms(started))
            await self.emit(ctx, TOOL_COMPLETED, fields)
            return None
        try:
            if tool is None:
                raise ToolFailed("unknown_tool", f"{ctx.agent_name} has no tool named {name!r}")
            if set(arguments) == {"_raw"} and "_raw" not in tool.parameters["properties"]:
                # The model's arguments did not parse (see models/openai.py): say so, not
                # that a schema was broken, so that it sends them again as JSON.
                raise ToolFailed(
                    "invalid_json",
                    f"the arguments were not valid JSON: {str(arguments['_raw'])[:200]!r}; "
                    "send them again as one JSON object",
                )
            result = await tool.invoke(
                ctx, arguments, timeout=self.tool_timeout, threads=self.tool_threads
            )
        except ToolFailed as exc:
            fields.update(ok=False, error=exc.as_error(), duration_ms=_ms(started))
            await self.emit(ctx, TOOL_COMPLETED, fields)
            raise
        except asyncio.CancelledError:
            fields.update(
                ok=False,
                error={"code": "cancelled", "message": "the run was stopped"},
                duration_ms=_ms(started),
            )
            await self.emit(ctx, TOOL_COMPLETED, fields)
            raise
        fields.update(ok=True, results=result, duration_ms=_ms(started))
        await self.emit(ctx, TOOL_COMPLETED, fields)
        return result

    # Waiting for a person (tenet.journal) -------------------------------------------------

    async def request_approvals(
        self, ctx: RunContext, calls: list[tuple[str, str, dict[str, Any]]]
    ) -> None:
        """Decide the ``(call_id, name, arguments)`` calls that need approval, all at once.

        Each gets its recorded decision (resumed run), its answer (the pause this run
        resumes from), or else a request: if any call waits for a person, the run
        pauses here with one request per such call, each answered on its own.
        """
        agent = self.registry.get(ctx.agent_name)
        journal = self.journal
        waiting: list[tuple[str, str, dict[str, Any]]] = []
        for call_id, name, arguments in calls:
            tool = agent.tool(name) if agent is not None else None
            if tool is None or not tool.needs_approval(ctx, arguments):
                continue
            key = [name, arguments]
            entry = journal.replayed("approval", key)
            if entry is None:
                wanted = key_of(key)
                found = journal.take(
                    "approval",
                    lambda a, c=call_id, w=wanted: (
                        a.id == c
                        or key_of([a.body.get("tool_name"), a.body.get("parameters")]) == w
                    ),
                )
                if found is None:
                    waiting.append((call_id, name, arguments))
                    continue
                answer = found.answer
                entry = {
                    "ok": bool(answer.get("approved")),
                    "args": answer.get("arguments"),
                    "note": answer.get("note"),
                    "by": answer.get("by", "user"),
                }
                journal.record("approval", key, **entry)
            self._decisions[call_id] = entry
        if waiting:
            journal.check_new_request()
            await self._pause(
                ctx,
                [
                    (
                        APPROVAL_REQUESTED,
                        call_id,
                        {"tool_name": name, "parameters": arguments},
                    )
                    for call_id, name, arguments in waiting
                ],
            )

    async def ask(self, ctx: RunContext, prompt: str, schema: dict[str, Any] | None) -> Any:
        """Ask the run's user a question and return the answer (None if nobody answered).

        The run pauses until it is answered; the answer is validated against ``schema``
        (a JSON schema) when one is given.
        """
        key = [prompt, schema]
        entry = self.journal.replayed("ask", key)
        if entry is not None:
            return entry.get("v")
        found = self.journal.take("input", lambda a: a.body.get("prompt") == prompt)
        if found is not None:
            value = found.answer.get("value")
            self.journal.record("ask", key, v=value)
            return value
        self.journal.check_new_request()
        body: dict[str, Any] = {"prompt": prompt}
        if schema is not None:
            body["schema"] = schema
        await self._pause(ctx, [(INPUT_REQUESTED, new_id("req"), body)])

    async def _pause(
        self, ctx: RunContext, requests: list[tuple[str, str, dict[str, Any]]]
    ) -> None:
        """Store the requests with their events, the last with the run's state; then unwind."""
        journal = self.journal
        state = journal.state(
            execution_id=self.root_execution_id or ctx.execution_id,
            elapsed=self.elapsed(),
            usage=self.usage.as_dict(),
        )
        expires = now_us() + int(self.approval_timeout_s * 1_000_000)
        self.asked = True
        for i, (type, request_id, body) in enumerate(requests):
            row = {
                "run_id": ctx.run_id,
                "id": request_id,
                "user_id": ctx.user_id,
                "thread_id": ctx.thread_id,
                "execution_id": ctx.execution_id,
                "agent_name": ctx.agent_name,
                "kind": "approval" if type == APPROVAL_REQUESTED else "input",
                "round": journal.round + 1,
                "body": body,
                "expires_at": expires,
            }
            id_field = "call_id" if type == APPROVAL_REQUESTED else "request_id"
            fields = {id_field: request_id, **body, "expires_at": wire_time(expires)}
            last = i == len(requests) - 1
            await self.emit(ctx, type, fields, pause=RunPause(row, state if last else None))
        await self.flush()
        raise RunPaused()

    def elapsed(self) -> float:
        """Seconds the run has executed, over all its segments (waiting not counted)."""
        return self.journal.elapsed + (time.monotonic() - self.segment_started)

    async def delegate(self, ctx: RunContext, agent_name: str, input: str) -> str:
        agent = self.registry.get(agent_name)
        if agent is None:
            raise AgentFailed("unknown_agent", f"no agent named {agent_name!r}")
        child = ctx.child(agent_name)
        entry = self.journal.replayed("child", agent_name)
        if entry is not None:  # resumed: the delegated execution keeps its id
            child = replace(child, execution_id=entry["x"])
        else:
            self.journal.record("child", agent_name, x=child.execution_id)
        return await self.execute(child, agent, input)

    async def execute(self, ctx: RunContext, agent: Agent, input: str) -> str:
        """Run one agent execution between its ``agent_started`` and its end event.

        A delegated execution (depth > 0) always ends with its own ``agent_completed``
        or ``agent_error``; the run's own execution (depth 0) ends with
        ``agent_completed`` here, or raises for the engine to report.
        """
        started_fields: dict[str, Any] = {"input": input, "depth": ctx.depth}
        if ctx.parent_execution_id is not None:
            started_fields["parent_execution_id"] = ctx.parent_execution_id
        await self.emit(ctx, AGENT_STARTED, started_fields)
        for result in ctx.client.results:  # the caller's results for the last run's calls
            await self.emit(ctx, TOOL_COMPLETED, {**result, "duration_ms": 0})
        started = time.perf_counter()
        running = executing.set(ctx)
        try:
            output = await agent.run(ctx, input)
        except asyncio.CancelledError:
            if ctx.depth > 0:
                error = {"code": "cancelled", "message": "the run was stopped"}
                await self._child_error(ctx, error)
            raise
        except Exception as exc:
            if ctx.depth == 0:
                raise
            await self._child_error(ctx, error_of(exc))
            if isinstance(exc, DepthExceeded | AgentFailed):
                raise
            raise AgentFailed(
                "delegation_failed", f"{agent.name} failed: {error_of(exc)['message']}"
            ) from exc
        finally:
            executing.reset(running)
        output = repair("" if output is None else str(output))  # stored as the run's output
        if held := self._halves.rest(ctx.execution_id):  # a half never completed
            await self.emit(ctx, MESSAGE_DELTA, {"text": held})
        if ctx.depth == 0:
            self.journal.check_finished()
            self.completing = True
        await self.emit(
            ctx,
            AGENT_COMPLETED,
            {
                "status": "completed",
                "final_response": output,
                "duration_ms": _ms(started),
                "depth": ctx.depth,
                **({"usage": self.usage.as_dict()} if ctx.depth == 0 else {}),
            },
            end=RunEnd("completed", output=output) if ctx.depth == 0 else None,
        )
        return output

    async def _child_error(self, ctx: RunContext, error: dict[str, str]) -> None:
        await self.emit(ctx, AGENT_ERROR, {"status": "failed", "error": error, "depth": ctx.depth})

    def notes(self, ctx: RunContext) -> UserNotes:
        return UserNotes(self.store, ctx.user_id)

    def user_state(self, ctx: RunContext) -> dict[str, Any]:
        if ctx.user_id != self.session.user_id:  # pragma: no cover - a wiring bug, never data
            raise RuntimeError("a run's context and session belong to different users")
        return self.session.state

    def user_secrets(self, ctx: RunContext) -> UserSecrets:
        """The user's secrets, cached in the user's session (they die with it)."""
        self.user_state(ctx)  # the same-user check
        found = self.session.resources.get("secrets")
        if found is None:
            found = self.session.resources["secrets"] = UserSecrets(self.secrets, ctx.user_id)
        return found  # type: ignore[no-any-return]

    async def secret(self, ctx: RunContext, name: str) -> str:
        value = await self.user_secrets(ctx).get(name)
        if value is None:
            raise ToolFailed(
                "missing_secret",
                f"the secret {name!r} is not set: set it with PUT /v1/me/secrets/{name} "
                "(or on the console's secrets page)",
            )
        return value

    def mcp_sessions(self, ctx: RunContext) -> UserMCPSessions:
        """The user's MCP sessions, kept in the user's session (closed with it)."""
        self.user_state(ctx)
        found = self.session.resources.get("mcp")
        if found is None:
            found = UserMCPSessions(self.mcp, self.user_secrets(ctx).get)
            self.session.resources["mcp"] = found
        return found  # type: ignore[no-any-return]


def _reply_json(reply: ModelReply) -> dict[str, Any]:
    """A model reply as a resumed run replays it (its usage was counted once already)."""
    return {
        "content": reply.content,
        "tool_calls": [
            {"id": c.id, "name": c.name, "arguments": c.arguments} for c in reply.tool_calls
        ],
    }


def _reply_of(data: dict[str, Any]) -> ModelReply:
    return ModelReply(
        content=str(data.get("content") or ""),
        tool_calls=[
            ToolCall(str(c["id"]), str(c["name"]), dict(c.get("arguments") or {}))
            for c in data.get("tool_calls") or ()
        ],
        usage=Usage(),
    )


def _ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 3)
