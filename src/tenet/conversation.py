"""A thread's conversation for the model, built from its stored events, within a budget.

There is one conversation and it is the stored event stream: a run's input is
its root ``agent_started``, each tool call of its root execution is a
``tool_executing`` with the ``tool_completed`` that answered it, and its answer
is its root ``agent_completed``. This module turns those events into the
chat-completions messages a model is sent; nothing keeps a second copy in
memory. The default agent loop, ``ctx.history()`` and anything else that needs
the conversation read it through here.

The rules (OpenAI answers 400 to any breach of the first two):

* A ``tool`` message is only ever sent right after the assistant message holding
  its call, and a call only with its result. A call whose result was never
  stored (the run failed or the process died mid-tool) is left out, call and all.
* Runs that failed or were cancelled contribute what they completed: their input
  and their finished tool calls, no answer.
* The budget (``TENET_CONTEXT_TOKENS``) covers the system prompt, the tool specs,
  the current input and the history. The first three always go; then the most
  recent earlier turns that fit, whole, newest first; the first turn that does
  not fit whole goes as its input and answer alone if those fit, and nothing
  older goes at all (oldest dropped first).
* A tool result longer than ``TENET_TOOL_RESULT_MAX_CHARS`` is cut, with a marker
  saying how much was left out, before any model sees it (the stored event keeps
  the whole result).
* Delegated executions' own events are not part of the thread's conversation: a
  delegated agent is given its delegated input, and reads ``ctx.history()`` if
  it wants the thread.

Reading is bounded by the budget, not by the thread: events are read newest
first, a page at a time, and reading stops once the budget is spent.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import orjson

from .models.base import ChatMessage
from .store.history import NEWEST, turn_events_before
from .tools import cut, tool_content

__all__ = ["Conversations", "TokenEstimator", "cut", "tool_content", "turn_messages"]

#: Tokens a message costs beyond its text (role, separators): what OpenAI's own
#: counting guide adds per message, rounded up.
MESSAGE_OVERHEAD_TOKENS = 4
#: The estimate's starting point before any endpoint has reported ``prompt_tokens``.
DEFAULT_CHARS_PER_TOKEN = 3.5
_FIRST_PAGE = 256
#: Once the estimate is steady, calibration learns from one call in this many.
CALIBRATE_EVERY = 16
_MAX_PAGE = 1024


class TokenEstimator:
    """Counts tokens as characters divided by a ratio the endpoint keeps calibrating.

    No tokenizer that matches every OpenAI-compatible model can be had offline
    (tiktoken downloads its tables; local models use their own vocabularies), so
    the count is ``ceil(chars / chars_per_token) + 4`` per message. The ratio
    starts at 3.5, below the ~4 characters per token of BPE tokenizers on English
    text, so that the first estimates of prose err high; a model call that
    reports ``usage.prompt_tokens`` moves it a quarter of the way to what that
    call measured (clamped to 1..8; see :meth:`calibrate` for which calls).
    Error bound: once calibrated, within about ±15% for text like what the
    endpoint has already been sent (the ratio is an average: a thread that turns
    from prose to code drifts until recalibrated); before any call, from +15%
    (English prose, counted high) to -45% (code, JSON, non-Latin scripts at
    1.5-2.5 characters per token, counted low). Budget with that in mind: the
    endpoint's own context limit is reported as ``context_length`` when it is
    crossed anyway.

    One estimator serves a process; the ratio is a property of the model's
    tokenizer, not of any user's data.
    """

    __slots__ = ("chars_per_token", "samples", "steady")

    def __init__(self, chars_per_token: float = DEFAULT_CHARS_PER_TOKEN) -> None:
        self.chars_per_token = chars_per_token
        #: Calls offered for calibration so far.
        self.samples = 0
        #: Whether the last sample agreed with the ratio (within 5%).
        self.steady = False

    def tokens(self, chars: int) -> int:
        return math.ceil(chars / self.chars_per_token)

    def message_tokens(self, message: ChatMessage) -> int:
        return self.tokens(message_chars(message)) + MESSAGE_OVERHEAD_TOKENS

    def messages_tokens(self, messages: Sequence[ChatMessage]) -> int:
        ratio = self.chars_per_token
        ceil = math.ceil
        return sum(ceil(message_chars(m) / ratio) for m in messages) + (
            MESSAGE_OVERHEAD_TOKENS * len(messages)
        )

    def calibrate(
        self, messages: Sequence[ChatMessage], tools: Sequence[dict[str, Any]], prompt_tokens: int
    ) -> None:
        """Learn from one call: ``messages`` and ``tools`` were ``prompt_tokens`` to the endpoint.

        The per-message overhead is taken off first, so that the ratio is that of
        the text alone and the estimate stays right for short and long messages alike.
        While the ratio is still moving every call is learnt from; once a sample
        agrees with it (within 5%), one call in 16: the ratio is a property of the
        tokenizer, and counting a long request's characters is not free.
        """
        self.samples += 1
        if self.steady and self.samples % CALIBRATE_EVERY:
            return
        chars = prompt_chars(messages, tools)
        text_tokens = prompt_tokens - MESSAGE_OVERHEAD_TOKENS * len(messages)
        if chars <= 0 or text_tokens <= 0:
            return
        measured = min(8.0, max(1.0, chars / text_tokens))
        self.steady = abs(measured - self.chars_per_token) <= 0.05 * self.chars_per_token
        self.chars_per_token += (measured - self.chars_per_token) * 0.25


def message_chars(message: ChatMessage) -> int:
    """The characters of a message that become tokens (content, and any tool calls)."""
    content = message.get("content")
    chars = len(content) if content.__class__ is str else 0
    calls = message.get("tool_calls")
    if calls:
        for call in calls:
            function = call.get("function") or {}
            chars += len(function.get("name") or "") + len(function.get("arguments") or "") + 8
    return chars


def prompt_chars(messages: Sequence[ChatMessage], tools: Sequence[dict[str, Any]]) -> int:
    """The characters of a whole request that become tokens: messages' text and tool specs."""
    chars = sum(message_chars(m) for m in messages)
    return chars + (len(orjson.dumps(list(tools))) if tools else 0)


