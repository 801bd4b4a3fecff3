"""What an agent needs of a language model: one chat completion, maybe streamed.

Messages and tool specs use the OpenAI chat-completions shapes, the de facto
standard that every compatible server (OpenAI, vLLM, Ollama, llama.cpp) speaks,
so a real model adapter is a thin translation and the scripted one can read the
same conversation.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

ChatMessage = dict[str, Any]
Callback = Callable[[str], Awaitable[None]]


@dataclass(slots=True)
class ToolCall:
    id: str
    name: str
    arguments: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Usage:
    """What one model call cost, as the endpoint reported it (``usage`` of chat completions)."""

    input_tokens: int = 0
    output_tokens: int = 0


@dataclass(slots=True)
class ModelReply:
    """The model's turn: either tool calls to make, or the final ``content``.

    ``usage`` is the call's token count when the model reported one (None: unknown).
    """

    content: str = ""
    tool_calls: list[ToolCall] = field(default_factory=list)
    usage: Usage | None = None


class ChatModel(Protocol):
    """A language model. ``on_delta`` receives answer text as it streams; ``on_reasoning``
    what the model says it is doing (each becomes an event of the run)."""

    async def complete(
        self,
        messages: list[ChatMessage],
        tools: list[dict[str, Any]],
        *,
        on_delta: Callback | None = None,
        on_reasoning: Callback | None = None,
    ) -> ModelReply: ...
