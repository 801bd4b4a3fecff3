"""A model whose every call made during a run is one of that run's counted model calls.

The default loop calls its model through the run (``ctx.runtime.complete``), so
each call's usage reaches the run's totals, the store (``/v1/me/usage``, the
quota) and Prometheus. A custom flow may instead call a model itself, the
agent's (``self.model.complete(...)``) or the server's (``ctx.runtime.model``).
Both are a :class:`MeteredModel`, which sends such a call the same way: it finds
the execution running in its task (:data:`tenet.context.executing`, set around
each ``Agent.run``) and makes the call through that execution's run. Outside a
run (a test calling the model, a title generator) it is the plain model.

A call already made through the run is not counted twice: the run marks the
inner call (:data:`counting`) and a metered model inside it passes straight on.
"""

from __future__ import annotations

import contextvars
from typing import Any

from ..context import executing
from .base import Callback, ChatMessage, ChatModel, ModelReply

__all__ = ["MeteredModel", "counting", "metered", "unmetered"]

#: True while a run's counted call is being made: a metered model reached from inside
#: it (a model wrapping a metered one) calls its model without counting again.
counting: contextvars.ContextVar[bool] = contextvars.ContextVar("tenet_counting", default=False)


class MeteredModel:
    """Wraps a :class:`~tenet.models.base.ChatModel`; see the module docstring.

    Any other attribute is the wrapped model's (an adapter's ``aclose``, its ``model`` name).
    """

    __slots__ = ("inner",)

    def __init__(self, inner: ChatModel) -> None:
        self.inner = inner

    async def complete(
        self,
        messages: list[ChatMessage],
        tools: list[dict[str, Any]],
        *,
        on_delta: Callback | None = None,
        on_reasoning: Callback | None = None,
    ) -> ModelReply:
        ctx = executing.get()
        if ctx is None or counting.get() or ctx._runtime is None:
            return await self.inner.complete(
                messages, tools, on_delta=on_delta, on_reasoning=on_reasoning
            )
        # The caller's own callbacks, as it asked: a direct call that streams nowhere
        # makes no events, but it is counted.
        return await ctx.runtime.complete(
            ctx, self.inner, messages, tools, on_delta=on_delta, on_reasoning=on_reasoning
        )

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def __repr__(self) -> str:
        return f"MeteredModel({self.inner!r})"


def metered(model: Any) -> Any:
    """``model`` as a :class:`MeteredModel` (None stays None; a metered one is kept)."""
    if model is None or isinstance(model, MeteredModel):
        return model
    return MeteredModel(model)


def unmetered(model: Any) -> Any:
    """The model a :class:`MeteredModel` wraps (any other model as it is)."""
    return model.inner if isinstance(model, MeteredModel) else model
