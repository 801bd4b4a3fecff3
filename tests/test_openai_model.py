"""OpenAIModel against a real HTTP server that speaks chat completions, streaming included.

Only the remote LLM is fake: a small Starlette app served by uvicorn on a free
loopback port, scripted per test, which answers ``POST /v1/chat/completions``
with Server-Sent Events exactly as OpenAI-compatible servers do
(``data: {chunk}`` ... ``data: [DONE]``). The SDK, HTTP, SSE parsing and the
whole agent loop through tenet's engine and store are the real ones.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from chat_rules import chat_request_problem
from tenet import Service, Settings
from tenet.errors import ModelError
from tenet.examples import default_registry
from tenet.models.openai import OpenAIModel

Chunk = dict[str, Any]


@dataclass
class Reply:
    """What the fake endpoint answers to one request: chunks to stream, or an error."""

    chunks: list[Chunk] = field(default_factory=list)
    status: int = 200
    error: dict[str, Any] | None = None
    #: Awaited before each chunk after the first: lets a test hold the stream open.
    before_chunk: Callable[[int], Awaitable[None]] | None = None
    #: ``(prompt_tokens, completion_tokens)`` reported when usage is asked for
    #: (default: the characters of the request's messages and tools / 4, and 5).
    usage: tuple[int, int] | None = None
    headers: dict[str, str] = field(default_factory=dict)


Script = Callable[[dict[str, Any]], Reply]


def always(reply: Reply) -> Script:
    """A script that gives every request the same reply."""
    return lambda body: reply


def chunk(
    *, content: str | None = None, tool_calls: list[dict[str, Any]] | None = None, **extra: Any
) -> Chunk:
    """One ``chat.completion.chunk`` with a delta for choice 0."""
    delta: dict[str, Any] = dict(extra)
    if content is not None:
        delta["content"] = content
    if tool_calls is not None:
        delta["tool_calls"] = tool_calls
    return {
        "id": "chatcmpl-fake",
        "object": "chat.completion.chunk",
        "created": 1_700_000_000,
        "model": "fake-model",
        "choices": [{"index": 0, "delta": delta, "finish_reason": None}],
    }


class FakeLLM:
    """A real chat-completions HTTP server on 127.0.0.1, answering from a script."""

    def __init__(self, script: Script, port: int = 0) -> None:
        self.script = script
        self.port = port
        self.requests: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        #: What was answered 400 (as OpenAI would), and the usage each answer reported.
        self.rejected: list[str] = []
        self.reported: list[tuple[int, int]] = []
        self._server: uvicorn.Server | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    async def _completions(self, request: Request) -> Response:
        body = orjson.loads(await request.body())
        self.requests.append(body)
        self.headers.append(dict(request.headers))
        problem = chat_request_problem(body)
        if problem is not None:
            self.rejected.append(problem)
            error = {"message": problem, "type": "invalid_request_error", "param": "messages"}
            return JSONResponse({"error": error}, 400)
        reply = self.script(body)
        if reply.status != 200:
            error = reply.error or {"message": "fail"}
            return JSONResponse({"error": error}, reply.status, headers=reply.headers)
        usage = None
        if (body.get("stream_options") or {}).get("include_usage"):
            sent = len(orjson.dumps(body["messages"])) + len(orjson.dumps(body.get("tools", [])))
            usage = reply.usage or (sent // 4, 5)
            self.reported.append(usage)

        async def sse() -> AsyncIterator[bytes]:
            for i, c in enumerate(reply.chunks):
                if i and reply.before_chunk is not None:
                    await reply.before_chunk(i)
                yield b"data: " + orjson.dumps(c) + b"\n\n"
                await asyncio.sleep(0)
            if usage is not None:  # as OpenAI does: a last chunk with no choices
                tokens = {
                    "prompt_tokens": usage[0],
                    "completion_tokens": usage[1],
                    "total_tokens": sum(usage),
                }
                last = {**chunk(), "choices": [], "usage": tokens}
                yield b"data: " + orjson.dumps(last) + b"\n\n"
            yield b"data: [DONE]\n\n"

        return StreamingResponse(sse(), media_type="text/event-stream")

    async def start(self) -> FakeLLM:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", self.port))
        self.port = sock.getsockname()[1]
        app = Starlette(routes=[Route("/v1/chat/completions", self._completions, methods=["POST"])])
        config = uvicorn.Config(app, log_level="warning", lifespan="off")
        self._server = uvicorn.Server(config)
        self._task = asyncio.create_task(self._server.serve(sockets=[sock]))
        while not self._server.started:
            if self._task.done():
                self._task.result()
            await asyncio.sleep(0.01)
        return self

    async def stop(self) -> None:
        if self._server is not None and self._task is not None:
            self._server.should_exit = True
            await self._task


@contextlib.asynccontextmanager
async def fake_llm(script: Script, port: int = 0) -> AsyncIterator[FakeLLM]:
    server = await FakeLLM(script, port).start()
    try:
        yield server
    finally:
        await server.stop()


def free_port() -> int:
    """A loopback port nobody listens on (for "the endpoint is down")."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def collector() -> tuple[list[str], Callable[[str], Awaitable[None]]]:
    seen: list[str] = []

    async def collect(text: str) -> None:
        seen.append(text)

    return seen, collect


