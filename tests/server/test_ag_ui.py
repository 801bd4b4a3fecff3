"""AG-UI: ``POST /v1/agents/{agent}/ag-ui`` and its resume stream, over real HTTP SSE.

Every event received is validated against the official ``ag-ui-protocol`` models;
the mapping of each tenet event type is checked against docs/ag-ui.md's table.
"""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from ag_ui.core import Event
from pydantic import TypeAdapter
from server_support import ServerFactory, User, http, new_user, stored_events

from tenet.agents import Agent
from tenet.context import RunContext
from tenet.errors import AgentFailed
from tenet.events import EVENT_TYPES
from tenet.examples import default_registry
from tenet.registry import AgentRegistry
from tenet.server.ag_ui import AgUiView
from tenet.testing import ServerHandle

EVENT = TypeAdapter(Event)
Frame = tuple[str | None, dict[str, Any]]


def run_input(text: str, thread_id: str = "t-1", **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "threadId": thread_id,
        "runId": "r-" + secrets.token_hex(4),
        "messages": [{"id": "m-" + secrets.token_hex(4), "role": "user", "content": text}],
        "tools": [],
        "context": [],
        "state": {},
        "forwardedProps": {},
    }
    body.update(extra)
    return body


async def read_sse(
    source: httpx.Response | AsyncIterator[str], limit: int | None = None
) -> list[Frame]:
    """The (id, AG-UI event) messages of an SSE response, each validated by the package.

    ``source`` is a response, or its line iterator to go on reading after a ``limit``.
    """
    frames: list[Frame] = []
    event_id: str | None = None
    data: str | None = None
    lines = source.aiter_lines() if isinstance(source, httpx.Response) else source
    async for line in lines:
        if line.startswith(":"):
            continue
        if line == "":
            if data is not None:
                parsed = json.loads(data)
                EVENT.validate_python(parsed)
                frames.append((event_id, parsed))
                if limit is not None and len(frames) >= limit:
                    return frames
            event_id, data = None, None
            continue
        name, _, value = line.partition(": ")
        if name == "id":
            event_id = value
        elif name == "data":
            data = value
    return frames


async def ag_ui(
    server: ServerHandle, user: User, agent: str, body: dict[str, Any], limit: int | None = None
) -> list[Frame]:
    async with http(server, user) as c, asyncio.timeout(30):
        async with c.stream("POST", f"/v1/agents/{agent}/ag-ui", json=body) as r:
            assert r.status_code == 200, await r.aread()
            assert r.headers["content-type"].startswith("text/event-stream")
            return await read_sse(r, limit)


def types(frames: list[Frame]) -> list[str]:
    return [d["type"] for _, d in frames]


async def only_thread(server: ServerHandle, user: User) -> dict[str, Any]:
    async with http(server, user) as c:
        threads = (await c.get("/v1/threads")).json()
    assert len(threads) == 1, threads
    return threads[0]


