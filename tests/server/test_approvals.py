"""Human in the loop: tool approvals and questions, answered over WebSocket and HTTP.

A run that needs a person pauses: its requests are stored with their events, its
status is ``requires_action``, and its execution ends (no task, no slot). An
answer, from any connection, resumes it from what is stored. Real server, real
clients; side effects are counted in a file, so a repeat would show.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
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

from tenet.clock import utc_now
from tenet.store import approvals as stored_requests
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


async def respond(ws: Any, run_id: str, request_id: str, value: Any) -> None:
    await send(ws, {"type": "respond", "run_id": run_id, "request_id": request_id, "value": value})


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


async def test_a_denied_call_does_not_run_and_the_model_is_told_why(server_factory) -> None:
    async with server_factory(registry=registry()) as srv:
        alice = await new_user(srv)
        async with ws_connect(srv, alice) as ws, http(srv, alice) as client:
            await ready(ws)
            run_id = await start_run(ws, "guarded", calls(("delete", {"path": "a"})))
            await frames_until(ws, of_type("approval_requested"))
            r = await client.post(
                f"/v1/runs/{run_id}/approvals/call_0",
                json={"approved": False, "note": "keep my files"},
            )
            assert r.status_code == 202 and r.json()["id"] == run_id
            after = await frames_until(ws, terminal)
            kinds = types(after)
            assert "tool_executing" not in kinds
            resolved = after[kinds.index("approval_resolved")]
            assert resolved["approved"] is False and resolved["by"] == "user"
            done = after[kinds.index("tool_completed")]
            assert done["ok"] is False and done["error"]["code"] == "declined"
            assert "keep my files" in done["error"]["message"]
            assert after[-1]["type"] == "agent_completed"
            assert "declined" in after[-1]["final_response"]
            assert "keep my files" in after[-1]["final_response"]
        assert effects() == []


async def test_edited_arguments_are_checked_then_used(server_factory) -> None:
    async with server_factory(registry=registry()) as srv:
        alice = await new_user(srv)
        async with ws_connect(srv, alice) as ws, http(srv, alice) as client:
            await ready(ws)
            run_id = await start_run(ws, "guarded", calls(("delete", {"path": "a"})))
            await frames_until(ws, of_type("approval_requested"))
            url = f"/v1/runs/{run_id}/approvals/call_0"
            bad = await client.post(url, json={"approved": True, "arguments": {"nope": 1}})
            assert bad.status_code == 422 and bad.json()["error"]["code"] == "invalid"
            bad = await client.post(url, json={"approved": "yes"})
            assert bad.status_code == 422
            assert await run_status(srv, alice, run_id) == "requires_action"  # still waiting
            ok = await client.post(url, json={"approved": True, "arguments": {"path": "b"}})
            assert ok.status_code == 202
            after = await frames_until(ws, terminal)
            executing = next(f for f in after if f["type"] == "tool_executing")
            assert executing["parameters"] == {"path": "b"}
            assert after[-1]["final_response"] == 'results: "deleted b"'
        assert effects() == ["deleted b"]


async def test_a_policy_decides_per_call(server_factory) -> None:
    async with server_factory(registry=registry()) as srv:
        alice = await new_user(srv)
        async with ws_connect(srv, alice) as ws:
            await ready(ws)
            await start_run(ws, "guarded", calls(("pay", {"amount": 5})))
            frames = await frames_until(ws, terminal)
            assert "approval_requested" not in types(frames)
            await start_run(ws, "guarded", calls(("pay", {"amount": 500})))
            frames = await frames_until(ws, of_type("approval_requested"))
            assert frames[-1]["parameters"] == {"amount": 500}
        assert effects() == ["paid 5"]


async def test_an_unanswered_request_times_out_as_denied(server_factory) -> None:
    async with server_factory(registry=registry(), approval_timeout_s=0.5) as srv:
        alice = await new_user(srv)
        async with ws_connect(srv, alice) as ws:
            await ready(ws)
            run_id = await start_run(ws, "guarded", calls(("delete", {"path": "a"})))
            await frames_until(ws, of_type("approval_requested"))
            after = await frames_until(ws, terminal)
            resolved = next(f for f in after if f["type"] == "approval_resolved")
            assert resolved["approved"] is False and resolved["by"] == "timeout"
            assert after[-1]["type"] == "agent_completed"
            assert await run_status(srv, alice, run_id) == "completed"
            # A question nobody answers gets None.
            run_id = await start_run(ws, "asker", "q")
            await frames_until(ws, of_type("input_requested"))
            after = await frames_until(ws, terminal)
            received = next(f for f in after if f["type"] == "input_received")
            assert received["by"] == "timeout"
            assert after[-1]["final_response"] == "hello None"
        assert effects() == ["first q", "hello None"]


async def test_a_waiting_run_can_be_cancelled(server_factory) -> None:
    async with server_factory(registry=registry()) as srv:
        alice = await new_user(srv)
        async with ws_connect(srv, alice) as ws, http(srv, alice) as client:
            await ready(ws)
            run_id = await start_run(ws, "guarded", calls(("delete", {"path": "a"})))
            asked = (await frames_until(ws, of_type("approval_requested")))[-1]
            await send(ws, {"type": "cancel", "run_id": run_id})
            after = await frames_until(ws, terminal)
            assert after[0] == {"type": "cancel_accepted", "run_id": run_id}
            assert after[-1]["type"] == "run_cancelled"
            assert after[-1]["execution_id"] == asked["execution_id"]
            assert await run_status(srv, alice, run_id) == "cancelled"
            late = await client.post(f"/v1/runs/{run_id}/approvals/call_0", json={"approved": True})
            assert late.status_code == 409
            # The thread is free again: a new run of it runs.
            thread_id = asked["thread_id"]
            await start_run(ws, "guarded", calls(("record", {"text": "next"})), thread_id)
            frames = await frames_until(ws, terminal)
            assert frames[-1]["type"] == "agent_completed"
        assert effects() == ["next"]


async def test_three_calls_of_one_turn_wait_together_each_answered_alone(server_factory) -> None:
    async with server_factory(registry=registry()) as srv:
        alice = await new_user(srv)
        paths = ("a", "b", "c")
        async with ws_connect(srv, alice) as ws, http(srv, alice) as client:
            await ready(ws)
            run_id = await start_run(
                ws, "guarded", calls(*(("delete", {"path": p}) for p in paths))
            )
            asked = await frames_until(ws, of_type("approval_requested", 3))
            ids = [f["call_id"] for f in asked if f["type"] == "approval_requested"]
            assert ids == ["call_0", "call_1", "call_2"]
            # The last two first: the run keeps waiting until every call is answered.
            for call_id, approved in (("call_2", True), ("call_1", False)):
                r = await client.post(
                    f"/v1/runs/{run_id}/approvals/{call_id}", json={"approved": approved}
                )
                assert r.status_code == 202
                assert r.json()["status"] == "requires_action"
            assert effects() == []
            r = await client.post(f"/v1/runs/{run_id}/approvals/call_0", json={"approved": True})
            assert r.status_code == 202
            after = await frames_until(ws, terminal)
            kinds = types(after)
            resolved = [f["call_id"] for f in after if f["type"] == "approval_resolved"]
            assert resolved == ["call_2", "call_1", "call_0"]
            executing = [f["call_id"] for f in after if f["type"] == "tool_executing"]
            assert executing == ["call_0", "call_2"]
            last_resolved = max(i for i, k in enumerate(kinds) if k == "approval_resolved")
            assert last_resolved < kinds.index("tool_executing")
            assert after[-1]["type"] == "agent_completed"
        assert effects() == ["deleted a", "deleted c"]


async def test_a_waiting_run_holds_no_slot_but_holds_its_thread(server_factory) -> None:
    async with server_factory(registry=registry(), user_max_runs=1) as srv:
        alice = await new_user(srv)
        async with ws_connect(srv, alice) as ws, http(srv, alice) as client:
            await ready(ws)
            waiting = await start_run(ws, "guarded", calls(("delete", {"path": "a"})))
            asked = (await frames_until(ws, of_type("approval_requested")))[-1]
            # Another thread of the same user runs to its end while the first waits.
            other = await start_run(ws, "guarded", calls(("record", {"text": "other"})))
            frames = await frames_until(ws, lambda f: terminal(f) and f.get("run_id") == other)
            assert frames[-1]["type"] == "agent_completed"
            # A later run of the waiting run's thread waits behind it.
            later = await start_run(
                ws, "guarded", calls(("record", {"text": "later"})), asked["thread_id"]
            )
            for _ in range(20):
                await asyncio.sleep(0.02)
                assert await run_status(srv, alice, later) == "queued"
            r = await client.get("/v1/runs", params={"status": "requires_action"})
            assert [x["id"] for x in r.json()] == [waiting]
            await client.post(f"/v1/runs/{waiting}/approvals/call_0", json={"approved": True})
            frames = await frames_until(ws, lambda f: terminal(f) and f.get("run_id") == later)
            ended = [f["run_id"] for f in frames if terminal(f)]
            assert ended == [waiting, later]
        assert effects() == ["other", "deleted a", "later"]


async def test_a_question_is_answered_and_checked_against_its_schema(server_factory) -> None:
    async with server_factory(registry=registry()) as srv:
        alice = await new_user(srv)
        async with ws_connect(srv, alice) as ws:
            await ready(ws)
            run_id = await start_run(ws, "asker", "q")
            asked = (await frames_until(ws, of_type("input_requested")))[-1]
            assert asked["prompt"] == "What is your name?"
            assert asked["schema"] == {"type": "string", "minLength": 1}
            request_id = asked["request_id"]
            frame = {"type": "respond", "run_id": run_id, "request_id": request_id}
            await send(ws, {**frame, "value": 42, "ref": "r1"})
            error = await recv(ws)
            assert error["type"] == "error" and error["code"] == "invalid", error
            await send(ws, {**frame, "value": "Ada"})
            after = await frames_until(ws, terminal)
            assert after[0] == {
                "type": "response_accepted",
                "run_id": run_id,
                "request_id": request_id,
            }
            kinds = types(after)
            assert after[kinds.index("input_received")]["by"] == "user"
            assert after[-1]["final_response"] == "hello Ada"
        assert effects() == ["first q", "hello Ada"]


async def test_a_flow_that_does_not_repeat_its_calls_fails_nondeterministic(
    server_factory,
) -> None:
    async with server_factory(registry=registry()) as srv:
        alice = await new_user(srv)
        async with ws_connect(srv, alice) as ws:
            await ready(ws)
            run_id = await start_run(ws, "chaotic", "q")
            asked = (await frames_until(ws, of_type("input_requested")))[-1]
            await respond(ws, run_id, asked["request_id"], "Ada")
            after = await frames_until(ws, terminal)
            assert after[-1]["type"] == "agent_error"
            assert after[-1]["error"]["code"] == "nondeterministic"
        # Its first call ran once; nothing after the divergence ran.
        assert len(effects()) == 1 and effects()[0].startswith("first ")


async def test_foreign_missing_and_second_answers(server_factory) -> None:
    async with server_factory(registry=registry()) as srv:
        alice = await new_user(srv)
        bob = await new_user(srv)
        async with ws_connect(srv, alice) as ws, http(srv, alice) as mine, http(srv, bob) as his:
            await ready(ws)
            run_id = await start_run(ws, "guarded", calls(("delete", {"path": "a"})))
            await frames_until(ws, of_type("approval_requested"))
            ask_id = await start_run(ws, "asker", "q")
            request_id = (await frames_until(ws, of_type("input_requested")))[-1]["request_id"]

            body = {"approved": True, "user_id": bob.user_id}
            foreign = await his.post(f"/v1/runs/{run_id}/approvals/call_0", json=body)
            missing = await his.post(f"/v1/runs/{run_id}/approvals/call_9", json=body)
            nothing = await mine.post(f"/v1/runs/{run_id}/approvals/call_9", json=body)
            assert foreign.status_code == missing.status_code == nothing.status_code == 404
            assert foreign.content == missing.content == nothing.content
            foreign = await his.post(f"/v1/runs/{ask_id}/inputs/{request_id}", json={"value": 1})
            missing = await his.post(f"/v1/runs/{ask_id}/inputs/req_x", json={"value": "x"})
            assert foreign.status_code == missing.status_code == 404
            assert foreign.content == missing.content
            # A question's id is not an approval's: not found either.
            crossed = await mine.post(f"/v1/runs/{ask_id}/approvals/{request_id}", json=body)
            assert crossed.status_code == 404 and crossed.content == foreign.content
            assert (await his.get("/v1/runs", params={"status": "requires_action"})).json() == []
            listed = (await mine.get("/v1/runs", params={"status": "requires_action"})).json()
            assert {r["id"] for r in listed} == {run_id, ask_id}

            async with ws_connect(srv, bob) as bws:
                await ready(bws)
                frame = {"type": "approve", "run_id": run_id, "approved": True}
                await send(bws, {**frame, "call_id": "call_0", "ref": "a"})
                foreign_frame = await recv(bws)
                await send(bws, {**frame, "call_id": "call_9", "ref": "a"})
                missing_frame = await recv(bws)
                assert foreign_frame == missing_frame and foreign_frame["code"] == "not_found"
                await send(
                    bws,
                    {
                        "type": "respond",
                        "run_id": ask_id,
                        "ref": "a",
                        "request_id": request_id,
                        "value": "x",
                    },
                )
                assert await recv(bws) == missing_frame

            # The owner answers once; a second answer is a conflict, on either path.
            first = await mine.post(f"/v1/runs/{run_id}/approvals/call_0", json=body)
            assert first.status_code == 202
            second = await mine.post(f"/v1/runs/{run_id}/approvals/call_0", json=body)
            assert second.status_code == 409 and second.json()["error"]["code"] == "conflict"
            await send(
                ws,
                {
                    "type": "approve",
                    "run_id": run_id,
                    "call_id": "call_0",
                    "approved": False,
                    "ref": "b",
                },
            )
            frames = await frames_until(ws, lambda f: f.get("ref") == "b")
            assert frames[-1]["type"] == "error" and frames[-1]["code"] == "conflict"
        assert effects() == ["first q", "deleted a"]


async def follow(ws: Any, thread_id: str, after: int) -> None:
    await send(ws, {"type": "subscribe", "thread_id": thread_id, "after": after})
    assert (await recv(ws))["type"] == "subscribed"


async def test_a_waiting_run_is_answered_after_a_restart(server_factory, tmp_path: Path) -> None:
    database_url = f"sqlite+aiosqlite:///{tmp_path / 'kept.db'}"
    async with server_factory(registry=registry(), database_url=database_url) as srv:
        alice = await new_user(srv)
        async with ws_connect(srv, alice) as ws:
            await ready(ws)
            run_id = await start_run(
                ws, "guarded", calls(("delete", {"path": "a"}), ("record", {"text": "b"}))
            )
            asked = (await frames_until(ws, of_type("approval_requested")))[-1]
    # A new process on the same database: the request is still there, and answerable.
    async with server_factory(registry=registry(), database_url=database_url) as srv:
        async with ws_connect(srv, alice) as ws, http(srv, alice) as client:
            await ready(ws)
            await follow(ws, asked["thread_id"], asked["seq"])
            assert await run_status(srv, alice, run_id) == "requires_action"
            r = await client.post(f"/v1/runs/{run_id}/approvals/call_0", json={"approved": True})
            assert r.status_code == 202
            after = await frames_until(ws, terminal)
            kinds = types(after)
            assert kinds.index("approval_resolved") < kinds.index("tool_executing")
            assert after[-1]["final_response"] == 'results: "deleted a" | "b"'
            assert all(f["execution_id"] == asked["execution_id"] for f in after if "seq" in f)
    assert effects() == ["deleted a", "b"]


async def test_a_flow_resumed_after_a_restart_does_not_repeat_its_first_call(
    server_factory, tmp_path: Path
) -> None:
    database_url = f"sqlite+aiosqlite:///{tmp_path / 'kept.db'}"
    async with server_factory(registry=registry(), database_url=database_url) as srv:
        alice = await new_user(srv)
        async with ws_connect(srv, alice) as ws:
            await ready(ws)
            run_id = await start_run(ws, "asker", "q")
            asked = (await frames_until(ws, of_type("input_requested")))[-1]
    assert effects() == ["first q"]
    async with server_factory(registry=registry(), database_url=database_url) as srv:
        async with ws_connect(srv, alice) as ws:
            await ready(ws)
            await follow(ws, asked["thread_id"], asked["seq"])
            await respond(ws, run_id, asked["request_id"], "Ada")
            after = await frames_until(ws, terminal)
            assert after[-1]["final_response"] == "hello Ada"
            # Nothing made before the pause is made again.
            assert [f["type"] for f in after if "seq" in f] == [
                "input_received",
                "tool_executing",
                "tool_completed",
                "agent_completed",
            ]
    assert effects() == ["first q", "hello Ada"]


async def test_the_assistant_forgets_notes_only_once_the_user_approves(server_factory) -> None:
    """The example: ``forget`` deletes the user's notes, and asks first."""
    async with server_factory() as srv:
        alice = await new_user(srv)
        async with ws_connect(srv, alice) as ws:
            await ready(ws)
            thread = None
            for text in ("remember that the door code is 4711", "remember I like tea"):
                await start_run(ws, "assistant", text, thread)
                thread = (await frames_until(ws, terminal))[-1]["thread_id"]
            assert len(await srv.service.store.list_notes(alice.user_id)) == 2
            run_id = await start_run(ws, "assistant", "please forget my notes", thread)
            asked = (await frames_until(ws, of_type("approval_requested")))[-1]
            assert asked["tool_name"] == "forget"
            frame = {"type": "approve", "run_id": run_id, "call_id": asked["call_id"]}
            await send(ws, {**frame, "approved": False, "note": "not yet"})
            after = await frames_until(ws, terminal)
            assert "not yet" in after[-1]["final_response"]
            assert len(await srv.service.store.list_notes(alice.user_id)) == 2
            run_id = await start_run(ws, "assistant", "delete all my notes", thread)
            asked = (await frames_until(ws, of_type("approval_requested")))[-1]
            await send(
                ws,
                {
                    "type": "approve",
                    "run_id": run_id,
                    "call_id": asked["call_id"],
                    "approved": True,
                },
            )
            after = await frames_until(ws, terminal)
            assert after[-1]["final_response"] == "Forgot 2 notes."
            assert await srv.service.store.list_notes(alice.user_id) == []