# The model on its own ----------------------------------------------------------------------------


async def test_streamed_text_reaches_on_delta_piece_by_piece_in_order() -> None:
    pieces = ["The ", "answer ", "is ", "42", "."]
    first_delta_seen = asyncio.Event()

    async def hold_until_first_delta(i: int) -> None:
        # Chunk 1 is the first piece of text; the server sends the ones after it
        # only once the client has handed it on: proof that deltas are forwarded
        # as they arrive, not when the answer is complete.
        if i >= 2:
            await asyncio.wait_for(first_delta_seen.wait(), 5)

    script = always(
        Reply(
            [chunk(role="assistant", content="")] + [chunk(content=p) for p in pieces],
            before_chunk=hold_until_first_delta,
        )
    )
    seen: list[str] = []

    async def on_delta(text: str) -> None:
        seen.append(text)
        first_delta_seen.set()

    thoughts, on_reasoning = collector()
    async with fake_llm(script) as llm:
        model = OpenAIModel(base_url=llm.base_url, api_key="sk-test", model="fake-model")
        reply = await model.complete(
            [{"role": "user", "content": "what is the answer?"}],
            [],
            on_delta=on_delta,
            on_reasoning=on_reasoning,
        )
        await model.aclose()
    assert seen == pieces
    assert reply.content == "The answer is 42."
    assert reply.tool_calls == []
    assert thoughts == []  # no tools were called, and no reasoning was streamed
    request = llm.requests[0]
    assert request["stream"] is True
    assert request["model"] == "fake-model"
    assert request["messages"] == [{"role": "user", "content": "what is the answer?"}]
    assert "tools" not in request  # an empty list is rejected by some servers
    assert llm.headers[0]["authorization"] == "Bearer sk-test"


async def test_a_tool_call_split_across_chunks_becomes_one_call_with_parsed_arguments() -> None:
    fragments = [
        {
            "index": 0,
            "id": "call_abc",
            "type": "function",
            "function": {"name": "calculator", "arguments": ""},
        },
        {"index": 0, "function": {"arguments": '{"expre'}},
        {"index": 0, "function": {"arguments": 'ssion": "6*'}},
        {"index": 1, "id": "call_def", "type": "function", "function": {"name": "clock"}},
        {"index": 0, "function": {"arguments": '7"}'}},
        {"index": 1, "function": {"arguments": "{}"}},
    ]
    script = always(Reply([chunk(role="assistant")] + [chunk(tool_calls=[f]) for f in fragments]))
    tools = [
        {
            "name": "calculator",
            "description": "math",
            "parameters": {"type": "object", "properties": {"expression": {"type": "string"}}},
        },
        {
            "name": "clock",
            "description": "time",
            "parameters": {"type": "object", "properties": {}},
        },
    ]
    deltas, on_delta = collector()
    thoughts, on_reasoning = collector()
    async with fake_llm(script) as llm:
        model = OpenAIModel(base_url=llm.base_url, api_key=None, model="m")
        reply = await model.complete(
            [{"role": "user", "content": "6*7 and the time"}],
            tools,
            on_delta=on_delta,
            on_reasoning=on_reasoning,
        )
        await model.aclose()
    assert [(c.id, c.name, c.arguments) for c in reply.tool_calls] == [
        ("call_abc", "calculator", {"expression": "6*7"}),
        ("call_def", "clock", {}),
    ]
    assert reply.content == "" and deltas == []
    assert thoughts == ["Calling calculator, clock"]
    assert llm.requests[0]["tools"] == [{"type": "function", "function": t} for t in tools]
    assert llm.headers[0]["authorization"] == "Bearer unused"  # no key: a placeholder