async def test_a_tool_run_maps_to_run_tool_reasoning_and_text_events(
    server: ServerHandle, alice: User
) -> None:
    body = run_input("what is 6*7")
    frames = await ag_ui(server, alice, "assistant", body)
    got = types(frames)
    assert got[0] == "RUN_STARTED" and got[-1] == "RUN_FINISHED"
    assert frames[0][1]["threadId"] == "t-1" and frames[0][1]["runId"] == body["runId"]
    tenet_ids = frames[0][1]["metadata"]["tenet"]
    assert (
        frames[-1][1]["runId"] == body["runId"] and frames[-1][1]["result"] == "The answer is 42."
    )
    start = got.index("TOOL_CALL_START")
    assert got[start : start + 4] == [
        "TOOL_CALL_START",
        "TOOL_CALL_ARGS",
        "TOOL_CALL_END",
        "TOOL_CALL_RESULT",
    ]
    call = frames[start][1]
    assert call["toolCallName"] == "calculator"
    assert json.loads(frames[start + 1][1]["delta"]) == {"expression": "6*7"}
    assert frames[start + 3][1]["toolCallId"] == call["toolCallId"]
    assert json.loads(frames[start + 3][1]["content"]) == 42
    assert "REASONING_MESSAGE_CONTENT" in got[:start]
    text = "".join(d["delta"] for _, d in frames if d["type"] == "TEXT_MESSAGE_CONTENT")
    assert text == "The answer is 42."
    text_start = got.index("TEXT_MESSAGE_START")
    assert got[text_start - 1] == "REASONING_END" and got[-2:] == [
        "TEXT_MESSAGE_END",
        "RUN_FINISHED",
    ]
    assert set(got[text_start + 1 : -2]) == {"TEXT_MESSAGE_CONTENT"}
    # Every message group ends with id: the tenet seq it was made from, increasing.
    ids = [int(i) for i, _ in frames if i is not None]
    assert ids == sorted(set(ids)) and frames[-1][0] is not None
    # The AG-UI run is an ordinary tenet run of the caller's thread.
    thread = await only_thread(server, alice)
    assert thread["metadata"] == {"ag_ui_thread_id": "t-1"}
    stored = await stored_events(server, alice, thread["id"])
    assert ids[-1] == stored[-1]["seq"] and stored[-1]["type"] == "agent_completed"
    async with http(server, alice) as c:
        run = (await c.get(f"/v1/runs/{stored[0]['run_id']}")).json()
    assert run["status"] == "completed" and run["thread_id"] == thread["id"]
    assert tenet_ids == {"run_id": run["id"], "thread_id": thread["id"]}
    row = await server.service.store.get_run(alice.user_id, run["id"])
    assert row.meta == {"ag_ui": {"thread_id": "t-1", "run_id": body["runId"]}}


async def test_a_delegation_is_a_step_named_after_each_agent(
    server: ServerHandle, alice: User
) -> None:
    frames = await ag_ui(server, alice, "researcher", run_input("tell me about python"))
    steps = [(d["type"], d["stepName"]) for _, d in frames if d["type"].startswith("STEP_")]
    assert steps == [
        ("STEP_STARTED", "triage"),
        ("STEP_FINISHED", "triage"),
        ("STEP_STARTED", "data"),
        ("STEP_FINISHED", "data"),
        ("STEP_STARTED", "reporting"),
        ("STEP_FINISHED", "reporting"),
    ]
    assert types(frames)[-1] == "RUN_FINISHED"


class Failing(Agent):
    async def run(self, ctx: RunContext, input: str) -> str:
        raise AgentFailed("tool_failed", "the flow broke")


class Slow(Agent):
    async def run(self, ctx: RunContext, input: str) -> str:
        await ctx.say("working")
        await asyncio.sleep(60)
        return "never"


async def test_failure_and_cancellation_are_run_errors_with_tenets_code(
    server_factory: ServerFactory,
) -> None:
    registry = AgentRegistry([*default_registry(), Failing("failing"), Slow("slow")])
    async with server_factory(registry=registry) as server:
        user = await new_user(server)
        failed = await ag_ui(server, user, "failing", run_input("x", "a"))
        assert types(failed) == ["RUN_STARTED", "RUN_ERROR"]
        assert failed[-1][1]["code"] == "tool_failed"
        assert failed[-1][1]["message"] == "the flow broke"

        async with http(server, user) as c, asyncio.timeout(30):
            async with c.stream("POST", "/v1/agents/slow/ag-ui", json=run_input("x", "b")) as r:
                lines = r.aiter_lines()
                frames = await read_sse(lines, limit=3)  # started, text start, text content
                assert types(frames) == [
                    "RUN_STARTED",
                    "TEXT_MESSAGE_START",
                    "TEXT_MESSAGE_CONTENT",
                ]
                thread = next(
                    t
                    for t in (await c.get("/v1/threads")).json()
                    if t["metadata"]["ag_ui_thread_id"] == "b"
                )
                run_id = (await stored_events(server, user, thread["id"]))[0]["run_id"]
                assert (await c.post(f"/v1/runs/{run_id}/cancel")).status_code == 202
                rest = await read_sse(lines)
        assert types(rest) == ["TEXT_MESSAGE_END", "RUN_ERROR"]
        assert rest[-1][1]["code"] == "cancelled"


