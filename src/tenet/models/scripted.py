"""A deterministic, offline model: the default for the demo, tests and benchmarks.

It reads the conversation it is given, earlier turns included, and answers
from them when asked about them:

0. "what did I say first?" (or "ask"/"write") answers with the conversation's
   first user message; "what did I say before?" (also "last", "earlier",
   "just") with the latest one before the current input; "what is my name?"
   with the name given by an earlier "my name is ..." or "call me ...". With no
   earlier turn to answer from, the rules below go on.

Otherwise it picks a tool by these rules, first match wins, among the tools the
agent offers:

1. ``forget``: the input asks to forget, delete or erase notes (``forget my
   notes``, ``delete all notes``).
2. ``remember``: the input starts with "remember" (optionally "remember that");
   the rest is the ``text`` argument.
3. ``recall``: the input asks "what is my / what's my / what did I / do you
   remember / recall"; the whole input is the ``query``.
4. ``calculator``: the input contains an arithmetic expression (numbers joined
   by ``+ - * / %`` and parentheses); it is the ``expression``.
5. ``clock``: the input mentions time, date, clock or today.
6. ``use NAME key=value ...`` names any offered tool and its arguments.
7. ``fallback_tool``, if the model was made with one: its first parameter gets
   the input.

Once the conversation holds tool results after the last user message, it answers
from them; with no tool to call it answers directly. Every turn says what it is
doing first (``on_reasoning``), and answers stream word by word (``on_delta``),
``latency_s`` before each turn and ``token_latency_s`` between words.

Each reply reports a ``usage`` as an endpoint would: the characters it was sent
(messages, their tool calls and the tool specs, as an endpoint counts all of them)
and wrote, divided by four, and 4 tokens per message sent (what OpenAI's counting
guide adds per message). So a prompt's estimate (:class:`tenet.conversation.TokenEstimator`)
settles at one ratio, as it does against a real endpoint.
"""

from __future__ import annotations

import asyncio
import secrets
from typing import Any

import orjson

from .. import linear_re
from .base import Callback, ChatMessage, ModelReply, ToolCall, Usage

# Linear-time patterns (RE2): they read user text on the event loop, where a
# backtracking engine would let one crafted input stall every user.
_REMEMBER = linear_re.compile(r"(?is)^\s*(?:please\s+)?remember\s+(?:that\s+)?(?P<text>.+)$")
_RECALL = linear_re.compile(
    r"(?i)\b(what\s+is\s+my|what's\s+my|what\s+did\s+i|do\s+you\s+remember|recall)\b"
)
_EXPR = linear_re.compile(r"[-(]*\d+(?:\.\d+)?\)*(?:\s*[-+*/%]\s*[-(]*\d+(?:\.\d+)?\)*)+")
_CLOCK = linear_re.compile(r"(?i)\b(time|date|clock|today)\b")
_SAID_FIRST = linear_re.compile(r"(?i)\bwhat\s+did\s+i\s+(?:say|ask|write)\s+first\b")
_SAID_BEFORE = linear_re.compile(
    r"(?i)\bwhat\s+did\s+i\s+(?:just\s+)?(?:say|ask|write)(?:\s+(?:before|last|earlier))?\b"
)
#: Tokens a message costs beyond its text, as OpenAI's counting guide has it.
_PER_MESSAGE = 4

_ASK_NAME = linear_re.compile(r"(?i)\bwhat(?:\s+is|'s)\s+my\s+name\b")
_GIVE_NAME = linear_re.compile(r"(?i)\b(?:my\s+name\s+is|call\s+me)\s+(?P<name>[^\s.,!?;]+)")
_FORGET = linear_re.compile(r"(?i)\b(?:forget|delete|erase|remove)\b.*\bnotes?\b")
_USE = linear_re.compile(r"(?i)\buse\s+(?P<name>[A-Za-z_][\w]*)(?P<args>(?:\s+\w+=\S+)*)")


