"""The official AG-UI client (``@ag-ui/client``'s ``HttpAgent``, run by Node) against tenet.

``HttpAgent.runAgent`` passes every stream through the client's own event verifier
and rejects a stream that breaks the protocol, so a finished conversation here
means the client accepted every event tenet sent. The client is pinned by
``tests/ag_ui_client/package-lock.json`` and installed by ``.ci/run`` (``npm ci``).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
from pathlib import Path

import pytest
from server_support import User, http

from tenet.testing import ServerHandle

CLIENT = Path(__file__).parents[1] / "ag_ui_client"


def _node() -> str:
    """Node, with the client installed; skipped on a machine without them, never in CI."""
    node = shutil.which("node")
    missing = None
    if node is None:
        missing = "Node.js is not installed: the official AG-UI client test needs Node 20+"
    elif not (CLIENT / "node_modules" / "@ag-ui" / "client").is_dir():
        missing = "run `npm ci` in tests/ag_ui_client to install the official AG-UI client"
    if missing is not None:
        if os.environ.get("CI"):  # .ci/run installs both: missing there is a broken install
            pytest.fail(missing)
        pytest.skip(missing)
    assert node is not None
    return node


async def test_the_official_client_runs_a_conversation_with_tools_a_delegation_and_a_cancel(
    server: ServerHandle, alice: User
) -> None:
    node = _node()
    proc = await asyncio.create_subprocess_exec(
        node,
        "run.mjs",
        cwd=CLIENT,
        env={**os.environ, "TENET_URL": server.url, "TENET_TOKEN": alice.token},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(90):
        out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()[-3000:]
    report = json.loads(out.decode().strip().splitlines()[-1])

    first = report["first"]
    assert first["result"] == "The answer is 42."
    assert first["toolCalls"] == ["calculator"]
    assert first["types"][0] == "RUN_STARTED" and first["types"][-1] == "RUN_FINISHED"
    assert {"TOOL_CALL_RESULT", "REASONING_MESSAGE_CONTENT", "TEXT_MESSAGE_CONTENT"} <= set(
        first["types"]
    )
    assert "tool" in first["roles"] and first["roles"][-1] == "assistant"
    # The second turn of the same conversation (same threadId): one tenet thread.
    assert report["second"]["result"] == "You said: hello again"
    assert report["messages"] >= 7  # the client kept both turns' messages

    research = report["research"]
    assert research["steps"] == [
        "STEP_STARTED:triage",
        "STEP_FINISHED:triage",
        "STEP_STARTED:data",
        "STEP_FINISHED:data",
        "STEP_STARTED:reporting",
        "STEP_FINISHED:reporting",
    ]
    assert research["result"].startswith("Report.")
    assert "404" in report["unknown"]["error"]

    # A cancel through tenet's API (the run id from RUN_STARTED): the stream ends in RUN_ERROR.
    cancel = report["cancel"]
    assert cancel["error"] is None
    assert cancel["types"][0] == "RUN_STARTED" and "cancel:202" in cancel["types"]
    assert cancel["types"][-2:] == ["RUN_ERROR", "code:cancelled"]

    # A front-end tool: offered, called by the model, handed to the client as pending.
    front = report["frontEnd"]
    assert [c["name"] for c in front["calls"]] == ["confirm_booking"]
    assert json.loads(front["calls"][0]["args"]) == {"day": "monday"}
    assert front["pending"] == [front["calls"][0]["id"]]
    assert "TOOL_CALL_RESULT" not in front["types"] and front["types"][-1] == "RUN_FINISHED"
    # Its result, sent by the client in the next run, is what the model answers from; the
    # client's messages are the stored conversation, so no snapshot replaces them.
    after = report["frontEndResult"]
    assert "confirmed" in after["result"]
    assert after["types"][0] == "RUN_STARTED" and after["types"][-1] == "RUN_FINISHED"
    assert "MESSAGES_SNAPSHOT" not in after["types"]
    assert "TOOL_CALL_START" not in after["types"] and after["roles"][-1] == "assistant"
    # A front end with none of the thread's messages is sent them, as the model gets them.
    fresh = report["fresh"]
    assert fresh["types"][:2] == ["RUN_STARTED", "MESSAGES_SNAPSHOT"]
    assert fresh["calls"] == ["calculator", "confirm_booking"]
    assert fresh["roles"][-1] == "assistant" and fresh["roles"].count("user") == 4
    assert fresh["roles"].count("tool") == 2
    # State is echoed; the context reached the run (the answer is the model's own).
    state = report["state"]
    assert state["types"][:2] == ["RUN_STARTED", "STATE_SNAPSHOT"]
    assert state["state"] == {"cart": ["tea"], "step": 2}

    # An approval: the interrupt outcome, kept by the client as pending, answered by resume.
    approval = report["approval"]
    assert approval["outcomes"] == ["interrupt"] and approval["askedTypes"][-1] == "RUN_FINISHED"
    [interrupt] = approval["interrupts"]
    assert interrupt["reason"] == "tool_approval" and interrupt["toolCallId"] == interrupt["id"]
    assert "pending interrupt" in approval["unanswered"]
    assert approval["approvedOutcomes"] == ["success"] and approval["pendingAfter"] == 0
    assert approval["approvedTypes"][0] == "RUN_STARTED"
    assert "TOOL_CALL_RESULT" in approval["approvedTypes"] and approval["calls"] == ["forget"]
    assert await server.service.store.list_notes(alice.user_id) == []

    async with http(server, alice) as c:
        threads = (await c.get("/v1/threads")).json()
    assert sorted(t["metadata"]["ag_ui_thread_id"] for t in threads) == [
        "node-approval",
        "node-cancel",
        "node-chat",
        "node-research",
        "node-state",
    ]