async def test_bad_input_gets_the_error_body_before_any_stream(
    server: ServerHandle, alice: User
) -> None:
    async with http(server, alice) as c:
        for body in (
            {"threadId": "t"},
            {"threadId": "t", "runId": "r", "messages": "no"},
            run_input("x", thread_id=""),
            run_input("x", thread_id="t" * 256),
            {**run_input("x"), "messages": [{"id": "1", "role": "assistant", "content": "hi"}]},
        ):
            r = await c.post("/v1/agents/assistant/ag-ui", json=body)
            assert r.status_code == 422, body
            assert r.json()["error"]["code"] == "invalid"
        r = await c.post(
            "/v1/agents/assistant/ag-ui",
            content=b"{not json",
            headers={"Content-Type": "application/json"},
        )
        assert r.status_code == 422
        r = await c.post("/v1/agents/nobody/ag-ui", json=run_input("x"))
        assert r.status_code == 404
        assert r.json() == {"error": {"code": "not_found", "message": "not found"}}
        r = await c.post("/v1/agents/assistant/ag-ui", json=run_input("x" * 200_000))
        assert r.status_code in (413, 422) and "error" in r.json()
    async with http(server) as c:
        r = await c.post("/v1/agents/assistant/ag-ui", json=run_input("x"))
        assert r.status_code == 401
        assert r.json()["error"]["code"] == "unauthorized"
    async with http(server, alice) as c:  # nothing was made by any of them
        assert (await c.get("/v1/threads")).json() == []


async def test_a_body_with_only_the_required_fields_runs(server: ServerHandle, alice: User) -> None:
    """``tools``, ``context``, ``state`` and ``forwardedProps`` are optional in RunAgentInput."""
    body = {
        "threadId": "minimal",
        "runId": "r1",
        "messages": [{"id": "m1", "role": "user", "content": "hi"}],
    }
    frames = await ag_ui(server, alice, "assistant", body)
    assert types(frames)[0] == "RUN_STARTED" and frames[-1][1]["result"] == "You said: hi"
    assert "STATE_SNAPSHOT" not in types(frames)


async def test_one_thread_id_is_one_thread_even_on_concurrent_first_use(
    server: ServerHandle, alice: User
) -> None:
    results = await asyncio.gather(
        *(ag_ui(server, alice, "assistant", run_input(f"hello {i}", "shared")) for i in range(8))
    )
    assert all(types(r)[-1] == "RUN_FINISHED" for r in results)
    thread = await only_thread(server, alice)
    stored = await stored_events(server, alice, thread["id"])
    assert len({e["run_id"] for e in stored}) == 8
    # Each stream carries its own run's answer only.
    for i, frames in enumerate(results):
        assert frames[-1][1]["result"] == f"You said: hello {i}"


async def test_fifty_users_sharing_one_thread_id_each_get_their_own_thread(
    server: ServerHandle,
) -> None:
    users = await asyncio.gather(*(new_user(server) for _ in range(50)))
    secrets_of = {u.user_id: secrets.token_hex(6) for u in users}

    async def one(user: User) -> list[Frame]:
        return await ag_ui(server, user, "assistant", run_input(secrets_of[user.user_id], "same"))

    results = await asyncio.gather(*(one(u) for u in users))
    thread_ids = set()
    for user, frames in zip(users, results, strict=True):
        assert types(frames)[-1] == "RUN_FINISHED"
        text = "".join(d.get("delta", "") for _, d in frames if d["type"] == "TEXT_MESSAGE_CONTENT")
        assert text == f"You said: {secrets_of[user.user_id]}"
        body = json.dumps([d for _, d in frames])
        others = [s for uid, s in secrets_of.items() if uid != user.user_id]
        assert not any(s in body for s in others)
        thread = await only_thread(server, user)
        thread_ids.add(thread["id"])
        stored = await stored_events(server, user, thread["id"])
        assert {e["user_id"] for e in stored} == {user.user_id}
        assert len({e["run_id"] for e in stored}) == 1
    assert len(thread_ids) == 50
    # Nobody can resume another user's run under the shared id: each sees their own.
    async with http(server, users[0]) as c, asyncio.timeout(30):
        async with c.stream("GET", "/v1/agents/assistant/ag-ui/same/stream") as r:
            replay = await read_sse(r)
    assert replay == results[0]
    # A second turn sending only the new message: each is sent its own conversation.
    again = await asyncio.gather(
        *(ag_ui(server, u, "assistant", run_input("again", "same")) for u in users)
    )
    for user, frames in zip(users, again, strict=True):
        snapshot = [d for _, d in frames if d["type"] == "MESSAGES_SNAPSHOT"]
        assert len(snapshot) == 1
        assert [m.get("content") for m in snapshot[0]["messages"]] == [
            secrets_of[user.user_id],
            f"You said: {secrets_of[user.user_id]}",
            "again",
        ]
        others = [s for uid, s in secrets_of.items() if uid != user.user_id]
        assert not any(s in json.dumps([d for _, d in frames]) for s in others)