class ScriptedModel:
    """Deterministic tool choice and answers; see the module docstring for the rules."""

    def __init__(
        self,
        *,
        latency_s: float = 0.0,
        token_latency_s: float = 0.0,
        fallback_tool: str | None = None,
        answer_prefix: str = "",
    ) -> None:
        self.latency_s = latency_s
        self.token_latency_s = token_latency_s
        self.fallback_tool = fallback_tool
        self.answer_prefix = answer_prefix

    async def complete(
        self,
        messages: list[ChatMessage],
        tools: list[dict[str, Any]],
        *,
        on_delta: Callback | None = None,
        on_reasoning: Callback | None = None,
    ) -> ModelReply:
        if self.latency_s:
            await asyncio.sleep(self.latency_s)
        reply = await self._reply(messages, tools, on_delta, on_reasoning)
        sent = 0
        for m in messages:  # one pass: a long conversation is walked on every call
            content = m.get("content")
            if content.__class__ is str:
                sent += len(content)
            if "tool_calls" in m:
                for call in m["tool_calls"] or ():
                    function = call.get("function") or {}
                    name, arguments = function.get("name") or "", function.get("arguments") or ""
                    sent += len(name) + len(arguments) + 8
        if tools:
            sent += len(orjson.dumps(tools))
        written = len(reply.content) + sum(len(str(c.arguments)) for c in reply.tool_calls)
        reply.usage = Usage(
            input_tokens=max(1, sent // 4 + _PER_MESSAGE * len(messages)),
            output_tokens=max(1, written // 4),
        )
        return reply

    async def _reply(
        self,
        messages: list[ChatMessage],
        tools: list[dict[str, Any]],
        on_delta: Callback | None,
        on_reasoning: Callback | None,
    ) -> ModelReply:
        last_user = len(messages) - 1  # the current input is at or near the end: look back
        while last_user >= 0 and messages[last_user].get("role") != "user":
            last_user -= 1
        user_text = str(messages[last_user].get("content") or "") if last_user >= 0 else ""
        results = [m for m in messages[last_user + 1 :] if m.get("role") == "tool"]
        if results:
            names = _call_names(messages[last_user + 1 :])
            if on_reasoning:
                await on_reasoning("I have the tool results; writing the answer.")
            answer = self.answer_prefix + _answer_from(results, names)
            return ModelReply(content=await self._stream(answer, on_delta))
        remembered = _from_history(user_text, messages[: max(last_user, 0)])
        if remembered is not None:
            if on_reasoning:
                await on_reasoning("Answering from our conversation.")
            return ModelReply(content=await self._stream(self.answer_prefix + remembered, on_delta))
        call = self.choose(user_text, {t["name"]: t for t in tools})
        if call is not None:
            if on_reasoning:
                await on_reasoning(f"Calling {call.name} to answer: {_clip(user_text)}")
            return ModelReply(tool_calls=[call])
        if on_reasoning:
            await on_reasoning("No tool is needed; answering directly.")
        answer = (
            (self.answer_prefix + user_text)
            if self.answer_prefix
            else (f"You said: {user_text}" if user_text else "Hello.")
        )
        return ModelReply(content=await self._stream(answer, on_delta))

    def choose(self, text: str, tools: dict[str, dict[str, Any]]) -> ToolCall | None:
        """The tool call the rules pick for ``text``, or None."""
        if "forget" in tools and _FORGET.search(text):
            return ToolCall(_call_id(), "forget", {})
        if "remember" in tools and (m := _REMEMBER.match(text)):
            return ToolCall(_call_id(), "remember", {"text": m["text"].strip()})
        if "recall" in tools and _RECALL.search(text):
            return ToolCall(_call_id(), "recall", {"query": text})
        if "calculator" in tools and (m := _EXPR.search(text)):
            return ToolCall(_call_id(), "calculator", {"expression": m.group(0).strip()})
        if "clock" in tools and _CLOCK.search(text):
            return ToolCall(_call_id(), "clock", {})
        if (m := _USE.search(text)) and m["name"] in tools:
            args = dict(pair.split("=", 1) for pair in m["args"].split())
            return ToolCall(_call_id(), m["name"], args)
        if self.fallback_tool and self.fallback_tool in tools:
            props = list(tools[self.fallback_tool].get("parameters", {}).get("properties", {}))
            args = {props[0]: text} if props else {}
            return ToolCall(_call_id(), self.fallback_tool, args)
        return None

    async def _stream(self, answer: str, on_delta: Callback | None) -> str:
        if on_delta is None:
            return answer
        words = answer.split(" ")
        for i, word in enumerate(words):
            if i and self.token_latency_s:
                await asyncio.sleep(self.token_latency_s)
            await on_delta(word if i == len(words) - 1 else word + " ")
        return answer


def _from_history(text: str, earlier: list[ChatMessage]) -> str | None:
    """An answer to a question about the conversation itself, or None (rule 0)."""
    if not earlier:
        return None
    first, before, name = _SAID_FIRST.search(text), _SAID_BEFORE.search(text), None
    if not (first or before or (name := _ASK_NAME.search(text))):
        return None  # not a question about the conversation: it is not read
    said = [
        str(m.get("content"))
        for m in earlier
        if m.get("role") == "user" and isinstance(m.get("content"), str)
    ]
    if not said:
        return None
    if first:
        return f"You first said: {said[0]}"
    if before:
        return f"You said: {said[-1]}"
    if name:
        for message in reversed(said):
            if m := _GIVE_NAME.search(message):
                return f"Your name is {m['name']}."
    return None


def _call_names(messages: list[ChatMessage]) -> dict[str, str]:
    names: dict[str, str] = {}
    for m in messages:
        for call in m.get("tool_calls") or ():
            names[call["id"]] = call["function"]["name"]
    return names


def _answer_from(results: list[ChatMessage], names: dict[str, str]) -> str:
    parts = []
    for r in results:
        name = names.get(r.get("tool_call_id", ""), "tool")
        try:
            value = orjson.loads(r.get("content") or "null")
        except orjson.JSONDecodeError:
            value = r.get("content")
        if isinstance(value, dict) and "error" in value:
            err = value["error"]
            parts.append(
                f"{name} failed: {err.get('message', err) if isinstance(err, dict) else err}."
            )
        elif name == "calculator":
            parts.append(f"The answer is {value}.")
        elif name == "remember":
            parts.append("Noted; I will remember that.")
        elif name == "recall":
            notes = value if isinstance(value, list) else []
            parts.append(
                "From your notes: " + "; ".join(map(str, notes)) + "."
                if notes
                else "I have no notes about that."
            )
        elif name == "clock":
            parts.append(f"It is {value}.")
        else:
            parts.append(_prose(value))
    return " ".join(parts)


def _prose(value: Any) -> str:
    """Any tool result as text a person reads: never JSON.

    A list of sentences is joined into a paragraph, other lists by commas, and an
    object becomes ``key: value; ...``.
    """
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        items = [_prose(v) for v in value]
        sentences = all(i.endswith((".", "!", "?")) for i in items)
        return (" " if sentences else ", ").join(items) or "nothing"
    if isinstance(value, dict):
        return "; ".join(f"{k}: {_prose(v)}" for k, v in value.items()) or "nothing"
    if value is None:
        return "nothing"
    return orjson.dumps(value).decode()  # a number or a boolean


def _call_id() -> str:
    return "call_" + secrets.token_hex(8)


def _clip(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