async def test_the_python_client_answers_through_on_approval_and_respond(server_factory) -> None:
    from tenet.client import Client

    seen: list[dict[str, Any]] = []

    async def decide(event: dict[str, Any]) -> dict[str, Any]:
        seen.append(event)
        return {"approved": True, "arguments": {"path": "edited"}}

    async with server_factory(registry=registry()) as srv:
        alice = await new_user(srv)
        async with Client(srv.url, alice.token, on_approval=decide) as client:
            run = await client.run("guarded", calls(("delete", {"path": "a"})))
            assert (await run.result())["output"] == 'results: "deleted edited"'
            assert [e["call_id"] for e in seen] == ["call_0"]

            run = await client.run("asker", "q")
            async for event in run.events():
                if event["type"] == "input_requested":
                    waiting = await client.runs("requires_action")
                    assert [r["id"] for r in waiting] == [run.id]
                    await client.respond(run.id, event["request_id"], "Ada")
            assert (await client.get_run(run.id))["output"] == "hello Ada"
    assert effects() == ["deleted edited", "first q", "hello Ada"]


async def test_waiting_does_not_count_against_the_run_timeout(server_factory) -> None:
    async with server_factory(registry=registry(), run_timeout_s=0.5) as srv:
        alice = await new_user(srv)
        async with ws_connect(srv, alice) as ws, http(srv, alice) as client:
            await ready(ws)
            run_id = await start_run(ws, "guarded", calls(("delete", {"path": "a"})))
            await frames_until(ws, of_type("approval_requested"))
            await asyncio.sleep(1.0)  # waiting twice the run's timeout
            assert await run_status(srv, alice, run_id) == "requires_action"
            await client.post(f"/v1/runs/{run_id}/approvals/call_0", json={"approved": True})
            after = await frames_until(ws, terminal)
            assert after[-1]["type"] == "agent_completed", after[-1]
        assert effects() == ["deleted a"]


