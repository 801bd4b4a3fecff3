"""Each audit check is able to fail: inject the fault it looks for, see it reported.

The faults are injected into the real server in-process (a misrouting bus, a
repository query without its owner filter, a skipped ``seq``, a 403 that
reveals that a foreign id exists, one MCP session shared by every user, an
approval or question anyone may answer or whose refusal reveals it exists); the
audit, which only speaks the public protocol, must report each one under the
right check.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from tenet import Agent, mcp_server
from tenet.audit import IsolationAudit
from tenet.bus.memory import MemoryBus
from tenet.errors import NotFound, TenetError
from tenet.events import Event
from tenet.examples import default_registry
from tenet.mcp_tools import UserMCPSessions
from tenet.registry import AgentRegistry
from tenet.runtime import RunRuntime
from tenet.store import approvals as stored
from tenet.store import units
from tenet.store.db import Store
from tenet.store.tables import Run, Thread

# The MCP tests' echo server and its start-up (a folder of tests beside this one).
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "mcp_servers"))
from mcp_support import start_echo_http


@pytest.fixture
def database_url(tmp_path: Path) -> str:  # these tests need one database only
    return f"sqlite+aiosqlite:///{tmp_path / 'faults.db'}"


async def audit(deploy, **settings: Any):
    async with deploy(**settings) as d:
        return await IsolationAudit(d.url, d.server.admin_token, users=4, runs=1, timeout_s=5).run()


async def test_a_clean_server_passes(deploy) -> None:
    report = await audit(deploy)
    assert report.ok, {n: c.violations for n, c in report.checks.items() if c.violations}


async def test_a_misrouting_bus_is_caught(deploy, monkeypatch: pytest.MonkeyPatch) -> None:
    original = MemoryBus.publish
    owners: dict[str, str] = {}
    done: list[bool] = []

    def misroute(self: MemoryBus, thread_id: str, event: Event) -> None:
        original(self, thread_id, event)
        owners[thread_id] = event.user_id
        if done:
            return
        victims = [t for t in self._subs if owners.get(t, event.user_id) != event.user_id]
        if victims:
            done.append(True)
            forged = Event(
                data=event.data,
                user_id=event.user_id,
                thread_id=victims[0],
                run_id=event.run_id,
                seq=10_000,
                json=event.json,
            )
            for sub in tuple(self._subs[victims[0]]):
                sub.deliver(forged)

    monkeypatch.setattr(MemoryBus, "publish", misroute)
    report = await audit(deploy)
    assert done, "the fault was injected"
    assert not report.checks["guard"].ok or not report.checks["routing"].ok


async def test_a_query_without_owner_filter_is_caught(
    deploy, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def unscoped_get_thread(self: Store, user_id: str, thread_id: str) -> Thread:
        async with self.read() as s:
            row = (
                await s.execute(select(Thread).where(Thread.id == thread_id))
            ).scalar_one_or_none()
        if row is None:
            raise NotFound()
        return row

    monkeypatch.setattr(Store, "get_thread", unscoped_get_thread)
    report = await audit(deploy)
    assert not report.checks["probes"].ok
    assert not report.checks["content"].ok  # the foreign thread's metadata holds its secret


async def test_a_skipped_seq_is_caught(deploy, monkeypatch: pytest.MonkeyPatch) -> None:
    skipped: list[str] = []

    def skip_first(found: dict[str, int]) -> dict[str, int]:
        if not skipped and found:
            first = next(iter(found))
            skipped.append(first)
            found[first] += 1
        return found

    original = units.max_seqs  # the store's writer numbers events from this

    def skipping(thread_ids: list[str]) -> units.Steps:
        return skip_first((yield from original(thread_ids)))

    monkeypatch.setattr(units, "max_seqs", skipping)
    report = await audit(deploy)
    assert skipped
    assert not report.checks["sequence"].ok


async def test_a_403_that_reveals_a_foreign_id_is_caught(
    deploy, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tenet.server import errors as server_errors

    class Forbidden(TenetError):
        code = "forbidden"
        status = 403

    original = Store.get_thread

    async def revealing(self: Store, user_id: str, thread_id: str) -> Thread:
        try:
            return await original(self, user_id, thread_id)
        except NotFound:
            async with self.read() as s:
                exists = await s.scalar(select(Thread.id).where(Thread.id == thread_id))
            if exists:
                raise Forbidden("this thread belongs to another user") from None
            raise

    monkeypatch.setitem(server_errors._CODE_OF_STATUS, 403, "forbidden")
    monkeypatch.setattr(Store, "get_thread", revealing)
    report = await audit(deploy)
    assert not report.checks["probes"].ok
    assert any("403" in v for v in report.checks["probes"].violations)


@pytest.fixture
async def echo_registry() -> AsyncIterator[AgentRegistry]:
    """The example agents and one whose MCP server (the echo server) is marked for the audit."""
    proc, base = await start_echo_http()
    try:
        registry = default_registry()
        web = mcp_server(
            "web",
            url=base + "/mcp",
            headers={"Authorization": "Bearer {secret:echo_token}"},
            audit="recall",
        )
        registry.register(Agent("mcp_canary", "calls the echo MCP server", tools=[web]))
        yield registry
    finally:
        proc.kill()
        proc.wait()


async def test_a_clean_server_passes_the_mcp_canary(deploy, echo_registry) -> None:
    report = await audit(deploy, registry=echo_registry, secret_key="audit-test-key")
    assert report.ok, {n: c.violations for n, c in report.checks.items() if c.violations}
    assert report.checks["mcp"].checked == 4 * 2  # every user's every call


async def test_an_mcp_session_shared_between_users_is_caught(
    deploy, echo_registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    shared: list[UserMCPSessions] = []
    original = RunRuntime.mcp_sessions

    def one_for_everyone(self: RunRuntime, ctx: Any) -> UserMCPSessions:
        if not shared:
            shared.append(original(self, ctx))
        return shared[0]

    monkeypatch.setattr(RunRuntime, "mcp_sessions", one_for_everyone)
    report = await audit(deploy, registry=echo_registry, secret_key="audit-test-key")
    assert shared, "the fault was injected"
    violations = report.checks["mcp"].violations
    assert any("saw one MCP session" in v for v in violations), violations
    assert any("saw one MCP credential" in v for v in violations), violations


async def _owner(store: Store, run_id: str) -> str | None:
    async with store.read() as s:
        return await s.scalar(select(Run.user_id).where(Run.id == run_id))


async def test_a_waiting_request_anyone_may_answer_is_caught(
    deploy, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The request is looked up by its run's owner, not the caller: a stranger answers it."""
    original_request, original_answer = stored.request, stored.answer
    foreign: list[str] = []

    async def unscoped_request(store: Store, user_id: str, run_id: str, *rest: Any) -> Any:
        owner = await _owner(store, run_id)
        if owner and owner != user_id:
            foreign.append(run_id)
        return await original_request(store, owner or user_id, run_id, *rest)

    async def unscoped_answer(store: Store, user_id: str, run_id: str, *rest: Any) -> Any:
        return await original_answer(store, await _owner(store, run_id) or user_id, run_id, *rest)

    monkeypatch.setattr(stored, "request", unscoped_request)
    monkeypatch.setattr(stored, "answer", unscoped_answer)
    report = await audit(deploy)
    assert foreign, "the fault was injected"
    violations = report.checks["probes"].violations
    # The stranger's answer is stored: its reply may even look like a 404 (the run is read
    # back as the stranger's), but a second one is a 409, and the owner can no longer answer.
    assert any("on a foreign request answered 409" in v for v in violations), violations
    assert any("no longer answerable" in v for v in violations), violations


