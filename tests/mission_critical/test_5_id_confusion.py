"""Category 5: thread, run, execution and user ids are never confused.

Delegated child agents, one thread reused across runs, and many users' runs
interleaved: every event names exactly the user, thread, run and execution
that produced it.
"""

from __future__ import annotations

import asyncio

from mc_support import BOTH_AUTH, User

from tenet.audit.checks import thread_violations


@BOTH_AUTH
async def test_ids_stay_straight_under_delegation_reuse_and_interleaving(deploy) -> None:
    async with deploy(scripted_latency_ms=2) as d:
        users = await d.users(6)

        async def work(u: User) -> tuple[str, list[str]]:
            ws = await u.socket()
            first = await u.run(ws, "researcher", "python and redis")
            thread_id = u.events[0]["thread_id"]
            runs = [first]
            for text in ("what is 2 + 2?", "what time is it?", "python"):
                agent = "researcher" if text == "python" else "assistant"
                runs.append(await u.run(ws, agent, text, thread_id))
            await ws.close()
            return thread_id, runs

        results = await asyncio.gather(*(work(u) for u in users))
        all_runs = [r for _, runs in results for r in runs]
        assert len(set(all_runs)) == len(all_runs)
        for u, (thread_id, runs) in zip(users, results, strict=True):
            stored = await u.stored(thread_id)
            assert thread_violations(stored) == []
            assert [
                e["run_id"] for e in stored if e["type"] == "agent_started" and e["depth"] == 0
            ] == runs
            for e in stored:
                assert (e["user_id"], e["thread_id"]) == (u.user_id, thread_id)
            executions: dict[str, dict] = {}
            for e in stored:
                if e["type"] == "agent_started":
                    executions[e["execution_id"]] = e
            for e in stored:
                start = executions[e["execution_id"]]
                assert start["run_id"] == e["run_id"], "an execution belongs to one run"
                assert start["agent_name"] == e["agent_name"]
            for start in executions.values():
                if start["depth"] > 0:
                    parent = executions[start["parent_execution_id"]]
                    assert parent["run_id"] == start["run_id"]
                    assert parent["depth"] == start["depth"] - 1
            children = [s for s in executions.values() if s["depth"] == 1]
            assert len(children) == 6, "two researcher runs, three child agents each"
