"""AG-UI messages and the stored conversation: a run's input from ``messages``, and back.

An AG-UI client sends its whole message list with every run; the stored thread
is the source of truth. What is read from the list is only what is new since the
last assistant message (the *tail*): the last ``user`` message's text is the
run's input, and ``tool`` messages answering calls the thread's latest run handed
over (front-end tools) are the results the run stores before anything else
(:class:`tenet.context.ClientInput`). Everything earlier is already stored.

The other way, :func:`snapshot` is the thread's conversation as AG-UI messages,
built by :class:`tenet.conversation.Conversations` exactly as the model is sent
it (same turns, same budget, front-end results paired with their calls), plus the
run's own input. :func:`differs` tells whether the client's list is something
else, in which case the stream opens with a ``MESSAGES_SNAPSHOT`` of it.
"""

from __future__ import annotations

from typing import Any

import orjson
from ag_ui.core import (
    AssistantMessage,
    FunctionCall,
    Message,
    RunAgentInput,
    ToolCall,
    ToolMessage,
    UserMessage,
)

from ..context import CLIENT_TOOL_FAILED, ClientInput
from ..conversation import Conversations
from ..errors import Invalid
from ..models.base import ChatMessage
from ..store.history import NEWEST


def _inner(message: Any) -> Any:
    return getattr(message, "root", message)


def _joined(message: UserMessage) -> str:
    """A user message's text: its content, or its text parts joined by newlines."""
    content = message.content
    if isinstance(content, str):
        return content
    texts = [getattr(_inner(p), "text", None) for p in content]
    return "\n".join(t for t in texts if isinstance(t, str))


def _text(message: UserMessage) -> str:
    text = _joined(message)
    if not text and not isinstance(message.content, str):
        raise Invalid("the last user message has no text")
    return text


def tail(run_input: RunAgentInput) -> list[Any]:
    """The messages after the last assistant message (all of them if there is none)."""
    messages = [_inner(m) for m in run_input.messages]
    last = max((i for i, m in enumerate(messages) if isinstance(m, AssistantMessage)), default=-1)
    return messages[last + 1 :]


def answers_tool_calls(run_input: RunAgentInput) -> bool:
    """Whether the tail holds a ``tool`` message (so the thread's open calls are needed)."""
    return any(isinstance(m, ToolMessage) for m in tail(run_input))


def turn_input(
    run_input: RunAgentInput, open_calls: dict[str, dict[str, Any]]
) -> tuple[str, list[dict[str, Any]]]:
    """The run's input text and the client results it carries.

    ``open_calls``: the ``tool_executing`` events of the calls the thread's latest
    run handed over, by ``call_id``; a ``tool`` message for any other call (one
    already stored, or unknown) is not read. The tool name is the stored call's,
    never the client's. ``Invalid`` if the tail holds neither a user message nor a
    result for an open call.
    """
    text = ""
    results: list[dict[str, Any]] = []
    seen: set[str] = set()
    for message in tail(run_input):
        if isinstance(message, UserMessage):
            text = _text(message)
        elif isinstance(message, ToolMessage):
            call = open_calls.get(message.tool_call_id)
            if call is None or message.tool_call_id in seen:
                continue
            seen.add(message.tool_call_id)
            result: dict[str, Any] = {
                "call_id": message.tool_call_id,
                "tool_name": str(call.get("tool_name") or ""),
            }
            if message.error:
                result.update(
                    ok=False, error={"code": CLIENT_TOOL_FAILED, "message": message.error[:1000]}
                )
            else:
                result.update(ok=True, results=_value(message.content))
            results.append(result)
    if not text and not results:
        raise Invalid(
            "messages hold no user message after the last assistant message, "
            "nor a tool message answering a pending front-end tool call"
        )
    return text, results


def _value(content: str) -> Any:
    """A tool message's content as the result stored: its JSON value, or the text."""
    try:
        return orjson.loads(content)
    except orjson.JSONDecodeError:
        return content


def to_ag_ui(turns: list[tuple[str, list[ChatMessage]]]) -> list[Message]:
    """Conversation turns (``(run_id, messages)``) as AG-UI messages with stable ids.

    A call's assistant message has the call's id (as a client names the message a
    ``TOOL_CALL_START`` without a parent makes) and its result ``<call_id>-result``
    (as ``TOOL_CALL_RESULT`` does); any other message ``<run_id>-<n>``.
    """
    out: list[Message] = []
    for run_id, messages in turns:
        for n, m in enumerate(messages):
            role = m["role"]
            if role == "user":
                out.append(UserMessage(id=f"{run_id}-{n}", content=str(m.get("content") or "")))
            elif role == "tool":
                call_id = str(m.get("tool_call_id"))
                out.append(
                    ToolMessage(
                        id=f"{call_id}-result",
                        tool_call_id=call_id,
                        content=str(m.get("content") or ""),
                    )
                )
            elif m.get("tool_calls"):
                calls = [
                    ToolCall(
                        id=c["id"],
                        function=FunctionCall(
                            name=c["function"]["name"], arguments=c["function"]["arguments"]
                        ),
                    )
                    for c in m["tool_calls"]
                ]
                out.append(
                    AssistantMessage(
                        id=calls[0].id, content=m.get("content") or None, tool_calls=calls
                    )
                )
            elif role == "assistant":
                out.append(
                    AssistantMessage(id=f"{run_id}-{n}", content=str(m.get("content") or ""))
                )
    return out


async def conversation(
    conversations: Conversations,
    user_id: str,
    thread_id: str,
    run_id: str,
    input: str,
    client: ClientInput,
    *,
    before: int = NEWEST,
) -> list[tuple[str, list[ChatMessage]]]:
    """The conversation run ``run_id`` is sent, as turns: the history of the events
    below seq ``before`` within the budget (its client results paired with their
    calls), then its own input (none for a run that only carries client results)."""
    turns = []
    if before > 1:  # a thread with no events yet has no history to read
        turns = await conversations.turns(
            user_id, thread_id, run_id, answered=client.answers(), before=before
        )
    if input or not client.results:
        turns.append((run_id, [{"role": "user", "content": input}]))
    return turns


def _shape(messages: list[Any]) -> list[tuple[Any, ...]]:
    """What two message lists must agree on to be the same conversation.

    Roles, user text, assistant text and tool call ids and names, which call each
    tool message answers; not ids (each side makes its own), not a tool result's
    text (a client keeps what it returned, the store its JSON value), not
    reasoning, system or activity messages, not empty assistant messages.
    """
    shape: list[tuple[Any, ...]] = []
    for message in messages:
        m = _inner(message)
        if isinstance(m, UserMessage):
            shape.append(("user", _joined(m)))
        elif isinstance(m, ToolMessage):
            shape.append(("tool", m.tool_call_id))
        elif isinstance(m, AssistantMessage):
            text = (m.content or "").strip()
            if text:
                shape.append(("assistant", text))
            for call in m.tool_calls or ():
                shape.append(("call", call.id, call.function.name))
    return shape


def differs(client_messages: list[Any], stored: list[Message]) -> bool:
    """Whether the client's messages are another conversation than the stored one."""
    return _shape(client_messages) != _shape(stored)