async def test_a_refusal_that_reveals_a_waiting_request_is_caught(
    deploy, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Refused, but with a 403 for a request that exists: the audit tells it from a 404."""

    class Forbidden(TenetError):
        code = "forbidden"
        status = 403

    original = stored.request

    async def revealing(store: Store, user_id: str, run_id: str, *rest: Any) -> Any:
        owner = await _owner(store, run_id)
        if owner and owner != user_id:
            raise Forbidden("this request belongs to another user")
        return await original(store, user_id, run_id, *rest)

    from tenet.server import errors as server_errors

    monkeypatch.setitem(server_errors._CODE_OF_STATUS, 403, "forbidden")
    monkeypatch.setattr(stored, "request", revealing)
    report = await audit(deploy)
    violations = report.checks["probes"].violations
    assert any("POST /v1/runs/{arun}/approvals/{call}" in v and "403" in v for v in violations)
    assert any("/inputs/{request}" in v and "403" in v for v in violations), violations
    assert any("frame approve" in v for v in violations), violations
    assert any("frame respond" in v for v in violations), violations
    # Refused, so the owner's requests stayed answerable: only the probes' answers differ.
    assert not any("no longer answerable" in v for v in violations), violations


async def test_a_list_of_waiting_runs_without_owner_filter_is_caught(
    deploy, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``GET /v1/runs?status=requires_action`` lists every user's waiting runs."""
    original = stored.runs_with_status

    async def everyones(store: Store, user_id: str, status: str, limit: int) -> list[Any]:
        async with store.read() as s:
            owners = (
                await s.scalars(select(Run.user_id).where(Run.status == status).distinct())
            ).all()
        return [r for owner in owners for r in await original(store, owner, status, limit)]

    monkeypatch.setattr(stored, "runs_with_status", everyones)
    report = await audit(deploy)
    violations = report.checks["probes"].violations
    assert any("status=requires_action" in v for v in violations), violations
    assert not report.checks["content"].ok  # the foreign runs' inputs hold their secrets
