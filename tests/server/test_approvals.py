"""Human in the loop: tool approvals and questions, answered over WebSocket and HTTP.

A run that needs a person pauses: its requests are stored with their events, its
status is ``requires_action``, and its execution ends (no task, no slot). An
answer, from any connection, resumes it from what is stored. Real server, real
clients; side effects are counted in a file, so a repeat would show.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import orjson
import pytest
from approval_agents import effects, registry
from server_support import (
    TERMINAL,
    User,
    http,
    new_user,
    ready,
    recv,
    send,
    ws_connect,
)

from tenet.testing import ServerHandle


@pytest.fixture(autouse=True)
def effects_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "effects.txt"
    monkeypatch.setenv("TENET_TEST_EFFECTS", str(path))
    return path


def calls(*pairs: tuple[str, dict[str, Any]]) -> str:
    return orjson.dumps([list(p) for p in pairs]).decode()


async def frames_until(ws: Any, stop: Any, timeout: float = 15.0) -> list[dict[str, Any]]:
    """Every frame up to and including the first for which ``stop(frame)`` is true."""
    out = []
    async with asyncio.timeout(timeout):
        while True:
            frame = await recv(ws, timeout)
            out.append(frame)
            if stop(frame):
                return out


def of_type(kind: str, n: int = 1) -> Any:
    seen = 0

    def stop(frame: dict[str, Any]) -> bool:
        nonlocal seen
        if frame.get("type") == kind:
            seen += 1
        return seen >= n

    return stop


def terminal(frame: dict[str, Any]) -> bool:
    return frame.get("type") in TERMINAL and frame.get("depth", 0) == 0


async def start_run(ws: Any, agent: str, input: str, thread_id: str | None = None) -> str:
    frame = {"type": "run", "agent": agent, "input": input}
    if thread_id:
        frame["thread_id"] = thread_id
    await send(ws, frame)
    accepted = await recv(ws)
    assert accepted["type"] == "run_accepted", accepted
    return str(accepted["run_id"])


async def run_status(srv: ServerHandle, user: User, run_id: str) -> str:
    async with http(srv, user) as c:
        r = await c.get(f"/v1/runs/{run_id}")
        assert r.status_code == 200
        return str(r.json()["status"])


def types(frames: list[dict[str, Any]]) -> list[str]:
    return [f["type"] for f in frames]


async def test_an_approved_call_runs_after_the_run_waited_without_a_task(server_factory) -> None:
    async with server_factory(registry=registry()) as srv:
        alice = await new_user(srv)
        async with ws_connect(srv, alice) as ws:
            await ready(ws)
            run_id = await start_run(ws, "guarded", calls(("delete", {"path": "a"})))
            before = await frames_until(ws, of_type("approval_requested"))
            asked = before[-1]
            assert asked["call_id"] == "call_0" and asked["tool_name"] == "delete"
            assert asked["parameters"] == {"path": "a"} and asked["expires_at"]
            assert "tool_executing" not in types(before)
            assert await run_status(srv, alice, run_id) == "requires_action"
            engine = srv.service.engine
            assert run_id not in engine.runs and engine.running_count == 0  # no task, no slot
            assert effects() == []

            await send(
                ws,
                {"type": "approve", "run_id": run_id, "call_id": "call_0", "approved": True},
            )
            after = await frames_until(ws, terminal)
            assert after[0] == {"type": "approval_accepted", "run_id": run_id, "call_id": "call_0"}
            kinds = types(after)
            assert kinds.index("approval_resolved") < kinds.index("tool_executing")
            resolved = after[kinds.index("approval_resolved")]
            assert resolved["approved"] is True and resolved["by"] == "user"
            assert after[-1]["type"] == "agent_completed"
            assert after[-1]["final_response"] == 'results: "deleted a"'
        assert effects() == ["deleted a"]
        assert await run_status(srv, alice, run_id) == "completed"
        # One run, one execution: the resumed events carry the run's own execution id.
        root = {f["execution_id"] for f in before + after if "execution_id" in f}
        assert len(root) == 1
