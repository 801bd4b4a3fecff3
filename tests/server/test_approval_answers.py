"""Answers a store cannot hold, or that one channel takes and another refuses.

An answer is checked before it is stored: a value JSON allows but the store does
not (an integer wider than 64 bits, lists nested 300 deep) is 422 ``invalid``, never
a 500, and leaves the request answerable; a note over the limit is refused the same over WebSocket
as over HTTP. Real server, real clients.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from approval_agents import effects, registry
from server_support import http, new_user, ready, recv, send, ws_connect
from test_approvals import calls, frames_until, of_type, start_run, terminal

from tenet.approvals import NOTE_MAX_CHARS

#: An integer JSON allows and a 64-bit store does not.
HUGE = 10**30
#: Lists nested deeper than the store's JSON encoder goes (254 levels).
DEEP: Any = []
for _ in range(300):
    DEEP = [DEEP]


@pytest.fixture(autouse=True)
def effects_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "effects.txt"
    monkeypatch.setenv("TENET_TEST_EFFECTS", str(path))
    return path


async def test_edited_arguments_beyond_64_bits_are_422_and_the_call_stays_answerable(
    server_factory,
) -> None:
    async with server_factory(registry=registry()) as srv:
        alice = await new_user(srv)
        async with ws_connect(srv, alice) as ws, http(srv, alice) as c:
            await ready(ws)
            run_id = await start_run(ws, "guarded", calls(("pay", {"amount": 500})))
            await frames_until(ws, of_type("approval_requested"))
            url = f"/v1/runs/{run_id}/approvals/call_0"
            r = await c.post(url, json={"approved": True, "arguments": {"amount": HUGE}})
            assert r.status_code == 422, r.text
            assert r.json()["error"]["code"] == "invalid"
            # Nothing was stored: the call is still waiting, and a good answer runs it.
            assert (await c.get(f"/v1/runs/{run_id}")).json()["status"] == "requires_action"
            r = await c.post(url, json={"approved": True, "arguments": {"amount": 150}})
            assert r.status_code == 202, r.text
            await frames_until(ws, terminal)
        assert effects() == ["paid 150"]


async def test_an_answer_beyond_64_bits_is_422_and_the_question_stays_answerable(
    server_factory,
) -> None:
    async with server_factory(registry=registry()) as srv:
        alice = await new_user(srv)
        async with ws_connect(srv, alice) as ws, http(srv, alice) as c:
            await ready(ws)
            run_id = await start_run(ws, "open", "x")
            asked = (await frames_until(ws, of_type("input_requested")))[-1]
            url = f"/v1/runs/{run_id}/inputs/{asked['request_id']}"
            for value in (HUGE, {"deep": [1, -HUGE]}, DEEP):
                r = await c.post(url, json={"value": value})
                assert r.status_code == 422, r.text
                assert r.json()["error"]["code"] == "invalid"
            assert (await c.get(f"/v1/runs/{run_id}")).json()["status"] == "requires_action"
            r = await c.post(url, json={"value": [1, 2**63 - 1]})
            assert r.status_code == 202, r.text
            done = (await frames_until(ws, terminal))[-1]
            assert done["type"] == "agent_completed", done
        assert effects() == ["first x", f"hello {[1, 2**63 - 1]}"]


async def test_a_note_over_the_limit_is_refused_over_websocket_as_over_http(
    server_factory,
) -> None:
    async with server_factory(registry=registry()) as srv:
        alice = await new_user(srv)
        async with ws_connect(srv, alice) as ws, http(srv, alice) as c:
            await ready(ws)
            run_id = await start_run(ws, "guarded", calls(("delete", {"path": "a"})))
            await frames_until(ws, of_type("approval_requested"))
            long_note = "n" * (NOTE_MAX_CHARS + 1)
            body = {"approved": False, "note": long_note}
            r = await c.post(f"/v1/runs/{run_id}/approvals/call_0", json=body)
            assert r.status_code == 422 and r.json()["error"]["code"] == "invalid", r.text
            await send(ws, {"type": "approve", "run_id": run_id, "call_id": "call_0", **body})
            refused = await recv(ws)
            assert refused["type"] == "error" and refused["code"] == "invalid", refused
            # Neither answer was taken: the call still waits, and a note at the limit is kept whole.
            assert (await c.get(f"/v1/runs/{run_id}")).json()["status"] == "requires_action"
            note = "n" * NOTE_MAX_CHARS
            await send(
                ws,
                {"type": "approve", "run_id": run_id, "call_id": "call_0", "approved": False}
                | {"note": note},
            )
            frames = await frames_until(ws, terminal)
            assert frames[0]["type"] == "approval_accepted", frames[0]
            resolved = next(f for f in frames if f["type"] == "approval_resolved")
            assert resolved["note"] == note and resolved["approved"] is False
        assert effects() == []


async def test_the_client_does_not_ask_again_for_calls_answered_before_it_subscribed(
    server_factory,
) -> None:
    """``on_approval`` is the person's prompt: a replayed, long-answered request is not one."""
    from tenet.client import Client

    asked: list[str] = []

    async def decide(event: dict[str, Any]) -> bool:
        asked.append(str(event["call_id"]))
        return True

    async with server_factory(registry=registry()) as srv:
        alice = await new_user(srv)
        async with Client(srv.url, alice.token, on_approval=decide) as client:
            run = await client.run("guarded", calls(("delete", {"path": "a"})))
            assert (await run.result())["status"] == "completed"
            thread_id = run.thread_id
        assert asked == ["call_0"]

        # A second device opens the thread: its history holds the answered request.
        async with Client(srv.url, alice.token, on_approval=decide) as client:
            replayed = []
            async with asyncio.timeout(15):
                async for event in client.subscribe(thread_id, after=0):
                    replayed.append(event["type"])
                    if event["type"] == "agent_completed":
                        break
            assert "approval_requested" in replayed
            # Whatever the handler would have been started for has had its chance to run.
            await client.ping()
            await client.get_run(run.id)
            await asyncio.sleep(0)
        assert asked == ["call_0"]
    assert effects() == ["deleted a"]


