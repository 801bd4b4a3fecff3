"""Category 6: scaling and fairness, measured and reported; fairness also by order.

Timings are reported, not asserted (these machines are noisy); the guarantee
asserted is one of order: a user with one run is served before a user who
queued many runs first has finished them all, because users take turns.
"""

from __future__ import annotations

import asyncio
import statistics
import time

import orjson


async def test_a_light_user_is_not_stuck_behind_a_heavy_one(deploy) -> None:
    async with deploy(bench_latency_ms=20, user_max_runs=1, max_runs=2) as d:
        heavy, light = await d.users(2)
        heavy_ws = await heavy.socket()
        for _ in range(20):
            await heavy_ws.send(
                orjson.dumps({"type": "run", "agent": "benchmark", "input": "x"}).decode()
            )
        accepted = 0
        while accepted < 20:
            accepted += (await heavy.recv(heavy_ws))["type"] == "run_accepted"
        light_ws = await light.socket()
        run_id = await light.run(light_ws, "benchmark", "x")
        heavy_done_before = sum(1 for e in heavy.events if e["type"] == "agent_completed")
        # Drain the heavy user's runs to finish cleanly.
        while sum(1 for e in heavy.events if e["type"] == "agent_completed") < 20:
            await heavy.recv(heavy_ws)
        assert run_id
        assert heavy_done_before < 10, f"the light user waited for {heavy_done_before} heavy runs"
        await heavy_ws.close()
        await light_ws.close()


async def test_scaling_ratio_and_fairness_are_reported(deploy) -> None:
    report = {}
    async with deploy(bench_latency_ms=50) as d:
        for n in (1, 10, 20):
            users = await d.users(n, prefix=f"s{n}")

            async def work(u) -> float:
                ws = await u.socket()
                t0 = time.perf_counter()
                await u.run(ws, "benchmark", "x")
                await ws.close()
                return time.perf_counter() - t0

            times = await asyncio.gather(*(work(u) for u in users))
            report[n] = (statistics.median(times), max(times) / statistics.median(times))
            assert all(
                sum(1 for e in u.events if e["type"] == "agent_completed") == 1 for u in users
            )
    base = report[1][0]
    for n, (median, fairness) in report.items():
        print(
            f"\n{n:>3} users: median run {median * 1000:.1f} ms ({median / base:.2f}x one user), "
            f"slowest/median {fairness:.2f}"
        )