async def test_arguments_that_are_not_json_are_kept_raw_not_raised() -> None:
    fragments = [
        {"index": 0, "id": "call_1", "function": {"name": "calculator", "arguments": "{oops"}},
        {"index": 1, "id": "call_2", "function": {"name": "calculator", "arguments": "[1, 2]"}},
    ]
    script = always(Reply([chunk(tool_calls=[f]) for f in fragments]))
    async with fake_llm(script) as llm:
        model = OpenAIModel(base_url=llm.base_url, model="m")
        reply = await model.complete([{"role": "user", "content": "x"}], [])
        await model.aclose()
    assert [c.arguments for c in reply.tool_calls] == [{"_raw": "{oops"}, {"_raw": "[1, 2]"}]


async def test_streamed_reasoning_is_forwarded_in_batches_before_the_answer() -> None:
    script = always(
        Reply(
            [
                chunk(reasoning_content="The user "),
                chunk(reasoning_content="wants a greeting."),
                chunk(content="Hello"),
                chunk(content="!"),
            ]
        )
    )
    deltas, on_delta = collector()
    thoughts, on_reasoning = collector()
    async with fake_llm(script) as llm:
        model = OpenAIModel(base_url=llm.base_url, model="m")
        reply = await model.complete(
            [{"role": "user", "content": "hi"}], [], on_delta=on_delta, on_reasoning=on_reasoning
        )
        await model.aclose()
    assert thoughts == ["The user wants a greeting."]  # one batch, not one per token
    assert deltas == ["Hello", "!"]
    assert reply.content == "Hello!"


async def test_an_error_status_is_a_model_error_naming_the_status_without_the_key() -> None:
    key = "sk-very-secret-key"
    script = always(Reply(status=401, error={"message": f"Incorrect API key provided: {key}"}))
    async with fake_llm(script) as llm:
        model = OpenAIModel(base_url=llm.base_url, api_key=key, model="m", max_retries=0)
        with pytest.raises(ModelError) as caught:
            await model.complete([{"role": "user", "content": "hi"}], [])
        await model.aclose()
    assert caught.value.code == "model_error"
    assert "401" in caught.value.message
    assert "Incorrect API key" in caught.value.message
    assert key not in caught.value.message


async def test_a_refused_connection_is_a_model_error() -> None:
    port = free_port()
    model = OpenAIModel(base_url=f"http://127.0.0.1:{port}/v1", model="m", max_retries=0)
    with pytest.raises(ModelError) as caught:
        await model.complete([{"role": "user", "content": "hi"}], [])
    await model.aclose()
    assert caught.value.code == "model_error"
    assert "could not be reached" in caught.value.message
    assert f"127.0.0.1:{port}" in caught.value.message


async def test_a_stalled_stream_times_out_as_a_model_error() -> None:
    async def stall(i: int) -> None:
        await asyncio.sleep(30)

    script = always(Reply([chunk(content="Hel"), chunk(content="lo")], before_chunk=stall))
    async with fake_llm(script) as llm:
        model = OpenAIModel(base_url=llm.base_url, model="m", timeout_s=0.3, max_retries=0)
        with pytest.raises(ModelError) as caught:
            await asyncio.wait_for(model.complete([{"role": "user", "content": "hi"}], []), 10)
        await model.aclose()
    assert "did not answer within 0.3s" in caught.value.message


# A whole run through tenet --------------------------------------------------------------------------


def calculator_script(body: dict[str, Any]) -> Reply:
    """Like a real model: ask for the calculator, then answer from its result."""
    last = body["messages"][-1]
    if last["role"] == "tool":
        value = orjson.loads(last["content"])
        return Reply(
            [chunk(role="assistant", content="")]
            + [chunk(content=p) for p in ("6 times 7 ", "is ", f"{value}.")]
        )
    return Reply(
        [
            chunk(
                role="assistant",
                tool_calls=[
                    {
                        "index": 0,
                        "id": "call_calc1",
                        "type": "function",
                        "function": {"name": "calculator", "arguments": '{"expression":'},
                    }
                ],
            ),
            chunk(tool_calls=[{"index": 0, "function": {"arguments": ' "6*7"}'}}]),
        ]
    )


async def run_once(service: Service, text: str) -> tuple[str, list[dict[str, Any]]]:
    """Submit one assistant run for a new user and thread; its status and stored events."""
    user, _ = await service.store.create_user(f"u{len(text)}-{id(text)}")
    thread = await service.store.create_thread(user.id)
    run = await service.engine.submit(user.id, thread.id, "assistant", text)
    await asyncio.wait_for(service.engine.wait(run.id), 30)
    events = [orjson.loads(b) for b in await service.store.list_events(user.id, thread.id)]
    status = (await service.store.get_run(user.id, run.id)).status
    return status, events


