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

    def notes(self, ctx: RunContext) -> Notes: ...

    def user_state(self, ctx: RunContext) -> dict[str, Any]: ...

    async def secret(self, ctx: RunContext, name: str) -> str: ...


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
    #: Tools the run's caller offers and runs itself (``{"name", "description",
    #: "parameters"}``, as a model is offered tools): the run's own agent may call
    #: them, and a call ends the run with the call handed to the caller.
    client_tools: tuple[dict[str, Any], ...] = ()
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
        client_tools: tuple[dict[str, Any], ...] = (),
    ) -> RunContext:
        """The root context of a run (depth 0, a fresh execution id)."""
        return cls(
            user_id=user_id,
            thread_id=thread_id,
            run_id=run_id,
            execution_id=new_id("exe"),
            agent_name=agent_name,
            client_tools=client_tools,
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
            client_tools=(),  # offered to the run's own agent only
        )

    # What agents do, through the run's runtime -------------------------------------------

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
