"""A request's deadline is exact: an answer after ``expires_at`` never counts as the user's.

The timeout sweep runs every few seconds; an answer that comes after a request
expired but before the sweep reached it is too late all the same. It resolves
the request ``by: "timeout"`` (once: the sweep finds nothing left) and is
refused with 409 ``conflict``. The sweep is stopped and the stored deadline moved
into the past, so the answer lands in that lag every time. Real server, real
clients, SQLite and Postgres.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from approval_agents import effects, registry
from server_support import http, new_user, ready, send, ws_connect
from sqlalchemy import update
from test_approvals import calls, frames_until, of_type, start_run, terminal

from tenet.clock import utc_now
from tenet.store.tables import RunRequest
from tenet.testing import ServerHandle


@pytest.fixture(autouse=True)
def effects_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "effects.txt"
    monkeypatch.setenv("TENET_TEST_EFFECTS", str(path))
    return path


async def expire(srv: ServerHandle, run_id: str) -> None:
    """The run's requests expired a second ago, and no sweep has come by since."""
    async with srv.service.store.write() as s:
        await s.execute(
            update(RunRequest)
            .where(RunRequest.run_id == run_id)
            .values(expires_at=utc_now() - timedelta(seconds=1))
        )


async def test_an_answer_after_the_deadline_is_refused_and_the_timeout_resolves_once(
    server_factory, database_url: str
) -> None:
    async with server_factory(registry=registry(), database_url=database_url) as srv:
        approvals = srv.service.engine.approvals
        await approvals.close()  # no sweep: the answers below always land in its lag
        alice = await new_user(srv)
        async with ws_connect(srv, alice) as ws, http(srv, alice) as c:
            await ready(ws)
            # An approval, over HTTP.
            run_id = await start_run(ws, "guarded", calls(("delete", {"path": "a"})))
            await frames_until(ws, of_type("approval_requested"))
            await expire(srv, run_id)
            late = await c.post(f"/v1/runs/{run_id}/approvals/call_0", json={"approved": True})
            assert late.status_code == 409, late.text
            assert late.json()["error"]["code"] == "conflict"
            assert "expired" in late.json()["error"]["message"]
            after = await frames_until(ws, terminal)
            resolved = [f for f in after if f["type"] == "approval_resolved"]
            assert len(resolved) == 1, after
            assert resolved[0]["approved"] is False and resolved[0]["by"] == "timeout"
            assert after[-1]["type"] == "agent_completed"
            again = await c.post(f"/v1/runs/{run_id}/approvals/call_0", json={"approved": True})
            assert again.status_code == 409

            # A question, over WebSocket.
            ask_id = await start_run(ws, "asker", "q")
            asked = (await frames_until(ws, of_type("input_requested")))[-1]
            await expire(srv, ask_id)
            frame = {"type": "respond", "run_id": ask_id, "request_id": asked["request_id"]}
            await send(ws, {**frame, "value": "bob", "ref": "late"})
            seen: set[str] = set()

            def both(f: dict[str, Any]) -> bool:  # the refusal and the run's end, in any order
                seen.update({"ref"} if f.get("ref") == "late" else {"end"} if terminal(f) else ())
                return seen == {"ref", "end"}

            after = await frames_until(ws, both)
            refusal = next(f for f in after if f.get("ref") == "late")
            assert refusal["type"] == "error" and refusal["code"] == "conflict", refusal
            received = [f for f in after if f["type"] == "input_received"]
            assert len(received) == 1 and received[0]["by"] == "timeout", after
            assert next(f for f in after if terminal(f))["final_response"] == "hello None"

            # Nothing is left for a sweep: each request was resolved exactly once.
            assert await approvals.sweep_once() == 0
            async with http(srv, alice) as check:
                events = (await check.get(f"/v1/threads/{asked['thread_id']}/events")).json()
            answers = [e for e in events if e["type"] in ("approval_resolved", "input_received")]
            assert len(answers) == 1
        assert effects() == ["first q", "hello None"]  # the deletion never ran
