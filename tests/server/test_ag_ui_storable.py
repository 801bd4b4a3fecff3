"""AG-UI bodies the store cannot hold are refused before anything is made.

A ``RunAgentInput`` is JSON, and JSON nests as deep as a client likes; the store's
encoder stops at 254 levels. A state, a front-end tool's parameters or a tool
result nested deeper is 422 ``invalid`` before the stream starts (never a 500), and
no thread or run is left behind. Real server, real HTTP.
"""

from __future__ import annotations

import json

from server_support import http, new_user
from test_ag_ui import BOOKING_TOOL, read_sse, run_input

from tenet.testing import ServerHandle

#: Lists nested deeper than the store's JSON encoder goes.
DEEP = "[" * 300 + "]" * 300


async def post(server: ServerHandle, token_user, body: str) -> tuple[int, dict]:
    async with http(server, token_user) as c:
        r = await c.post(
            "/v1/agents/assistant/ag-ui",
            content=body,
            headers={"content-type": "application/json"},
        )
        return r.status_code, r.json() if r.status_code != 200 else {}


async def test_deeply_nested_state_tools_or_results_are_422_and_leave_nothing(
    server: ServerHandle,
) -> None:
    alice = await new_user(server)
    state = json.dumps(run_input("hi", "s1")).replace('"state": {}', f'"state": {{"x": {DEEP}}}')
    tool = dict(BOOKING_TOOL, parameters={"type": "object", "properties": {}, "x": None})
    tools = json.dumps(run_input("hi", "s2", tools=[tool])).replace('"x": null', f'"x": {DEEP}')
    for body in (state, tools):
        status, answer = await post(server, alice, body)
        assert status == 422, answer
        assert answer["error"]["code"] == "invalid"
        assert "nesting" in answer["error"]["message"]
    async with http(server, alice) as c:
        assert (await c.get("/v1/threads")).json() == []

    # A front-end tool's result, nested as deep, for a call the client really holds.
    async with http(server, alice) as c:
        start = run_input("use confirm_booking day=monday", "fe", tools=[BOOKING_TOOL])
        async with c.stream("POST", "/v1/agents/assistant/ag-ui", json=start) as r:
            frames = await read_sse(r)
        (call,) = frames[-1][1]["outcome"]["pendingToolCallIds"]
        runs_before = len((await c.get("/v1/threads")).json())
    answer_body = run_input("", "fe", tools=[BOOKING_TOOL])
    answer_body["messages"] = [{"id": "t1", "role": "tool", "toolCallId": call, "content": DEEP}]
    status, answer = await post(server, alice, json.dumps(answer_body))
    assert status == 422 and answer["error"]["code"] == "invalid", answer
    async with http(server, alice) as c:
        assert len((await c.get("/v1/threads")).json()) == runs_before
        thread_id = (await c.get("/v1/threads")).json()[0]["id"]
        events = (await c.get(f"/v1/threads/{thread_id}/events")).json()
        assert sum(e["type"] == "agent_started" for e in events) == 1  # no second run
