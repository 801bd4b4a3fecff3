"""AG-UI interrupts: a run waiting for approval ends its stream with the interrupt outcome,
and a ``RunAgentInput`` with ``resume`` answers it (docs/ag-ui.md, Interrupts)."""

from __future__ import annotations

import asyncio
import secrets
from pathlib import Path
from typing import Any

import pytest
from approval_agents import effects, registry
from server_support import ServerFactory, User, http, new_user
from test_ag_ui import ag_ui, read_sse, run_input, types

from tenet.testing import ServerHandle


def resume_input(thread_id: str, interrupt_id: str, payload: Any = True) -> dict[str, Any]:
    body = run_input("", thread_id, messages=[])
    body["resume"] = [{"interruptId": interrupt_id, "status": "resolved", "payload": payload}]
    return body


async def post_error(server: ServerHandle, user: User, body: dict[str, Any]) -> tuple[int, Any]:
    async with http(server, user) as c, asyncio.timeout(30):
        r = await c.post("/v1/agents/assistant/ag-ui", json=body)
        return r.status_code, r.json()


async def test_an_approval_ends_the_stream_as_an_interrupt_and_resume_approves_it(
    server: ServerHandle, alice: User, bob: User
) -> None:
    await approval_round_trip(server, alice, bob)


async def test_on_postgres_an_interrupt_is_answered_the_same(
    server_factory: ServerFactory, postgres_url: str
) -> None:
    async with server_factory(database_url=postgres_url) as server:
        await approval_round_trip(server, await new_user(server), await new_user(server))


async def approval_round_trip(server: ServerHandle, alice: User, bob: User) -> None:
    """Interrupt, foreign and unknown resumes refused alike, then approved and run."""
    thread = "notes-" + secrets.token_hex(3)
    await ag_ui(
        server, alice, "assistant", run_input("remember that the door code is 4711", thread)
    )
    store = server.service.store
    assert len(await store.list_notes(alice.user_id)) == 1

    frames = await ag_ui(server, alice, "assistant", run_input("please forget my notes", thread))
    got = types(frames)
    assert got[0] == "RUN_STARTED" and got[-1] == "RUN_FINISHED", got
    assert "TOOL_CALL_START" not in got  # the call has not run: it waits for approval
    finished = frames[-1][1]
    assert frames[-1][0] is not None  # resumable like every group
    outcome = finished["outcome"]
    assert outcome["type"] == "interrupt"
    [interrupt] = outcome["interrupts"]
    assert interrupt["reason"] == "tool_approval"
    assert interrupt["toolCallId"] == interrupt["id"]
    assert interrupt["metadata"]["tool_name"] == "forget" and interrupt["expiresAt"]
    assert len(await store.list_notes(alice.user_id)) == 1

    # Another user's resume of that id answers exactly as an id that never existed,
    # on the same threadId or another, and changes nothing.
    unknown = await post_error(server, bob, resume_input(thread, "call_" + "0" * 24))
    foreign = await post_error(server, bob, resume_input(thread, interrupt["id"]))
    foreign_other = await post_error(server, bob, resume_input("elsewhere", interrupt["id"]))
    own_unknown = await post_error(server, alice, resume_input(thread, "call_" + "0" * 24))
    assert unknown[0] == 404 and unknown[1]["error"]["code"] == "not_found"
    assert foreign == unknown == foreign_other == own_unknown
    assert len(await store.list_notes(alice.user_id)) == 1

    body = resume_input(thread, interrupt["id"], True)
    frames = await ag_ui(server, alice, "assistant", body)
    got = types(frames)
    assert got[0] == "RUN_STARTED" and frames[0][1]["runId"] == body["runId"], got
    assert got[-1] == "RUN_FINISHED" and frames[-1][1].get("outcome") in (None, {"type": "success"})
    start = got.index("TOOL_CALL_START")
    assert frames[start][1]["toolCallId"] == interrupt["id"]
    assert frames[start][1]["toolCallName"] == "forget"
    results = [d for _, d in frames if d["type"] == "TOOL_CALL_RESULT"]
    assert [r["toolCallId"] for r in results] == [interrupt["id"]]
    assert await store.list_notes(alice.user_id) == []
    # Message ids of the resumed stream continue the run's, never reuse them.
    ids = [d["messageId"] for _, d in frames if d["type"] == "TEXT_MESSAGE_START"]
    assert len(ids) == len(set(ids))
    # A second answer to the same interrupt: it is no longer pending.
    again = await post_error(server, alice, resume_input(thread, interrupt["id"]))
    assert again == unknown