def settings_for(base_url: str, tmp_path: Path) -> Settings:
    return Settings(
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'tenet.db'}",
        model="openai",
        model_base_url=base_url,
        model_api_key="k",
        model_name="fake-model",
    )


async def test_an_assistant_run_calls_the_calculator_through_the_endpoint(tmp_path: Path) -> None:
    async with fake_llm(calculator_script) as llm:
        settings = settings_for(llm.base_url, tmp_path)
        async with Service(settings, default_registry(settings)) as service:
            status, events = await run_once(service, "what is 6*7?")

    types = [e["type"] for e in events]
    assert status == "completed"
    assert types[0] == "agent_started"
    assert types[-1] == "agent_completed"
    executing = [e for e in events if e["type"] == "tool_executing"]
    completed = [e for e in events if e["type"] == "tool_completed"]
    assert [(e["tool_name"], e["call_id"], e["parameters"]) for e in executing] == [
        ("calculator", "call_calc1", {"expression": "6*7"})
    ]
    assert [(e["tool_name"], e["ok"], e["results"]) for e in completed] == [
        ("calculator", True, 42)
    ]
    assert [e["text"] for e in events if e["type"] == "message_delta"] == [
        "6 times 7 ",
        "is ",
        "42.",
    ]
    assert any(e["type"] == "agent_thinking" and "calculator" in e["reasoning"] for e in events)
    assert events[-1]["final_response"] == "6 times 7 is 42."
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))

    # What the endpoint was sent: the tool schema, then the tool's result.
    first, second = llm.requests
    offered = {t["function"]["name"]: t for t in first["tools"]}
    assert offered["calculator"]["type"] == "function"
    assert offered["calculator"]["function"]["parameters"]["properties"]["expression"] == {
        "type": "string"
    }
    assert first["model"] == "fake-model"
    assert first["messages"][-1] == {"role": "user", "content": "what is 6*7?"}
    assistant_turn, tool_result = second["messages"][-2:]
    assert assistant_turn["tool_calls"][0]["id"] == "call_calc1"
    assert assistant_turn["tool_calls"][0]["function"]["name"] == "calculator"
    assert tool_result == {"role": "tool", "tool_call_id": "call_calc1", "content": "42"}
    assert llm.headers[0]["authorization"] == "Bearer k"


async def test_endpoint_down_fails_the_run_with_model_error_and_the_engine_goes_on(
    tmp_path: Path,
) -> None:
    port = free_port()
    settings = settings_for(f"http://127.0.0.1:{port}/v1", tmp_path)
    async with Service(settings, default_registry(settings)) as service:
        status, events = await run_once(service, "what is 6*7?")
        assert status == "failed"
        assert [e["type"] for e in events] == ["agent_started", "agent_error"]
        error = events[-1]
        assert error["depth"] == 0 and error["status"] == "failed"
        assert error["error"]["code"] == "model_error"
        assert f"127.0.0.1:{port}" in error["error"]["message"]

        # The endpoint comes back: the same engine runs the next request to the end.
        async with fake_llm(calculator_script, port=port):
            status, events = await run_once(service, "what is 6*7 now?")
        assert status == "completed"
        assert events[-1]["type"] == "agent_completed"
        assert events[-1]["final_response"] == "6 times 7 is 42."


async def test_cancelling_a_run_mid_stream_closes_the_request(tmp_path: Path) -> None:
    streaming = asyncio.Event()
    closed = asyncio.Event()

    async def hold(i: int) -> None:
        streaming.set()
        try:
            await asyncio.sleep(30)
        finally:
            closed.set()  # the server sees the client go away

    script = always(Reply([chunk(content="Thinking "), chunk(content="hard")], before_chunk=hold))
    async with fake_llm(script) as llm:
        settings = settings_for(llm.base_url, tmp_path)
        async with Service(settings, default_registry(settings)) as service:
            user, _ = await service.store.create_user("canceller")
            thread = await service.store.create_thread(user.id)
            run = await service.engine.submit(user.id, thread.id, "assistant", "think")
            await asyncio.wait_for(streaming.wait(), 10)
            await service.engine.cancel(user.id, run.id)
            await asyncio.wait_for(service.engine.wait(run.id), 10)
            await asyncio.wait_for(closed.wait(), 10)
            events = [orjson.loads(b) for b in await service.store.list_events(user.id, thread.id)]
            status = (await service.store.get_run(user.id, run.id)).status
    assert status == "cancelled"
    assert [e["type"] for e in events] == ["agent_started", "message_delta", "run_cancelled"]
    assert events[1]["text"] == "Thinking "