async def test_resume_with_last_event_id_has_no_gap_and_no_duplicate(
    server: ServerHandle, alice: User
) -> None:
    body = run_input("events=400", "resume")
    async with http(server, alice) as c, asyncio.timeout(30):
        async with c.stream("POST", "/v1/agents/benchmark/ag-ui", json=body) as r:
            first = await read_sse(r, limit=150)
    # Drop after a message that carries an id, as an EventSource remembers the last one.
    while first[-1][0] is None:
        first.pop()
    last_id = first[-1][0]
    async with http(server, alice) as c, asyncio.timeout(30):
        async with c.stream(
            "GET",
            "/v1/agents/benchmark/ag-ui/resume/stream",
            headers={"Last-Event-ID": str(last_id)},
        ) as r:
            assert r.status_code == 200
            rest = await read_sse(r)
    async with http(server, alice) as c, asyncio.timeout(30):
        async with c.stream("GET", "/v1/agents/benchmark/ag-ui/resume/stream") as r:
            whole = await read_sse(r)
    assert types(whole)[0] == "RUN_STARTED" and types(whole)[-1] == "RUN_FINISHED"
    assert first + rest == whole
    assert whole[0][1]["runId"] == body["runId"]
    # The resume stream of another user, of an unknown id, or of another agent: 404.
    bob = await new_user(server)
    for user, path in (
        (bob, "/v1/agents/benchmark/ag-ui/resume/stream"),
        (alice, "/v1/agents/benchmark/ag-ui/nope/stream"),
        (alice, "/v1/agents/assistant/ag-ui/resume/stream"),
    ):
        async with http(server, user) as c:
            r = await c.get(path)
            assert r.status_code == 404, path
            assert r.json() == {"error": {"code": "not_found", "message": "not found"}}


async def test_a_deleted_thread_starts_anew_under_its_thread_id(
    server: ServerHandle, alice: User
) -> None:
    await ag_ui(server, alice, "assistant", run_input("one", "again"))
    thread = await only_thread(server, alice)
    async with http(server, alice) as c:
        assert (await c.delete(f"/v1/threads/{thread['id']}")).status_code == 204
    frames = await ag_ui(server, alice, "assistant", run_input("two", "again"))
    assert frames[-1][1]["result"] == "You said: two"
    assert (await only_thread(server, alice))["id"] != thread["id"]


def _event(kind: str, **fields: Any) -> dict[str, Any]:
    return {
        "type": kind,
        "run_id": "run_1",
        "execution_id": "exe_root",
        "agent_name": "a",
        **fields,
    }