async def test_deleting_a_thread_ends_its_waiting_run(server_factory) -> None:
    async with server_factory(registry=registry()) as srv:
        alice = await new_user(srv)
        async with ws_connect(srv, alice) as ws, http(srv, alice) as client:
            await ready(ws)
            run_id = await start_run(ws, "guarded", calls(("delete", {"path": "a"})))
            asked = (await frames_until(ws, of_type("approval_requested")))[-1]
            r = await client.delete(f"/v1/threads/{asked['thread_id']}")
            assert r.status_code == 204
            assert (await client.get(f"/v1/runs/{run_id}")).status_code == 404
            late = await client.post(f"/v1/runs/{run_id}/approvals/call_0", json={"approved": True})
            assert late.status_code == 404
            # Nothing is left for the timeout sweep to answer, ever.
            later = utc_now() + timedelta(days=30)
            assert await stored_requests.expired(srv.service.store, later) == []
        assert effects() == []


async def test_a_run_answered_as_its_process_stopped_resumes_at_the_next_start(
    server_factory, tmp_path: Path
) -> None:
    """The answer was stored, but the process stopped before queueing the run again."""
    database_url = f"sqlite+aiosqlite:///{tmp_path / 'kept.db'}"
    async with server_factory(registry=registry(), database_url=database_url) as srv:
        alice = await new_user(srv)
        async with ws_connect(srv, alice) as ws:
            await ready(ws)
            run_id = await start_run(ws, "guarded", calls(("delete", {"path": "a"})))
            asked = (await frames_until(ws, of_type("approval_requested")))[-1]
        answer = {"approved": True, "by": "user"}
        store = srv.service.store
        user, now = alice.user_id, utc_now()
        await stored_requests.answer(store, user, run_id, "call_0", "approval", answer, now)
    async with server_factory(registry=registry(), database_url=database_url) as srv:
        async with ws_connect(srv, alice) as ws:
            await ready(ws)
            await follow(ws, asked["thread_id"], asked["seq"])
            after = await frames_until(ws, terminal)
            assert after[-1]["final_response"] == 'results: "deleted a"'
    assert effects() == ["deleted a"]