def call_message(call_id: str, name: str, arguments: Any) -> ChatMessage:
    """The assistant message holding one tool call."""
    return {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": call_id,
                "type": "function",
                "function": {"name": name, "arguments": orjson.dumps(arguments).decode()},
            }
        ],
    }


def turn_messages(events: Sequence[dict[str, Any]], max_tool_chars: int) -> list[ChatMessage]:
    """One run's messages from its turn events (ascending, the root ``agent_started`` first).

    Only the root execution's calls count, each with its result; a call without
    a stored result is left out.
    """
    return _turn(events, max_tool_chars, DEFAULT_CHARS_PER_TOKEN)[0]


def _turn(
    events: Sequence[dict[str, Any]], max_tool_chars: int, ratio: float
) -> tuple[list[ChatMessage], int]:
    """:func:`turn_messages` and their estimated tokens at ``ratio`` characters per token.

    The same count as :meth:`TokenEstimator.messages_tokens`, taken while the
    messages are built rather than by walking them again: this runs once per
    earlier turn of every run, the history's hot path.
    """
    ceil = math.ceil
    started = events[0]
    input = started.get("input")
    text = input if input.__class__ is str else str(input or "")
    messages: list[ChatMessage] = [{"role": "user", "content": text}]
    tokens = ceil(len(text) / ratio)
    if len(events) == 2:  # no tool call: the input and the run's end
        end = events[1]
        if end.get("type") == "agent_completed" and end.get("depth") == 0:
            answer = end.get("final_response")
            answer = answer if answer.__class__ is str else str(answer or "")
            messages.append({"role": "assistant", "content": answer})
            tokens += ceil(len(answer) / ratio)
        return messages, tokens + MESSAGE_OVERHEAD_TOKENS * len(messages)
    # One pass: the root execution's calls in order, its results by call id (a delegated
    # execution's tool events, and its own end, are not the thread's conversation).
    root = started.get("execution_id")
    calls: list[dict[str, Any]] = []
    results: dict[Any, list[dict[str, Any]]] = {}
    answer: str | None = None
    for event in events[1:]:
        kind = event["type"]
        if kind == "tool_executing":
            if event.get("execution_id") == root:
                calls.append(event)
        elif kind == "tool_completed":
            if event.get("execution_id") == root:
                key = event.get("call_id")
                found = results.get(key)
                if found is None:
                    results[key] = [event]
                else:
                    found.append(event)
        elif kind == "agent_completed" and event.get("depth") == 0:
            answer = str(event.get("final_response") or "")
    for event in calls:
        answers = results.get(event.get("call_id"))
        if not answers:
            continue  # never answered: neither the call nor a result is sent
        done = answers.pop(0)
        call_id = str(event.get("call_id"))
        call = call_message(call_id, str(event.get("tool_name")), event.get("parameters"))
        content = tool_content(
            bool(done.get("ok")), done.get("results"), done.get("error"), max_tool_chars
        )
        messages.append(call)
        messages.append({"role": "tool", "tool_call_id": call_id, "content": content})
        tokens += ceil(message_chars(call) / ratio) + ceil(len(content) / ratio)
    if answer is not None:  # the root's end is the run's last event: its answer goes last
        messages.append({"role": "assistant", "content": answer})
        tokens += ceil(len(answer) / ratio)
    return messages, tokens + MESSAGE_OVERHEAD_TOKENS * len(messages)