@pytest.mark.parametrize("kind", sorted(EVENT_TYPES))
def test_every_tenet_event_type_maps_as_documented(kind: str) -> None:
    """Each type maps to the AG-UI events docs/ag-ui.md lists for it (and every one is there)."""
    expected = {
        "agent_started": ["RUN_STARTED"],
        "agent_thinking": [
            "REASONING_START",
            "REASONING_MESSAGE_START",
            "REASONING_MESSAGE_CONTENT",
            "REASONING_MESSAGE_END",
            "REASONING_END",
        ],
        "message_delta": ["TEXT_MESSAGE_START", "TEXT_MESSAGE_CONTENT"],
        "tool_executing": ["TOOL_CALL_START", "TOOL_CALL_ARGS", "TOOL_CALL_END"],
        "tool_completed": ["TOOL_CALL_RESULT"],
        "agent_completed": [
            "TEXT_MESSAGE_START",
            "TEXT_MESSAGE_CONTENT",
            "TEXT_MESSAGE_END",
            "RUN_FINISHED",
        ],
        "agent_error": ["RUN_ERROR"],
        "run_cancelled": ["RUN_ERROR"],
    }
    fields = {
        "agent_started": {"depth": 0, "input": "hi"},
        "agent_thinking": {"reasoning": "hmm", "step": 1},
        "message_delta": {"text": "a"},
        "tool_executing": {"tool_name": "t", "call_id": "c", "parameters": {"x": 1}},
        "tool_completed": {"tool_name": "t", "call_id": "c", "ok": True, "results": [1]},
        "agent_completed": {"depth": 0, "final_response": "done", "status": "completed"},
        "agent_error": {"depth": 0, "error": {"code": "timeout", "message": "slow"}},
        "run_cancelled": {"reason": "user", "status": "cancelled"},
    }
    view = AgUiView(run_id="run_1", client_thread_id="t", client_run_id="r")
    if kind == "tool_completed":  # a result of a call this run made
        view.map(_event("tool_executing", **fields["tool_executing"]))
    mapped = view.map(_event(kind, **fields[kind]))
    assert [e.type.value for e in mapped] == expected[kind]
    doc = (Path(__file__).parents[2] / "docs" / "ag-ui.md").read_text()
    assert f"`{kind}`" in doc
    for name in expected[kind]:
        assert f"`{name}`" in doc


def test_unknown_event_types_are_not_shown_and_text_closes_before_other_events() -> None:
    view = AgUiView(run_id="run_1", client_thread_id="t", client_run_id="r")
    assert [e.type.value for e in view.map(_event("agent_started", depth=0))] == ["RUN_STARTED"]
    assert view.map(_event("approval_requested", call_id="c")) == []
    view.map(_event("message_delta", text="a"))
    closing = view.map(_event("agent_started", depth=1, execution_id="exe_child"))
    assert [e.type.value for e in closing] == ["TEXT_MESSAGE_END", "STEP_STARTED"]
    child = view.map(_event("agent_error", depth=1, execution_id="exe_child", error={}))
    assert [e.type.value for e in child] == ["STEP_FINISHED"]
    # The root streamed its answer: the final answer is not sent a second time.
    view.map(_event("message_delta", text="answer"))
    end = view.map(_event("agent_completed", depth=0, final_response="answer"))
    assert [e.type.value for e in end] == ["TEXT_MESSAGE_END", "RUN_FINISHED"]
    assert view.finished


BOOKING_TOOL = {
    "name": "confirm_booking",
    "description": "Ask the person to confirm a booking.",
    "parameters": {"type": "object", "properties": {"day": {"type": "string"}}},
}


async def test_a_front_end_tool_call_is_streamed_then_the_run_finishes_with_it_pending(
    server: ServerHandle, alice: User
) -> None:
    body = run_input("use confirm_booking day=monday", "fe", tools=[BOOKING_TOOL])
    frames = await ag_ui(server, alice, "assistant", body)
    got = types(frames)
    assert "TOOL_CALL_RESULT" not in got  # the client runs it
    start = got.index("TOOL_CALL_START")
    assert got[start : start + 3] == ["TOOL_CALL_START", "TOOL_CALL_ARGS", "TOOL_CALL_END"]
    call = frames[start][1]
    assert call["toolCallName"] == "confirm_booking"
    assert json.loads(frames[start + 1][1]["delta"]) == {"day": "monday"}
    assert got[-1] == "RUN_FINISHED"
    assert frames[-1][1]["outcome"] == {
        "type": "success",
        "pendingToolCallIds": [call["toolCallId"]],
    }
    # Stored as an ordinary run: the call and its hand-over, then the run's end.
    stored = await stored_events(server, alice, (await only_thread(server, alice))["id"])
    kinds = [e["type"] for e in stored]
    assert kinds[-3:] == ["tool_executing", "tool_completed", "agent_completed"]
    assert stored[-2]["error"]["code"] == "client_tool" and stored[-2]["ok"] is False