async def test_a_lone_surrogate_in_an_answer_frame_is_named_and_its_ref_echoed(
    server_factory,
) -> None:
    """``"\\ud83d"`` is JSON by its grammar: the frame's ``ref`` comes back with an error
    that says what is wrong (as HTTP's 422 does), and nothing is answered."""
    async with server_factory(registry=registry()) as srv:
        alice = await new_user(srv)
        async with ws_connect(srv, alice) as ws, http(srv, alice) as c:
            await ready(ws)
            run_id = await start_run(ws, "guarded", calls(("delete", {"path": "a"})))
            await frames_until(ws, of_type("approval_requested"))
            for note in ('"\\ud83d"', '"\\udc00 tail"', '"\\ud83d\\u0041"'):
                frame = {"type": "approve", "run_id": run_id, "call_id": "call_0"}
                text = json.dumps(frame | {"approved": False, "ref": "r1"})
                await ws.send(text[:-1] + f', "note": {note}}}')
                refused = await recv(ws)
                assert refused["type"] == "error" and refused["code"] == "invalid", refused
                assert refused.get("ref") == "r1", refused
                assert "surrogate" in refused["message"], refused
            r = await c.post(
                f"/v1/runs/{run_id}/approvals/call_0",
                content='{"approved": false, "note": "\\ud83d"}',
                headers={"content-type": "application/json"},
            )
            assert r.status_code == 422 and "surrogate" in r.json()["error"]["message"]
            assert (await c.get(f"/v1/runs/{run_id}")).json()["status"] == "requires_action"
            await send(
                ws, {"type": "approve", "run_id": run_id, "call_id": "call_0", "approved": True}
            )
            frames = await frames_until(ws, terminal)
            assert frames[0]["type"] == "approval_accepted", frames[0]
        assert effects() == ["deleted a"]
