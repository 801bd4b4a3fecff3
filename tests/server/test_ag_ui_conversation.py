"""AG-UI conversations: front-end tool round trips, MESSAGES_SNAPSHOT, state and context.

The model is a real chat-completions HTTP endpoint that answers 400 where OpenAI
does (``chat_rules``): a front-end tool's call must reach it paired with the
result the client returned, in the run that carries it and in every later one.
"""

from __future__ import annotations

import json
import secrets
from typing import Any

import orjson
from server_support import ServerFactory, User, http, new_user
from test_ag_ui import Frame, ag_ui, read_sse, run_input, types

from tenet.agents import Agent
from tenet.context import RunContext
from tenet.examples import default_registry
from tenet.registry import AgentRegistry
from tenet.testing import ServerHandle
from test_openai_model import Reply, chunk, fake_llm

BOOKING = {
    "name": "confirm_booking",
    "description": "Ask the person to confirm a booking.",
    "parameters": {"type": "object", "properties": {"day": {"type": "string"}}},
}


def booking_script(body: dict[str, Any]) -> Reply:
    """Asks the front end to confirm a booking, then answers from what it returned."""
    last = body["messages"][-1]
    if last["role"] == "tool":
        return Reply(
            [chunk(role="assistant", content=""), chunk(content=f"Done: {last['content']}")]
        )
    if "book" in str(last.get("content")):
        call = {
            "index": 0,
            "id": "call_book1",
            "type": "function",
            "function": {"name": "confirm_booking", "arguments": '{"day": "monday"}'},
        }
        return Reply([chunk(role="assistant", tool_calls=[call])])
    return Reply([chunk(role="assistant", content=""), chunk(content="ok")])


def llm_settings(base_url: str) -> dict[str, Any]:
    return {
        "model": "openai",
        "model_base_url": base_url,
        "model_api_key": "k",
        "model_name": "fake-model",
    }


def message(role: str, **fields: Any) -> dict[str, Any]:
    return {"id": f"{role}-{secrets.token_hex(4)}", "role": role, **fields}


def call_message(call_id: str) -> dict[str, Any]:
    return message(
        "assistant",
        toolCalls=[
            {
                "id": call_id,
                "type": "function",
                "function": {"name": "confirm_booking", "arguments": '{"day": "monday"}'},
            }
        ],
    )


def snapshot_of(frames: list[Frame]) -> list[dict[str, Any]] | None:
    found = [d for _, d in frames if d["type"] == "MESSAGES_SNAPSHOT"]
    assert len(found) <= 1
    return found[0]["messages"] if found else None


async def hand_over(server: ServerHandle, thread: str) -> tuple[User, dict[str, Any], list[Frame]]:
    """A new user asks for a booking on ``thread``: the run hands ``call_book1`` over."""
    user = await new_user(server)
    ask = message("user", content="book a table")
    frames = await ag_ui(
        server, user, "assistant", run_input("", thread, messages=[ask], tools=[BOOKING])
    )
    return user, ask, frames


