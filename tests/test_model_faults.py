"""Model faults are named: context overflow, malformed tool-call JSON, and a log line per failure."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import Any

import orjson
import pytest

from tenet import Service, Settings
from tenet.examples import default_registry
from test_openai_model import Reply, chunk, fake_llm


def settings_for(base_url: str, tmp_path: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "database_url": f"sqlite+aiosqlite:///{tmp_path / 'tenet.db'}",
        "model": "openai",
        "model_base_url": base_url,
        "model_api_key": "k",
        "model_name": "fake-model",
        "model_max_retries": 0,
    }
    values.update(overrides)
    return Settings(**values)


async def one_run(service: Service, text: str) -> tuple[str, list[dict[str, Any]]]:
    user, _ = await service.store.create_user(f"u-{len(text)}")
    thread = await service.store.create_thread(user.id)
    run = await service.engine.submit(user.id, thread.id, "assistant", text)
    await asyncio.wait_for(service.engine.wait(run.id), 30)
    events = [orjson.loads(b) for b in await service.store.list_events(user.id, thread.id)]
    return run.id, events


async def test_a_context_overflow_is_agent_error_context_length_naming_the_budget(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    overflow = {
        "message": "This model's maximum context length is 8192 tokens. However, your messages "
        "resulted in 9100 tokens. Please reduce the length of the messages.",
        "type": "invalid_request_error",
        "param": "messages",
        "code": "context_length_exceeded",
    }
    async with fake_llm(lambda body: Reply(status=400, error=overflow)) as llm:
        settings = settings_for(llm.base_url, tmp_path, context_tokens=12_000)
        with caplog.at_level(logging.WARNING, logger="tenet"):
            async with Service(settings, default_registry(settings)) as service:
                run_id, events = await one_run(service, "hello")
    end = events[-1]
    assert end["type"] == "agent_error"
    assert end["error"]["code"] == "context_length"
    assert "TENET_CONTEXT_TOKENS is 12000" in end["error"]["message"]
    assert "maximum context length is 8192" in end["error"]["message"]
    # The failure is in the server's log, with the run's ids.
    logged = [r for r in caplog.records if r.name == "tenet.model"]
    assert len(logged) == 1
    assert logged[0].run_id == run_id  # type: ignore[attr-defined]
    assert logged[0].user_id == end["user_id"]  # type: ignore[attr-defined]
    assert logged[0].thread_id == end["thread_id"]  # type: ignore[attr-defined]
    assert "context_length" in logged[0].getMessage()


async def test_malformed_tool_call_json_is_named_and_the_model_may_try_again(
    tmp_path: Path,
) -> None:
    def script(body: dict[str, Any]) -> Reply:
        messages = body["messages"]
        last = messages[-1]
        if last["role"] == "tool":
            result = orjson.loads(last["content"])
            if isinstance(result, dict) and "error" in result:  # told: send proper JSON
                call = {"index": 0, "id": "call_good", "type": "function"}
                call["function"] = {"name": "calculator", "arguments": '{"expression": "6*7"}'}
                return Reply([chunk(role="assistant", tool_calls=[call])])
            return Reply([chunk(role="assistant", content=f"It is {result}.")])
        call = {"index": 0, "id": "call_bad", "type": "function"}
        call["function"] = {"name": "calculator", "arguments": '{"expression": "6*7"'}
        return Reply([chunk(role="assistant", tool_calls=[call])])

    async with fake_llm(script) as llm:
        settings = settings_for(llm.base_url, tmp_path)
        async with Service(settings, default_registry(settings)) as service:
            _, events = await one_run(service, "what is 6*7?")
    completed = [e for e in events if e["type"] == "tool_completed"]
    assert [e["ok"] for e in completed] == [False, True]
    assert completed[0]["error"]["code"] == "invalid_json"
    assert "not valid JSON" in completed[0]["error"]["message"]
    told = orjson.loads(llm.requests[1]["messages"][-1]["content"])
    assert told["error"]["code"] == "invalid_json"
    assert events[-1]["type"] == "agent_completed"
    assert events[-1]["final_response"] == "It is 42."
    assert llm.rejected == []


async def test_429_is_retried_after_retry_after_within_the_retry_limit(tmp_path: Path) -> None:
    """The SDK's retries, as configured by TENET_MODEL_MAX_RETRIES, honour ``Retry-After``."""
    seen: list[float] = []
    busy = {"message": "Rate limit reached", "type": "requests", "code": "rate_limit_exceeded"}

    def script(body: dict[str, Any]) -> Reply:
        seen.append(time.monotonic())
        if len(seen) == 1:
            return Reply(status=429, error=busy, headers={"Retry-After": "1"})
        return Reply([chunk(role="assistant", content="fine")])

    async with fake_llm(script) as llm:
        settings = settings_for(llm.base_url, tmp_path, model_max_retries=1)
        async with Service(settings, default_registry(settings)) as service:
            _, events = await one_run(service, "hello")
    assert events[-1]["type"] == "agent_completed" and events[-1]["final_response"] == "fine"
    assert len(seen) == 2
    assert seen[1] - seen[0] >= 0.9  # waited as told, not the SDK's half-second default

    always_busy = lambda body: Reply(status=503, error={"message": "overloaded"})  # noqa: E731
    async with fake_llm(always_busy) as llm:
        settings = settings_for(llm.base_url, tmp_path / "x", model_max_retries=2)
        (tmp_path / "x").mkdir()
        async with Service(settings, default_registry(settings)) as service:
            _, events = await one_run(service, "hello")
    assert len(llm.requests) == 3  # the first try and two retries
    assert events[-1]["error"]["code"] == "model_error"
    assert "503" in events[-1]["error"]["message"]


async def test_an_endpoint_that_refuses_stream_options_is_asked_again_without_them(
    tmp_path: Path,
) -> None:
    def script(body: dict[str, Any]) -> Reply:
        if "stream_options" in body:
            unknown = {"message": "Unrecognized request argument supplied: stream_options"}
            return Reply(status=400, error=unknown)
        return Reply([chunk(role="assistant", content="hi there")])

    async with fake_llm(script) as llm:
        settings = settings_for(llm.base_url, tmp_path)
        async with Service(settings, default_registry(settings)) as service:
            _, first = await one_run(service, "hello")
            _, second = await one_run(service, "hello again")
    assert first[-1]["final_response"] == second[-1]["final_response"] == "hi there"
    assert ["stream_options" in r for r in llm.requests] == [True, False, False]
    assert first[-1]["usage"] == {"input_tokens": 0, "output_tokens": 0, "model_calls": 1}