async def test_front_end_tools_are_offered_beside_the_agents_own(
    server: ServerHandle, alice: User
) -> None:
    frames = await ag_ui(
        server, alice, "assistant", run_input("what is 2+2", "fe2", tools=[BOOKING_TOOL])
    )
    assert [d["toolCallName"] for _, d in frames if d["type"] == "TOOL_CALL_START"] == [
        "calculator"
    ]
    assert frames[-1][1]["result"] == "The answer is 4." and "outcome" not in frames[-1][1]


async def test_a_front_end_tool_may_not_shadow_a_server_tool(
    server: ServerHandle, alice: User
) -> None:
    for tools in (
        [{**BOOKING_TOOL, "name": "calculator"}],
        [BOOKING_TOOL, BOOKING_TOOL],
        [{**BOOKING_TOOL, "name": "has spaces"}],
    ):
        frames = await ag_ui(server, alice, "assistant", run_input("what is 2+2", "x", tools=tools))
        assert types(frames) == ["RUN_STARTED", "RUN_ERROR"]
        assert frames[-1][1]["code"] == "invalid"
    async with http(server, alice) as c:  # refused before anything was made
        assert (await c.get("/v1/threads")).json() == []


async def test_on_postgres_a_run_streams_and_resumes_the_same(
    server_factory: ServerFactory, postgres_url: str
) -> None:
    async with server_factory(database_url=postgres_url) as server:
        user = await new_user(server)
        body = run_input("events=60", "pg")
        async with http(server, user) as c, asyncio.timeout(30):
            async with c.stream("POST", "/v1/agents/benchmark/ag-ui", json=body) as r:
                first = await read_sse(r, limit=20)
        while first[-1][0] is None:
            first.pop()
        async with http(server, user) as c, asyncio.timeout(30):
            async with c.stream(
                "GET",
                "/v1/agents/benchmark/ag-ui/pg/stream",
                headers={"Last-Event-ID": str(first[-1][0])},
            ) as r:
                rest = await read_sse(r)
            async with c.stream("GET", "/v1/agents/benchmark/ag-ui/pg/stream") as r:
                whole = await read_sse(r)
        assert types(whole)[-1] == "RUN_FINISHED"
        assert first + rest == whole


async def test_a_stream_whose_events_cannot_be_read_ends_with_a_run_error(
    server: ServerHandle, alice: User, monkeypatch: pytest.MonkeyPatch
) -> None:
    await ag_ui(server, alice, "assistant", run_input("first", "broken"))
    real = server.service.store.list_events
    calls = [0]

    async def unreadable(*args: Any, **kwargs: Any) -> list[str]:
        calls[0] += 1
        if calls[0] == 1:  # finding the run, before the stream starts, works
            return await real(*args, **kwargs)
        raise OSError("the store went away")

    monkeypatch.setattr(server.service.store, "list_events", unreadable)
    async with http(server, alice) as c, asyncio.timeout(30):
        async with c.stream(
            "GET", "/v1/agents/assistant/ag-ui/broken/stream", headers={"Last-Event-ID": "1"}
        ) as r:
            assert r.status_code == 200
            frames = await read_sse(r)
    assert types(frames) == ["RUN_ERROR"] and frames[0][1]["code"] == "unavailable"


async def test_too_many_open_streams_is_429_before_any_run_is_made(
    server_factory: ServerFactory,
) -> None:
    async with server_factory(sse_max_streams=1) as server:
        user = await new_user(server)
        async with http(server, user) as c:
            thread = (await c.post("/v1/threads", json={})).json()["id"]
            async with c.stream("GET", f"/v1/threads/{thread}/stream") as open_stream:
                lines = open_stream.aiter_lines()
                assert await anext(lines) == ": stream open"  # it holds the one place
                r = await c.post("/v1/agents/assistant/ag-ui", json=run_input("hi", "full"))
                assert r.status_code == 429
                assert r.json()["error"]["code"] == "rate_limited"
            threads = (await c.get("/v1/threads")).json()
        assert [t["id"] for t in threads] == [thread]  # no AG-UI thread, no run