async def test_a_front_end_tool_result_continues_the_conversation_paired_with_its_call(
    server_factory: ServerFactory,
) -> None:
    async with fake_llm(booking_script) as llm:
        async with server_factory(**llm_settings(llm.base_url)) as server:
            alice, ask, first = await hand_over(server, "b")
            assert types(first)[-1] == "RUN_FINISHED"
            assert first[-1][1]["outcome"]["pendingToolCallIds"] == ["call_book1"]
            assert "TOOL_CALL_RESULT" not in types(first)
            assert snapshot_of(first) is None  # the client's one message is the conversation

            # The front end ran it and sends the whole list back, its result last.
            result = message("tool", toolCallId="call_book1", content='{"confirmed": true}')
            history = [ask, call_message("call_book1"), result]
            second = await ag_ui(
                server, alice, "assistant", run_input("", "b", messages=history, tools=[BOOKING])
            )
            assert types(second)[0] == "RUN_STARTED" and types(second)[-1] == "RUN_FINISHED"
            assert second[-1][1]["result"] == 'Done: {"confirmed":true}'
            # Its own result is not echoed back to it, nor the conversation it already has.
            assert "TOOL_CALL_RESULT" not in types(second) and snapshot_of(second) is None
            sent = llm.requests[-1]["messages"]
            assert [m["role"] for m in sent[-3:]] == ["user", "assistant", "tool"]
            assert sent[-2]["tool_calls"][0]["id"] == "call_book1"
            assert sent[-1] == {
                "role": "tool",
                "tool_call_id": "call_book1",
                "content": '{"confirmed":true}',
            }

            # A later turn: the call and its result stay paired in the history, once.
            done = message("assistant", content=second[-1][1]["result"])
            later = [*history, done, message("user", content="thanks")]
            third = await ag_ui(server, alice, "assistant", run_input("", "b", messages=later))
            assert third[-1][1]["result"] == "ok" and snapshot_of(third) is None
            sent = llm.requests[-1]["messages"]
            assert [m["role"] for m in sent] == [
                "system",
                "user",
                "assistant",
                "tool",
                "assistant",
                "user",
            ]
            assert sent[4]["content"] == 'Done: {"confirmed":true}'
            # The same tool message again (clients resend everything) is not read twice:
            # with no new user message it is a 422, and nothing was stored.
            async with http(server, alice) as c:
                r = await c.post(
                    "/v1/agents/assistant/ag-ui", json=run_input("", "b", messages=history)
                )
                assert r.status_code == 422 and r.json()["error"]["code"] == "invalid"
            # A client that lost its list gets the stored conversation the model is sent.
            fresh = await ag_ui(
                server,
                alice,
                "assistant",
                run_input("", "b", messages=[message("user", content="again")]),
            )
            snap = snapshot_of(fresh)
            assert snap is not None and types(fresh)[:2] == ["RUN_STARTED", "MESSAGES_SNAPSHOT"]
            assert [m["role"] for m in snap] == [
                "user",
                "assistant",
                "tool",
                "assistant",
                "user",
                "assistant",
                "user",
            ]
            assert snap[1]["toolCalls"][0]["id"] == "call_book1" and snap[1]["id"] == "call_book1"
            assert snap[2]["toolCallId"] == "call_book1" and snap[-1]["content"] == "again"
            # Its resume stream, whole, is the live stream again, snapshot included.
            async with http(server, alice) as c:
                async with c.stream("GET", "/v1/agents/assistant/ag-ui/b/stream") as r:
                    assert await read_sse(r) == fresh
            assert llm.rejected == []


async def test_another_users_call_id_is_as_unknown_as_none(
    server_factory: ServerFactory,
) -> None:
    async with fake_llm(booking_script) as llm:
        async with server_factory(**llm_settings(llm.base_url)) as server:
            alice, ask, _ = await hand_over(server, "same")
            bob = await new_user(server)
            result = message("tool", toolCallId="call_book1", content="yes")
            answers = []
            for user, thread in ((bob, "same"), (bob, "never-used"), (alice, "never-used")):
                async with http(server, user) as c:
                    r = await c.post(
                        "/v1/agents/assistant/ag-ui",
                        json=run_input(
                            "", thread, messages=[ask, call_message("call_book1"), result]
                        ),
                    )
                    answers.append((r.status_code, r.json()))
            assert answers[0] == answers[1] == answers[2]
            assert answers[0][0] == 422
            async with http(server, bob) as c:
                assert (await c.get("/v1/threads")).json() == []
            assert len(llm.requests) == 1


class Echo(Agent):
    """Answers with what the caller gave it beside the input."""

    async def run(self, ctx: RunContext, input: str) -> str:
        return json.dumps({"state": ctx.client_state, "context": list(ctx.client_context)})


