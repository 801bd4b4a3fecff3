"""Text from models, tools and agents is made valid before it is stored; bad client text is 422.

An emoji streamed as its two UTF-16 halves in consecutive pieces is joined into
one character; a half without its partner becomes U+FFFD. Either way the run
ends normally and no event is lost (``agent_started`` and ``started_at``
included). A body that escapes a lone surrogate is 422 ``invalid`` over HTTP,
as it is an ``invalid`` frame over WebSocket.
"""

from __future__ import annotations

from typing import Any

import pytest
from server_support import http, new_user, ready, recv, send, until_terminal, wait_run, ws_connect

from tenet.agents import Agent
from tenet.context import RunContext
from tenet.examples import default_registry
from tenet.registry import AgentRegistry
from tenet.settings import Settings
from tenet.testing import running_server
from tenet.tools import tool

HIGH, LOW = "\ud83d", "\ude00"  # the two halves of U+1F600
EMOJI = "\U0001f600"
FFFD = "\ufffd"


@tool
async def echo_half(text: str) -> str:
    """Answer with a lone surrogate appended."""
    return text + "\ud800"


@tool
async def remember_half(ctx: RunContext) -> list[str]:
    """Store a note holding a lone half, then read the notes back."""
    await ctx.notes.add("note " + HIGH)
    return await ctx.notes.search()


class Halves(Agent):
    """Streams an emoji in halves, lone halves, and tool results with lone halves."""

    def __init__(self) -> None:
        super().__init__(name="halves", tools=[echo_half, remember_half])

    async def run(self, ctx: RunContext, input: str) -> str:
        await ctx.say("a " + HIGH)
        await ctx.say(LOW + " b")
        await ctx.say(HIGH)  # a half followed by no partner
        await ctx.say("c")
        await ctx.say("\udc00")  # a lone low half
        await ctx.think("thinking " + LOW)
        await ctx.call_tool("echo_half", text="t" + HIGH)
        await ctx.call_tool("remember_half")
        await ctx.say("end " + HIGH)  # held back, never completed: U+FFFD before the end
        return "done " + HIGH + LOW + " " + "\udfff"


@pytest.fixture
def registry() -> AgentRegistry:
    return AgentRegistry([*default_registry(), Halves()])


async def test_split_and_lone_surrogates_are_repaired_and_no_event_is_lost(
    database_url: str, registry: AgentRegistry
) -> None:
    async with running_server(Settings(database_url=database_url), registry) as srv:
        user = await new_user(srv)
        async with ws_connect(srv, user) as ws, http(srv, user) as c:
            await ready(ws)
            await send(ws, {"type": "run", "agent": "halves", "input": "go"})
            accepted = await recv(ws)
            frames = await until_terminal(ws, accepted["run_id"])
            run = (await c.get(f"/v1/runs/{accepted['run_id']}")).json()
            stored = (await c.get(f"/v1/threads/{accepted['thread_id']}/events")).json()
            messages = (await c.get(f"/v1/threads/{accepted['thread_id']}/messages")).json()
    types = [f["type"] for f in frames]
    assert types[0] == "agent_started"
    assert types[-1] == "agent_completed", frames[-1]
    assert stored == frames
    deltas = [f["text"] for f in frames if f["type"] == "message_delta"]
    assert deltas == ["a ", EMOJI + " b", FFFD + "c", FFFD, "end ", FFFD]
    thinking = [f["reasoning"] for f in frames if f["type"] == "agent_thinking"]
    assert thinking == ["thinking " + FFFD]
    results = [f["results"] for f in frames if f["type"] == "tool_completed"]
    executing = [f["parameters"] for f in frames if f["type"] == "tool_executing"]
    assert executing[0] == {"text": "t" + FFFD}
    assert results == ["t" + FFFD + FFFD, ["note " + FFFD]]
    final = "done " + EMOJI + " " + FFFD
    assert frames[-1]["final_response"] == final
    assert run["status"] == "completed"
    assert run["started_at"] is not None
    assert run["output"] == final
    assert messages[-1]["content"] == final


def _raw(body: str) -> dict[str, Any]:
    return {"content": body.encode(), "headers": {"Content-Type": "application/json"}}


@pytest.mark.parametrize(
    "path_body",
    [
        ("runs", '{"agent": "assistant", "input": "hi \\ud83d"}'),
        ("runs", '{"agent": "assistant", "input": "\\ude00 after"}'),
        ("runs", '{"agent": "assistant", "input": "x", "metadata": {"k": "\\ud83d"}}'),
        ("threads", '{"metadata": {"k": "v\\udfff"}}'),
        ("threads", '{"metadata": {"\\ud83d": 1}}'),
    ],
)
async def test_a_body_with_a_lone_surrogate_is_invalid(
    server_factory, path_body: tuple[str, str]
) -> None:
    path, body = path_body
    async with server_factory() as srv:
        user = await new_user(srv)
        async with http(srv, user) as c:
            thread_id = (await c.post("/v1/threads")).json()["id"]
            url = f"/v1/threads/{thread_id}/runs" if path == "runs" else "/v1/threads"
            r = await c.post(url, **_raw(body))
            assert r.status_code == 422, r.text
            assert r.json()["error"]["code"] == "invalid"
            # A pair escaped in JSON is valid text, stored as its character.
            r = await c.post(
                f"/v1/threads/{thread_id}/runs",
                **_raw('{"agent": "assistant", "input": "smile \\ud83d\\ude00"}'),
            )
            assert r.status_code == 202, r.text
            assert r.json()["input"] == "smile " + EMOJI
            await wait_run(srv, r.json()["id"])


async def test_a_frame_with_a_lone_surrogate_is_invalid(server_factory) -> None:
    async with server_factory() as srv:
        user = await new_user(srv)
        async with ws_connect(srv, user) as ws:
            await ready(ws)
            await ws.send('{"type": "run", "agent": "assistant", "input": "\\ud83d", "ref": "r"}')
            frame = await recv(ws)
            assert frame["type"] == "error" and frame["code"] == "invalid", frame
