"""The execution context of one agent execution: who, where, which run.

A :class:`RunContext` is the only "current user" tenet has. It is frozen, made by
the engine from the stored run (never from anything a client sent), and passed
explicitly to agents and tools. Everything an agent does (think, call a tool,
delegate, read notes) goes through it, so every event and every stored row is
stamped with the ids of the context that produced it.
"""

from __future__ import annotations

import contextvars
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from .errors import DepthExceeded
from .ids import is_valid, new_id

MAX_DEPTH = 10

#: A copy of the context for log correlation only; never read for authorization.
current_context: contextvars.ContextVar[RunContext | None] = contextvars.ContextVar(
    "tenet_run_context", default=None
)
#: The execution whose agent code is running in this task (set around each ``Agent.run``,
#: a delegated one's inside its parent's): a model an agent calls directly makes its call
#: through this execution's run (``tenet.models.metered``). Never read for authorization.
executing: contextvars.ContextVar[RunContext | None] = contextvars.ContextVar(
    "tenet_executing", default=None
)


class Notes(Protocol):
    """One user's notes, already bound to that user (``tenet.store.notes.UserNotes``)."""

    async def add(self, text: str) -> str:
        """Keep a note; returns its id."""
        ...

    async def forget(self) -> int:
        """Delete every note of the user; returns how many there were."""
        ...

    async def search(self, query: str | None = None, limit: int = 20) -> list[str]:
        """The texts of the user's notes, newest first; with ``query``, the best matches first."""
        ...


class RunServices(Protocol):
    """What a run offers its executions (``tenet.runtime.RunRuntime``).

    Declared here so that the context, at the bottom of the package, needs nothing
    above it: the runtime implements this, the engine passes it in.
    """

    #: The model an agent without its own uses (a ``tenet.models.base.ChatModel``).
    model: Any
    #: The model turns an agent without its own limit may take.
    max_steps: int
    #: Reads the thread's conversation for the model within ``TENET_CONTEXT_TOKENS``
    #: (a ``tenet.conversation.Conversations``); None: the run is sent no history.
    conversations: Any

    async def history(self, ctx: RunContext) -> list[dict[str, Any]]: ...

    async def complete(
        self,
        ctx: RunContext,
        model: Any,
        messages: list[dict[str, Any]],
        tools: list[dict[str, Any]],
        *,
        on_delta: Any = ...,
        on_reasoning: Any = ...,
    ) -> Any:
        """One model call, its usage counted (a ``ModelReply``); streamed as ``ctx``'s
        events unless other callbacks (or None) are given."""
        ...

    async def emit(self, ctx: RunContext, type: str, fields: dict[str, Any]) -> None: ...

    async def think(self, ctx: RunContext, reasoning: str) -> None: ...

    async def call_tool(
        self, ctx: RunContext, name: str, arguments: dict[str, Any], *, call_id: str | None = None
    ) -> Any: ...

    async def delegate(self, ctx: RunContext, agent_name: str, input: str) -> str: ...

    async def request_approvals(
        self, ctx: RunContext, calls: list[tuple[str, str, dict[str, Any]]]
    ) -> None:
        """Ask approval of the ``(call_id, name, arguments)`` calls that need it, at once."""
        ...

    async def ask(self, ctx: RunContext, prompt: str, schema: dict[str, Any] | None) -> Any: ...

    def notes(self, ctx: RunContext) -> Notes: ...

    def user_state(self, ctx: RunContext) -> dict[str, Any]: ...

    async def secret(self, ctx: RunContext, name: str) -> str: ...


#: The run metadata key that holds the tools its caller runs itself.
CLIENT_TOOLS_KEY = "client_tools"
#: ... the results its caller returned for client tools the run before handed over:
#: ``[{"call_id", "tool_name", "ok", "results" | "error"}]``, stored as the run starts.
CLIENT_RESULTS_KEY = "client_results"
#: ... the caller's application state (any JSON value), readable as ``ctx.client_state``.
CLIENT_STATE_KEY = "client_state"
#: ... what the caller says the run should know: ``[{"description", "value"}]``.
CLIENT_CONTEXT_KEY = "client_context"
#: ... what the caller's front end passes through to the agent (AG-UI ``forwardedProps``,
#: any JSON value), readable as ``ctx.client_forwarded_props``.
CLIENT_FORWARDED_PROPS_KEY = "client_forwarded_props"