async def test_a_question_asked_by_a_delegated_agent_resumes_it(server_factory) -> None:
    async with server_factory(registry=registry()) as srv:
        alice = await new_user(srv)
        async with ws_connect(srv, alice) as ws:
            await ready(ws)
            run_id = await start_run(ws, "delegator", "d")
            before = await frames_until(ws, of_type("input_requested"))
            child = next(f for f in before if f["type"] == "agent_started" and f["depth"] == 1)
            assert before[-1]["execution_id"] == child["execution_id"]
            await respond(ws, run_id, before[-1]["request_id"], "Ada")
            after = await frames_until(ws, terminal)
            assert after[-1]["final_response"] == "via asker: hello Ada"
            # The delegated execution goes on as itself, and ends once.
            child_end = [f for f in after if f["type"] == "agent_completed" and f["depth"] == 1]
            assert [f["execution_id"] for f in child_end] == [child["execution_id"]]
            assert "agent_started" not in types(after)
    assert effects() == ["first d", "hello Ada"]


async def test_two_hundred_waiting_users_hold_no_slot_from_two_hundred_running(
    server_factory,
) -> None:
    """The process runs 4 runs at once; 200 users' runs wait for a person meanwhile, and
    200 other users' runs all still complete: a waiting run holds no slot and no task."""
    async with server_factory(max_runs=4, user_rate="0") as srv:
        store, engine = srv.service.store, srv.service.engine

        async def start(words: str) -> tuple[str, str]:
            user_id, _token = await srv.create_user()
            thread = await store.create_thread(user_id)
            run = await engine.submit(user_id, thread.id, "benchmark", words)
            return user_id, run.id

        waiting = [await start("events=5 approve=1") for _ in range(200)]
        for _ in range(600):  # bounded: every one of them reaches its approval
            statuses = [(await store.get_run(u, r)).status for u, r in waiting]
            if all(s == "requires_action" for s in statuses):
                break
            await asyncio.sleep(0.05)
        assert all(s == "requires_action" for s in statuses), statuses
        assert engine.running_count == 0 and not any(r in engine.runs for _, r in waiting)

        running = [await start("events=5") for _ in range(200)]
        async with asyncio.timeout(120):
            for _user_id, run_id in running:
                await engine.wait(run_id)
        done = [(await store.get_run(u, r)).status for u, r in running]
        still = [(await store.get_run(u, r)).status for u, r in waiting]
        assert set(done) == {"completed"} and set(still) == {"requires_action"}
