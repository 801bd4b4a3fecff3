"""Category 2: no global bottleneck; a user's runs complete while others hang, crash or flood."""

from __future__ import annotations

import asyncio
import time

import orjson
import pytest

from tenet import Agent, AgentRegistry, RunContext
from tenet.examples import default_registry


class Hang(Agent):
    async def run(self, ctx: RunContext, input: str) -> str:
        await ctx.think("hanging")
        await asyncio.sleep(3600)
        return "never"


class Crash(Agent):
    async def run(self, ctx: RunContext, input: str) -> str:
        await ctx.think("about to crash")
        raise RuntimeError("boom")


def registry() -> AgentRegistry:
    reg = default_registry()
    reg.register(Hang(name="hang"))
    reg.register(Crash(name="crash"))
    return reg


async def test_runs_complete_while_other_users_hang_crash_and_flood(deploy) -> None:
    async with deploy(registry(), ws_queue=50, user_max_runs=4, user_max_runs_busy=4) as d:
        hanger, crasher, flooder, *normal = await d.users(8)
        hang_ws, crash_ws, flood_ws = await asyncio.gather(
            hanger.socket(), crasher.socket(), flooder.socket()
        )
        for _ in range(4):  # occupy all of the hanging user's run slots
            await hang_ws.send(
                orjson.dumps({"type": "run", "agent": "hang", "input": "x"}).decode()
            )
        crash_runs = asyncio.gather(*(crasher.run(crash_ws, "crash", "x") for _ in range(1)))
        # The flooder starts a huge run and never reads its socket.
        await flood_ws.send(
            orjson.dumps({"type": "run", "agent": "benchmark", "input": "events=3000"}).decode()
        )

        async def work(u) -> None:
            ws = await u.socket()
            for i in range(3):
                await u.run(ws, "assistant", f"what is {i} * 7?")
            await ws.close()

        await asyncio.wait_for(asyncio.gather(*(work(u) for u in normal)), 60)
        await crash_runs
        for u in normal:
            completed = [e for e in u.events if e["type"] == "agent_completed" and e["depth"] == 0]
            assert len(completed) == 3
        assert any(e["type"] == "agent_error" for e in crasher.events)
        running = [h for h in d.service.engine.runs.values() if h.user_id == hanger.user_id]
        assert len(running) == 4, "the hanging user's runs are still hanging, untouched"
        for ws in (hang_ws, crash_ws, flood_ws):
            await ws.close()


@pytest.mark.parametrize("n_users", [1, 3, 5, 8, 10])
async def test_concurrent_users_all_finish(deploy, n_users: int) -> None:
    """The old suite's concurrency sweep: every user finishes, and the time is reported."""
    async with deploy(bench_latency_ms=20) as d:
        users = await d.users(n_users)
        started = time.perf_counter()

        async def work(u) -> float:
            ws = await u.socket()
            t0 = time.perf_counter()
            for _ in range(2):
                await u.run(ws, "benchmark", "x")
            await ws.close()
            return time.perf_counter() - t0

        times = await asyncio.gather(*(work(u) for u in users))
        wall = time.perf_counter() - started
        print(f"\n{n_users} users: wall {wall:.3f}s, slowest user {max(times):.3f}s")
        for u in users:
            assert sum(1 for e in u.events if e["type"] == "agent_completed") == 2
