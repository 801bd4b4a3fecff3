"""Per-user isolation under concurrency: events, notes and store rows never cross users."""

from __future__ import annotations

import asyncio
import secrets

import pytest
from core_support import new_thread, new_user, run_to_end, thread_events
from protocol_checks import assert_run_well_formed, assert_seq_gap_free, split_runs

from tenet import Service, Settings
from tenet.errors import NotFound


@pytest.fixture
async def svc(database_url: str):
    async with Service(
        Settings(database_url=database_url, user_max_runs=8, user_max_runs_busy=8)
    ) as s:
        yield s


async def test_two_users_fifty_concurrent_runs_stay_isolated(svc: Service) -> None:
    users = {name: await new_user(svc, name) for name in ("alice", "bob")}
    secret = {name: f"{name}-secret-{secrets.token_hex(6)}" for name in users}
    threads = {name: [await new_thread(svc, uid) for _ in range(10)] for name, uid in users.items()}

    # Seed each user's notes, then 50 concurrent runs each: recalls interleaved with
    # other tools and more notes, on the user's own ten threads.
    for name, uid in users.items():
        run, _ = await run_to_end(
            svc, uid, threads[name][0], "assistant", f"remember that {secret[name]}"
        )
        assert run.status == "completed"

    inputs = [
        "what is my secret?",
        "remember that {s} number {i}",
        "what is {i} + 1?",
        "recall my secret please",
        "go",
    ]
    submitted: dict[str, list] = {name: [] for name in users}

    async def submit(name: str, i: int) -> None:
        uid = users[name]
        text = inputs[i % len(inputs)].format(s=secret[name], i=i)
        agent = "benchmark" if text == "go" else "assistant"
        run = await svc.engine.submit(uid, threads[name][i % 10], agent, text)
        submitted[name].append(run)

    await asyncio.gather(*(submit(name, i) for i in range(50) for name in users))
    all_runs = [r for runs in submitted.values() for r in runs]
    assert len(all_runs) == 100
    await asyncio.wait_for(asyncio.gather(*(svc.engine.wait(r.id) for r in all_runs)), 60)

    for name, uid in users.items():
        other = "bob" if name == "alice" else "alice"
        other_uid = users[other]
        own_runs = {r.id for r in submitted[name]}
        seen_runs: set[str] = set()
        recalls = 0
        for thread in threads[name]:
            events = await thread_events(svc, uid, thread)
            assert_seq_gap_free(events)
            for run_id, run_events in split_runs(events).items():
                assert_run_well_formed(run_events)
                seen_runs.add(run_id)
            for e in events:
                assert e["user_id"] == uid, f"{name}'s thread holds {e['user_id']}'s event"
                assert e["thread_id"] == thread
                assert secret[other] not in str(e), f"{other}'s secret reached {name}: {e}"
                if e["type"] == "tool_completed" and e["tool_name"] == "recall":
                    recalls += 1
                    assert e["ok"] is True
                    assert any(secret[name] in note for note in e["results"]), e["results"]
            # the other user can't read this thread at all
            with pytest.raises(NotFound):
                await svc.store.list_events(other_uid, thread)
            with pytest.raises(NotFound):
                await svc.store.get_thread(other_uid, thread)
        assert own_runs <= seen_runs
        assert recalls >= 20
        for run in submitted[name]:
            stored = await svc.store.get_run(uid, run.id)
            assert stored.status == "completed", (stored.status, stored.error)
            assert stored.user_id == uid
            with pytest.raises(NotFound):
                await svc.store.get_run(other_uid, run.id)
        notes = await svc.store.list_notes(uid, limit=1000)
        assert notes and all(secret[other] not in n.text for n in notes)
        assert all(n.user_id == uid for n in notes)


async def test_cli_acceptance_bob_never_sees_alices_code(service: Service) -> None:
    """`tenet run assistant "remember that my code is 4242" --user alice`, then bob and
    alice ask "what is my code?", each in a new thread, as the CLI does."""
    alice = await new_user(service, "alice")
    bob = await new_user(service, "bob")

    run, _ = await run_to_end(
        service,
        alice,
        await new_thread(service, alice),
        "assistant",
        "remember that my code is 4242",
    )
    assert run.status == "completed"

    run, events = await run_to_end(
        service, bob, await new_thread(service, bob), "assistant", "what is my code?"
    )
    assert run.status == "completed"
    assert "4242" not in (run.output or "")
    assert all("4242" not in str(e) for e in events)
    assert [m.content for m in await service.store.list_messages(bob, run.thread_id)] == [
        "what is my code?",
        run.output,
    ]

    run, events = await run_to_end(
        service, alice, await new_thread(service, alice), "assistant", "what is my code?"
    )
    assert run.status == "completed"
    assert "4242" in (run.output or "")
    assert events[-1]["final_response"] == run.output
