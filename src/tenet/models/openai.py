"""Any OpenAI-compatible chat-completions endpoint: OpenAI, vLLM, Ollama, llama.cpp server.

The conversation already is in the chat-completions shape (see ``base.py``), so
this adapter only does what the wire needs: it wraps our tool specs as
``{"type": "function", "function": ...}``, always streams (so the user sees the
answer as it is written), and folds the stream back into one
:class:`~tenet.models.base.ModelReply`.

Streamed tool calls arrive as fragments keyed by ``index`` (the id and name
usually once, the JSON arguments in pieces); they are joined per index and
parsed at the end. Arguments that are not a JSON object are not an error of
ours: they become ``{"_raw": text}``, which the tool's validation rejects as
``invalid_arguments``, so the model sees its mistake and can try again.

Usage: the request asks for it (``stream_options.include_usage``); the last
chunk's ``usage`` becomes the reply's :class:`~tenet.models.base.Usage`. An
endpoint that refuses the option with a 400 naming it is asked again without
it, then and on later calls (its calls count with no tokens).

Whatever goes wrong with the endpoint (refused, timed out, a 4xx or 5xx, a
broken stream) is raised as :class:`ModelError` (``code="model_error"``), which
the engine reports as that run's ``agent_error``; the message names the
endpoint and the status, never the API key. An endpoint saying the prompt is
longer than its context is :class:`ContextTooLong` (``code="context_length"``).
429 and 5xx answers are retried by the SDK, up to ``max_retries`` times
(``TENET_MODEL_MAX_RETRIES``), with exponential backoff that honours the
endpoint's ``Retry-After`` (up to a minute).
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import openai
import orjson
from openai.types.chat.chat_completion_chunk import ChatCompletionChunk

from .. import linear_re
from ..errors import ContextTooLong, ModelError
from .base import Callback, ChatMessage, ModelReply, ToolCall, Usage

#: Local servers ignore the key, but the SDK insists on one.
_NO_KEY = "unused"
#: Streamed reasoning is sent on in pieces of about this size (or at a blank
#: line), not token by token: each piece becomes a stored ``agent_thinking`` event.
_REASONING_BATCH_CHARS = 400


#: How endpoints word "the prompt is too long" (OpenAI's code, then vLLM, Ollama, llama.cpp).
#: Linear-time (RE2): it reads the endpoint's error text, which a client's input may echo.
_CONTEXT_WORDS = linear_re.compile(
    r"(?i)context[_ ]length|context window|maximum context|exceeds? the context|"
    r"too many tokens|prompt is too long|input is too long"
)


@dataclass(slots=True)
class _PartialCall:
    """One tool call while its fragments stream in."""

    id: str = ""
    name: str = ""
    arguments: str = ""


class OpenAIModel:
    """A chat model behind an OpenAI-compatible HTTP endpoint, always streamed.

    One instance serves every user's runs: it holds only configuration and the
    SDK's connection pool, never anything of a conversation.
    """

    def __init__(
        self,
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        model: str = "gpt-4o-mini",
        timeout_s: float = 120.0,
        max_retries: int = 2,
        temperature: float | None = None,
    ) -> None:
        self.base_url = base_url
        self.model = model
        self.timeout_s = timeout_s
        self.temperature = temperature
        #: Cleared once the endpoint refuses ``stream_options`` (older servers): a setting
        #: of the endpoint learnt once, not anything of a conversation.
        self.asks_usage = True
        self._api_key = api_key
        self._client = openai.AsyncOpenAI(
            base_url=base_url,
            api_key=api_key or _NO_KEY,
            timeout=timeout_s,
            max_retries=max_retries,
        )

    @property
    def endpoint(self) -> str:
        """The endpoint as it may appear in messages and logs: no credentials in it."""
        return _redact_url(str(self._client.base_url))

    async def aclose(self) -> None:
        """Close the connection pool (at shutdown)."""
        await self._client.close()

    async def complete(
        self,
        messages: list[ChatMessage],
        tools: list[dict[str, Any]],
        *,
        on_delta: Callback | None = None,
        on_reasoning: Callback | None = None,
    ) -> ModelReply:
        request: dict[str, Any] = {
            "model": self.model,
            "messages": messages,
            "stream": True,
        }
        if self.asks_usage:
            request["stream_options"] = {"include_usage": True}
        if tools:
            # An empty tools list is rejected by some servers; no tools means no key.
            request["tools"] = [{"type": "function", "function": spec} for spec in tools]
        if self.temperature is not None:
            request["temperature"] = self.temperature

        content: list[str] = []
        calls: dict[int, _PartialCall] = {}
        reasoning = _ReasoningBuffer(on_reasoning)
        usage: Usage | None = None
        # The callbacks run outside the error translation: an exception of ours
        # (say, the run being cancelled) must pass through as itself.
        async with contextlib.aclosing(self._chunks(request)) as chunks:
            async for chunk in chunks:
                if chunk.usage is not None:
                    usage = Usage(
                        input_tokens=chunk.usage.prompt_tokens or 0,
                        output_tokens=chunk.usage.completion_tokens or 0,
                    )
                delta = _first_delta(chunk)
                if delta is None:
                    continue
                extra = delta.model_extra or {}
                thought = extra.get("reasoning_content") or extra.get("reasoning")
                if isinstance(thought, str) and thought:
                    await reasoning.add(thought)
                if delta.content:
                    await reasoning.flush()
                    content.append(delta.content)
                    if on_delta is not None:
                        await on_delta(delta.content)
                for fragment in delta.tool_calls or ():
                    await reasoning.flush()
                    _merge_fragment(calls, fragment)
        await reasoning.flush()

        tool_calls = [_finish(calls[i]) for i in sorted(calls)]
        tool_calls = [c for c in tool_calls if c.name]
        if tool_calls and on_reasoning is not None:
            await on_reasoning("Calling " + ", ".join(c.name for c in tool_calls))
        return ModelReply(content="".join(content), tool_calls=tool_calls, usage=usage)

    async def _chunks(self, request: dict[str, Any]) -> AsyncIterator[ChatCompletionChunk]:
        """The chunks as they stream; any failure as :class:`ModelError`."""
        try:
            try:
                stream = await self._client.chat.completions.create(**request)
            except openai.BadRequestError as exc:
                if "stream_options" not in request or "stream_options" not in str(exc.body):
                    raise
                # A server that does not know the option: ask again without it (no usage).
                self.asks_usage = False
                request = {k: v for k, v in request.items() if k != "stream_options"}
                stream = await self._client.chat.completions.create(**request)
            async with stream:
                async for chunk in stream:
                    yield chunk
        except openai.APIStatusError as exc:
            message = self._status_message(exc)
            if exc.status_code in (400, 413, 422) and _CONTEXT_WORDS.search(message):
                raise ContextTooLong(message) from None
            raise ModelError(message) from None
        except openai.APITimeoutError:
            raise ModelError(
                f"the model endpoint {self.endpoint} did not answer within {self.timeout_s:g}s"
            ) from None
        except openai.APIConnectionError as exc:
            cause = type(exc.__cause__).__name__ if exc.__cause__ else "connection error"
            message = f"the model endpoint {self.endpoint} could not be reached ({cause})"
            # Logged once, with the run's ids, where the run's model call failed.
            raise ModelError(message) from None
        except openai.OpenAIError as exc:
            raise ModelError(
                self._redact(f"the model endpoint {self.endpoint} failed: {exc}")
            ) from None
        except ValueError as exc:  # a chunk that is not JSON
            raise ModelError(
                f"the model endpoint {self.endpoint} sent a malformed stream: {exc}"[:300]
            ) from None

    def _status_message(self, exc: openai.APIStatusError) -> str:
        detail = ""
        body = exc.body
        if isinstance(body, dict):
            error = body.get("error", body)
            detail = str(error.get("message", "") if isinstance(error, dict) else error)
        elif body is not None:
            detail = str(body)
        text = f"the model endpoint {self.endpoint} answered {exc.status_code}"
        if detail:
            text += f": {detail[:300]}"
        return self._redact(text)

    def _redact(self, text: str) -> str:
        """Endpoints sometimes echo the key they were given; never pass it on."""
        if self._api_key and len(self._api_key) >= 4:
            text = text.replace(self._api_key, "***")
        return text


class _ReasoningBuffer:
    """Collects streamed reasoning and hands it on in readable pieces."""

    def __init__(self, sink: Callback | None) -> None:
        self.sink = sink
        self.parts: list[str] = []
        self.size = 0

    async def add(self, text: str) -> None:
        if self.sink is None:
            return
        self.parts.append(text)
        self.size += len(text)
        if self.size >= _REASONING_BATCH_CHARS or "\n\n" in text:
            await self.flush()

    async def flush(self) -> None:
        if self.sink is None or not self.parts:
            return
        text = "".join(self.parts).strip()
        self.parts.clear()
        self.size = 0
        if text:
            await self.sink(text)


def _first_delta(chunk: ChatCompletionChunk) -> Any:
    """The delta of choice 0 (one choice is asked for; more are ignored), or None."""
    for choice in chunk.choices or ():
        if choice.index in (0, None) and choice.delta is not None:
            return choice.delta
    return None


def _merge_fragment(calls: dict[int, _PartialCall], fragment: Any) -> None:
    """Fold one streamed tool-call fragment into the call at its ``index``.

    Servers differ: most send id and name once and the arguments in pieces;
    some repeat the name in every fragment, some omit ``index`` (then the id,
    or else the order, tells which call it is).
    """
    index = fragment.index
    if index is None:
        known = [i for i, c in calls.items() if fragment.id and c.id == fragment.id]
        if known:
            index = known[0]
        elif fragment.id or not calls:
            index = len(calls)  # a new call
        else:
            index = max(calls)  # a continuation of the latest call
    call = calls.setdefault(index, _PartialCall())
    if fragment.id and not call.id:
        call.id = fragment.id
    function = fragment.function
    if function is None:
        return
    if function.name and function.name != call.name:
        call.name = function.name if not call.name else call.name + function.name
    if function.arguments:
        call.arguments += function.arguments


def _finish(call: _PartialCall) -> ToolCall:
    """The finished call: arguments parsed, or kept raw for the tool to reject."""
    text = call.arguments.strip()
    arguments: dict[str, Any]
    if not text:
        arguments = {}
    else:
        try:
            parsed = orjson.loads(text)
        except orjson.JSONDecodeError:
            parsed = None
        arguments = parsed if isinstance(parsed, dict) else {"_raw": call.arguments}
    return ToolCall(
        id=call.id or "call_" + secrets.token_hex(8), name=call.name, arguments=arguments
    )


def _redact_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port is not None:
        host += f":{parts.port}"
    return urlunsplit(parts._replace(netloc=host))