class Conversations:
    """Reads threads' conversations for runs: the store, the budget, the estimate.

    Shared by every run of a process; it holds settings and the estimator's ratio,
    never a conversation.
    """

    def __init__(
        self,
        store: Any,
        *,
        context_tokens: int,
        tool_result_max_chars: int,
        estimator: TokenEstimator | None = None,
    ) -> None:
        self.store = store
        self.context_tokens = context_tokens
        self.tool_result_max_chars = tool_result_max_chars
        self.estimator = estimator or TokenEstimator()

    async def history(
        self, user_id: str, thread_id: str, run_id: str, *, budget: int | None = None
    ) -> list[ChatMessage]:
        """The thread's turns before run ``run_id``, oldest first, within ``budget`` tokens.

        Read through the store with ``user_id``: only this user's events of this
        thread can be returned.
        """
        remaining = self.context_tokens if budget is None else budget
        if remaining <= 0:
            return []
        estimator = self.estimator
        ratio, loads = estimator.chars_per_token, orjson.loads
        max_tool_chars = self.tool_result_max_chars
        turns: list[list[ChatMessage]] = []
        pending: dict[str, list[dict[str, Any]]] = {}
        before, page, scanned = NEWEST, _FIRST_PAGE, 0
        full = False
        while not full:
            rows = await turn_events_before(self.store, user_id, thread_id, before, page, run_id)
            for _, body in rows:
                event = loads(body)
                rid = event["run_id"]
                found = pending.get(rid)
                if found is None:
                    found = pending[rid] = []
                found.append(event)
                if event["type"] != "agent_started" or event.get("depth") != 0:
                    continue
                del pending[rid]
                found.reverse()
                messages, cost = _turn(found, max_tool_chars, ratio)
                if cost > remaining:
                    full = True
                    if len(messages) > 2 and messages[-1]["role"] == "assistant":
                        short = [messages[0], messages[-1]]
                        if estimator.messages_tokens(short) <= remaining:
                            turns.append(short)
                    break
                remaining -= cost
                turns.append(messages)
            scanned += len(rows)
            # Every event read costs at least a token's worth of budget, so a thread of
            # events that make no messages (runs cancelled while queued) is not read to its end.
            if len(rows) < page or scanned >= self.context_tokens:
                break
            before = rows[-1][0]
            page = min(page * 2, _MAX_PAGE)
        history: list[ChatMessage] = []
        for messages in reversed(turns):
            history.extend(messages)
        return history

    async def messages(
        self,
        user_id: str,
        thread_id: str,
        run_id: str,
        *,
        instructions: str,
        input: str,
        tools: Sequence[dict[str, Any]],
        with_history: bool = True,
    ) -> list[ChatMessage]:
        """What a run's first model call is sent: system prompt, history within the budget, input."""
        head: list[ChatMessage] = (
            [{"role": "system", "content": instructions}] if instructions else []
        )
        current: ChatMessage = {"role": "user", "content": input}
        history: list[ChatMessage] = []
        if with_history:
            estimator = self.estimator
            fixed = estimator.messages_tokens([*head, current])
            if tools:
                fixed += estimator.tokens(len(orjson.dumps(list(tools))))
            history = await self.history(
                user_id, thread_id, run_id, budget=self.context_tokens - fixed
            )
        return [*head, *history, current]