def client_tools_of(metadata: dict[str, Any] | None) -> tuple[dict[str, Any], ...]:
    """The client tools a run's metadata offers: well-formed ``{"name", ...}`` specs only."""
    tools = (metadata or {}).get(CLIENT_TOOLS_KEY)
    if not isinstance(tools, list):
        return ()
    return tuple(
        {
            "name": t["name"],
            "description": str(t.get("description") or ""),
            "parameters": t.get("parameters") or {"type": "object", "properties": {}},
        }
        for t in tools
        if isinstance(t, dict) and isinstance(t.get("name"), str) and t["name"]
    )


#: The ``error.code`` stored for a client tool whose client reported it failed.
CLIENT_TOOL_FAILED = "client_tool_failed"


def _client_result(r: dict[str, Any]) -> dict[str, Any]:
    """One client result as the ``tool_completed`` fields it is stored as (an error is
    always ``{"code", "message"}``, both strings)."""
    fields: dict[str, Any] = {
        "call_id": r["call_id"],
        "tool_name": str(r.get("tool_name") or ""),
        "ok": r.get("ok") is True,
    }
    if fields["ok"]:
        fields["results"] = r.get("results")
        return fields
    error = r.get("error") if isinstance(r.get("error"), dict) else {}
    fields["error"] = {
        "code": str(error.get("code") or CLIENT_TOOL_FAILED),
        "message": str(error.get("message") or "the client's tool failed"),
    }
    return fields


@dataclass(frozen=True, slots=True)
class ClientInput:
    """What a run's caller gave it beside its input, read from the run's metadata.

    Kept with the run (not in memory of the process that took the request), so
    any process of a cluster runs it the same.
    """

    #: See :func:`client_tools_of`.
    tools: tuple[dict[str, Any], ...] = ()
    #: Results of client tools the run before handed over (well-formed entries only).
    results: tuple[dict[str, Any], ...] = ()
    #: The caller's application state, as sent (None: none).
    state: Any = None
    #: ``{"description", "value"}`` items, both strings.
    context: tuple[dict[str, str], ...] = ()
    #: What the caller's front end passes through (AG-UI ``forwardedProps``), as sent.
    forwarded_props: Any = None

    def answers(self) -> dict[str, dict[str, Any]]:
        """The results by ``call_id``, each shaped as the ``tool_completed`` it is stored as."""
        return {r["call_id"]: r for r in self.results}

    @classmethod
    def of(cls, metadata: dict[str, Any] | None) -> ClientInput:
        meta = metadata or {}
        results = meta.get(CLIENT_RESULTS_KEY)
        context = meta.get(CLIENT_CONTEXT_KEY)
        return cls(
            tools=client_tools_of(meta),
            results=tuple(
                _client_result(r)
                for r in (results if isinstance(results, list) else ())
                if isinstance(r, dict) and isinstance(r.get("call_id"), str)
            ),
            state=meta.get(CLIENT_STATE_KEY),
            context=tuple(
                {"description": str(c.get("description", "")), "value": str(c.get("value", ""))}
                for c in (context if isinstance(context, list) else ())
                if isinstance(c, dict)
            ),
            forwarded_props=meta.get(CLIENT_FORWARDED_PROPS_KEY),
        )