async def test_state_and_context_reach_the_run_and_state_is_echoed(
    server_factory: ServerFactory,
) -> None:
    async with fake_llm(booking_script) as llm:
        settings = llm_settings(llm.base_url)
        async with server_factory(**settings) as server:
            alice = await new_user(server)
            state = {"cart": [1, 2], "step": "pay"}
            context = [{"description": "city", "value": "Paris"}]
            frames = await ag_ui(
                server, alice, "assistant", run_input("hello", "s", state=state, context=context)
            )
            got = types(frames)
            assert got[:2] == ["RUN_STARTED", "STATE_SNAPSHOT"]
            assert frames[1][1]["snapshot"] == state
            system = llm.requests[-1]["messages"][0]
            assert system["role"] == "system"
            assert system["content"].endswith("Context from the application:\n- city: Paris")
            plain = await ag_ui(server, alice, "assistant", run_input("hello", "s2"))
            assert "STATE_SNAPSHOT" not in types(plain)
            assert "Context from" not in json.dumps(llm.requests[-1]["messages"])
    registry = AgentRegistry([*default_registry(), Echo("echo")])
    async with server_factory(registry=registry) as server:
        alice = await new_user(server)
        frames = await ag_ui(
            server, alice, "echo", run_input("x", "e", state=state, context=context)
        )
        assert orjson.loads(frames[-1][1]["result"]) == {"state": state, "context": context}


class Forwarded(Agent):
    """Answers with the front end's ``forwardedProps`` as the run reads them."""

    async def run(self, ctx: RunContext, input: str) -> str:
        return json.dumps({"forwarded": ctx.client_forwarded_props})


async def test_forwarded_props_reach_the_run_as_sent(server_factory: ServerFactory) -> None:
    registry = AgentRegistry([*default_registry(), Forwarded("forwarded")])
    async with server_factory(registry=registry) as server:
        alice = await new_user(server)
        props = {"mode": "fast", "ids": [1, 2], "nested": {"ok": True}}
        body = run_input("x", "f", forwardedProps=props)
        frames = await ag_ui(server, alice, "forwarded", body)
        assert orjson.loads(frames[-1][1]["result"]) == {"forwarded": props}
        # Kept with the run, not with the thread: a run sent none (or {}) reads None.
        frames = await ag_ui(server, alice, "forwarded", run_input("y", "f"))
        assert orjson.loads(frames[-1][1]["result"]) == {"forwarded": None}
        body = run_input("z", "f")
        del body["forwardedProps"]
        frames = await ag_ui(server, alice, "forwarded", body)
        assert orjson.loads(frames[-1][1]["result"]) == {"forwarded": None}
        # A value the store cannot hold is refused before anything is made.
        async with http(server, alice) as c:
            deep: Any = []
            for _ in range(300):  # deeper than the store's JSON encoder goes
                deep = [deep]
            r = await c.post(
                "/v1/agents/forwarded/ag-ui", json=run_input("w", "g", forwardedProps=deep)
            )
            assert r.status_code == 422, r.text


async def test_a_front_end_call_never_answered_is_left_out_of_the_history(
    server_factory: ServerFactory,
) -> None:
    async with fake_llm(booking_script) as llm:
        async with server_factory(**llm_settings(llm.base_url)) as server:
            alice, ask, _ = await hand_over(server, "n")
            # The person moved on without running it: a user message, no tool message.
            moved = [ask, call_message("call_book1"), message("user", content="never mind")]
            frames = await ag_ui(server, alice, "assistant", run_input("", "n", messages=moved))
            assert frames[-1][1]["result"] == "ok"
            sent = llm.requests[-1]["messages"]
            assert [(m["role"], m.get("content")) for m in sent[1:]] == [
                ("user", "book a table"),
                ("user", "never mind"),
            ]
            # The client still holds the call the stored conversation leaves out: a snapshot.
            snap = snapshot_of(frames)
            assert snap is not None and [m["role"] for m in snap] == ["user", "user"]
            assert llm.rejected == []


async def test_a_front_end_tool_that_failed_reaches_the_model_as_its_error(
    server_factory: ServerFactory,
) -> None:
    async with fake_llm(booking_script) as llm:
        async with server_factory(**llm_settings(llm.base_url)) as server:
            alice, ask, _ = await hand_over(server, "f")
            failed = message("tool", toolCallId="call_book1", content="", error="no network")
            history = [ask, call_message("call_book1"), failed]
            await ag_ui(server, alice, "assistant", run_input("", "f", messages=history))
            sent = llm.requests[-1]["messages"][-1]
            assert sent["role"] == "tool" and sent["tool_call_id"] == "call_book1"
            assert orjson.loads(sent["content"]) == {
                "error": {"code": "client_tool_failed", "message": "no network"}
            }
            assert llm.rejected == []