async def test_resume_must_answer_every_interrupt_with_a_valid_answer(
    server: ServerHandle, alice: User
) -> None:
    thread = "notes-" + secrets.token_hex(3)
    frames = await ag_ui(server, alice, "assistant", run_input("please forget my notes", thread))
    [interrupt] = frames[-1][1]["outcome"]["interrupts"]
    status, body = await post_error(server, alice, resume_input(thread, interrupt["id"], "yes"))
    assert status == 422 and body["error"]["code"] == "invalid"
    # Denied: the tool does not run and the run finishes.
    deny = resume_input(thread, interrupt["id"], {"approved": False, "note": "not now"})
    frames = await ag_ui(server, alice, "assistant", deny)
    assert types(frames)[-1] == "RUN_FINISHED" and "TOOL_CALL_START" not in types(frames)


@pytest.fixture
def effects_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "effects.log"
    monkeypatch.setenv("TENET_TEST_EFFECTS", str(path))
    return path


async def test_a_question_is_an_interrupt_with_its_schema_and_resume_answers_it(
    server_factory: ServerFactory, effects_file: Path
) -> None:
    async with server_factory(registry=registry()) as server:
        alice = await new_user(server)
        frames = await ag_ui(server, alice, "asker", run_input("q", "ask"))
        assert types(frames)[-1] == "RUN_FINISHED"
        [interrupt] = frames[-1][1]["outcome"]["interrupts"]
        assert interrupt["reason"] == "input_required"
        assert interrupt["message"] == "What is your name?"
        assert interrupt["responseSchema"] == {"type": "string", "minLength": 1}
        # The resume stream of the thread ends the same way, with the same outcome.
        async with http(server, alice) as c, asyncio.timeout(30):
            async with c.stream("GET", "/v1/agents/asker/ag-ui/ask/stream") as r:
                again = await read_sse(r)
        assert again == frames
        async with http(server, alice) as c:
            bad = resume_input("ask", interrupt["id"], "")  # the schema wants one character
            r = await c.post("/v1/agents/asker/ag-ui", json=bad)
            assert r.status_code == 422 and r.json()["error"]["code"] == "invalid"
        frames = await ag_ui(server, alice, "asker", resume_input("ask", interrupt["id"], "Ada"))
        assert types(frames)[-1] == "RUN_FINISHED"
        assert frames[-1][1]["result"] == "hello Ada"
        assert effects() == ["first q", "hello Ada"]


async def test_a_resumed_stream_resumed_again_keeps_the_resuming_run_id(
    server: ServerHandle, alice: User
) -> None:
    """After an interrupt the run goes on under the client's new ``runId``; a drop of that
    stream resumed with ``Last-Event-ID`` labels the rest with it, not with the first."""
    thread = "again-" + secrets.token_hex(3)
    first = run_input("remember that the door code is 4711", thread)
    await ag_ui(server, alice, "assistant", first)
    asking = run_input("please forget my notes", thread)
    frames = await ag_ui(server, alice, "assistant", asking)
    [interrupt] = frames[-1][1]["outcome"]["interrupts"]
    assert frames[-1][1]["runId"] == asking["runId"]

    body = resume_input(thread, interrupt["id"], True)
    resumed = await ag_ui(server, alice, "assistant", body)
    assert resumed[0][1]["runId"] == resumed[-1][1]["runId"] == body["runId"]
    # The client dropped right after the resumed stream's first group.
    cut = next(i for i, (event_id, _) in enumerate(resumed) if event_id is not None)
    async with http(server, alice) as c, asyncio.timeout(30):
        async with c.stream(
            "GET",
            f"/v1/agents/assistant/ag-ui/{thread}/stream",
            headers={"Last-Event-ID": str(resumed[cut][0])},
        ) as r:
            assert r.status_code == 200
            rest = await read_sse(r)
    assert types(rest) == types(resumed[cut + 1 :])
    labelled = [d["runId"] for _, d in rest if "runId" in d]
    assert labelled and set(labelled) == {body["runId"]}, labelled
    # Dropped right after the interrupt: the rest is the resumed run, from its RUN_STARTED.
    async with http(server, alice) as c, asyncio.timeout(30):
        async with c.stream(
            "GET",
            f"/v1/agents/assistant/ag-ui/{thread}/stream",
            headers={"Last-Event-ID": str(frames[-1][0])},
        ) as r:
            assert r.status_code == 200
            rest = await read_sse(r)
    assert types(rest) == types(resumed)
    assert rest[0][1]["runId"] == rest[-1][1]["runId"] == body["runId"]