@dataclass(frozen=True, slots=True)
class RunContext:
    """Who is running what: immutable, validated, one per agent execution."""

    user_id: str
    thread_id: str
    run_id: str
    execution_id: str
    agent_name: str
    depth: int = 0
    parent_execution_id: str | None = None
    #: What the run's caller gave beside the input: tools it offers and runs itself
    #: (``{"name", "description", "parameters"}``, as a model is offered tools: the
    #: run's own agent may call them, and a call ends the run with the call handed
    #: to the caller), its results for the calls the run before handed over, its
    #: application ``state`` and its ``context`` items.
    client: ClientInput = field(default_factory=ClientInput)
    _runtime: RunServices | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        for name, prefix in (
            ("user_id", "usr"),
            ("thread_id", "thr"),
            ("run_id", "run"),
            ("execution_id", "exe"),
        ):
            if not is_valid(getattr(self, name), prefix):
                raise ValueError(f"RunContext.{name} is not a valid {prefix} id")
        if self.parent_execution_id is not None and not is_valid(self.parent_execution_id, "exe"):
            raise ValueError("RunContext.parent_execution_id is not a valid exe id")
        if not isinstance(self.depth, int) or not 0 <= self.depth <= MAX_DEPTH:
            raise DepthExceeded(f"delegation depth must be between 0 and {MAX_DEPTH}")
        if (self.depth == 0) != (self.parent_execution_id is None):
            raise ValueError("only delegated executions (depth > 0) have a parent")

    @classmethod
    def for_run(
        cls,
        *,
        user_id: str,
        thread_id: str,
        run_id: str,
        agent_name: str,
        runtime: RunServices,
        client: ClientInput | None = None,
    ) -> RunContext:
        """The root context of a run (depth 0, a fresh execution id)."""
        return cls(
            user_id=user_id,
            thread_id=thread_id,
            run_id=run_id,
            execution_id=new_id("exe"),
            agent_name=agent_name,
            client=client or ClientInput(),
            _runtime=runtime,
        )

    def child(self, agent_name: str) -> RunContext:
        """The context of a delegated execution: same user, thread and run, a new execution."""
        if self.depth + 1 > MAX_DEPTH:
            raise DepthExceeded(
                f"cannot delegate to {agent_name!r}: depth would exceed {MAX_DEPTH}"
            )
        return replace(
            self,
            execution_id=new_id("exe"),
            agent_name=agent_name,
            depth=self.depth + 1,
            parent_execution_id=self.execution_id,
            # Tools and results are the run's own agent's; state, context and forwarded
            # props are the run's.
            client=replace(self.client, tools=(), results=()),
        )

    # What agents do, through the run's runtime -------------------------------------------

    @property
    def client_tools(self) -> tuple[dict[str, Any], ...]:
        """The tools the caller runs itself, offered to the run's own agent."""
        return self.client.tools

    @property
    def client_state(self) -> Any:
        """The caller's application state (AG-UI ``state``) as sent, None if none."""
        return self.client.state

    @property
    def client_context(self) -> tuple[dict[str, str], ...]:
        """The caller's context items (AG-UI ``context``): ``{"description", "value"}``."""
        return self.client.context

    @property
    def client_forwarded_props(self) -> Any:
        """What the caller's front end passed through (AG-UI ``forwardedProps``: any JSON
        value, as sent; None if none). tenet does not read it: it is the agent's to use."""
        return self.client.forwarded_props

    @property
    def runtime(self) -> RunServices:
        if self._runtime is None:
            raise RuntimeError("this RunContext is not attached to a running run")
        return self._runtime

    async def think(self, reasoning: str) -> None:
        """Tell the user what the agent is thinking (an ``agent_thinking`` event)."""
        await self.runtime.think(self, reasoning)

    async def say(self, text: str) -> None:
        """Stream a piece of the answer (a ``message_delta`` event)."""
        await self.runtime.say(self, text)

    async def call_tool(self, name: str, /, *, call_id: str | None = None, **arguments: Any) -> Any:
        """Call one of this agent's tools; emits ``tool_executing`` then ``tool_completed``.

        Returns the tool's result, or raises :class:`~tenet.errors.ToolFailed` with the
        error the user saw.
        """
        return await self.runtime.call_tool(self, name, arguments, call_id=call_id)

    async def delegate(self, agent_name: str, input: str) -> str:
        """Run another registered agent as a child execution and return its answer."""
        return await self.runtime.delegate(self, agent_name, input)

    async def ask(self, prompt: str, schema: dict[str, Any] | None = None) -> Any:
        """Ask the run's user and return the answer (``input_requested``, then ``input_received``).

        The run waits without holding a task or a slot; the answer, validated against
        ``schema`` (a JSON schema) when given, resumes it. None when nobody answered
        within ``TENET_APPROVAL_TIMEOUT_S``. A flow that asks is resumed by replay:
        see :mod:`tenet.journal` for the rule it must follow.
        """
        return await self.runtime.ask(self, str(prompt), schema)

    async def history(self) -> list[dict[str, Any]]:
        """The thread's earlier turns, oldest first, as chat-completions messages.

        Read from the store (this user's, this thread's) within ``TENET_CONTEXT_TOKENS``,
        excluding this run; a fresh list on each call, so changing it changes nothing.
        """
        return await self.runtime.history(self)

    @property
    def notes(self) -> Notes:
        """This user's notes, and nobody else's."""
        return self.runtime.notes(self)

    async def secret(self, name: str) -> str:
        """The calling user's secret ``name`` (set with ``PUT /v1/me/secrets/{name}``).

        Raises ``ToolFailed('missing_secret')`` naming it when the user has not set it.
        """
        return await self.runtime.secret(self, name)

    @property
    def state(self) -> dict[str, Any]:
        """Per-user agent state kept in memory while the user's session lives."""
        return self.runtime.user_state(self)
