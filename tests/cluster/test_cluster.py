"""Three real ``tenet serve`` processes on one Postgres and one Redis.

Clients connect to different processes than the ones executing their runs; a
process is killed with SIGKILL mid-run; Redis is restarted mid-stream. Every
client must see every event of its runs once, in order, ending in one terminal
event, and the isolation audit must pass against the cluster.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path

import asyncpg
from cluster_support import cluster
from sqlalchemy.engine import make_url

from tenet.audit import IsolationAudit, thread_violations
from tenet.audit.checks import is_terminal
from tenet.client import Client


async def _workers(database_url: str) -> dict[str, str]:
    """run id -> the worker that executed it, read from the shared store."""
    dsn = make_url(database_url).set(drivername="postgresql").render_as_string(hide_password=False)
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch("SELECT id, worker_id, status FROM runs")
    finally:
        await conn.close()
    return {r["id"]: (r["worker_id"] or "", r["status"]) for r in rows}


async def _metrics(url: str, admin_token: str) -> dict[str, float]:
    import httpx

    async with httpx.AsyncClient() as http:
        r = await http.get(url + "/metrics", headers={"Authorization": f"Bearer {admin_token}"})
    r.raise_for_status()
    return {
        line.split()[0]: float(line.split()[1])
        for line in r.text.splitlines()
        if line and not line.startswith("#") and "{" not in line
    }


async def _collect(client: Client, thread_id: str, runs: int) -> list[dict]:
    events = []
    ended = 0
    async for e in client.subscribe(thread_id, after=0):
        events.append(e)
        ended += is_terminal(e)
        if ended == runs:
            return events
    return events


async def test_clients_follow_runs_executing_on_other_processes(
    postgres_url: str, tmp_path: Path
) -> None:
    async with cluster(postgres_url, tmp_path, nodes=3, user_max_runs="2") as c:
        users = [await c.user(f"spread{i}") for i in range(6)]

        async def work(i: int, token: str) -> None:
            # Runs are created over HTTP on one process, followed over WebSocket on another.
            submit = c.nodes[i % 3]
            watch = c.nodes[(i + 1) % 3]
            async with Client(submit.url, token) as http, Client(watch.url, token) as ws:
                thread = await http.create_thread()
                for _ in range(4):
                    await http.create_run(thread["id"], "benchmark", "latency_ms=30")
                events = await asyncio.wait_for(_collect(ws, thread["id"], 4), 60)
                assert thread_violations(events) == []
                assert [e["event_id"] for e in events] == [
                    e["event_id"] for e in await http.events(thread["id"], limit=1000)
                ]
                assert {e["user_id"] for e in events} == {users[i][0]}

        await asyncio.gather(*(work(i, token) for i, (_, token) in enumerate(users)))
        workers = await _workers(c.database_url)
        spread = Counter(w.split(":")[1] for w, _ in workers.values() if w)
        statuses = Counter(s for _, s in workers.values())
        print(f"\nruns per process (pid: runs): {dict(spread)}; statuses: {dict(statuses)}")
        assert statuses == {"completed": 24}


async def test_runs_spread_across_processes_within_the_per_process_limit(
    postgres_url: str, tmp_path: Path
) -> None:
    async with cluster(postgres_url, tmp_path, nodes=3, max_runs="3") as c:
        users = [await c.user(f"spread{i}") for i in range(6)]
        peak: Counter[str] = Counter()
        thread_ids = []
        for _, token in users:
            async with Client(c.nodes[0].url, token) as client:
                for _ in range(2):
                    thread = await client.create_thread()
                    await client.create_run(thread["id"], "benchmark", "latency_ms=300")
                    thread_ids.append(thread["id"])
        executed: Counter[str] = Counter()
        seen: dict[str, str] = {}
        for _ in range(100):
            now: Counter[str] = Counter()
            workers = await _workers(c.database_url)
            for run_id, (worker, status) in workers.items():
                if status == "running" and worker:
                    process = worker.split(":")[1]
                    now[process] += 1
                    seen[run_id] = process
            for process, n in now.items():
                peak[process] = max(peak[process], n)
            if all(s == "completed" for _, s in workers.values()):
                break
            await asyncio.sleep(0.05)
        executed.update(seen.values())
        print(f"\nruns seen running per process: {dict(executed)}; peak at once: {dict(peak)}")
        assert all(s == "completed" for _, s in (await _workers(c.database_url)).values())
        assert len(executed) >= 2, (
            "twelve runs, three per process at most: several processes ran them"
        )
        assert max(peak.values()) <= 3, "the per-process limit held"


async def test_kill_9_mid_run_ends_every_run_with_a_terminal_event(
    postgres_url: str, tmp_path: Path
) -> None:
    async with cluster(postgres_url, tmp_path, nodes=3) as c:
        _, token = await c.user("victim")
        async with Client(c.nodes[0].url, token) as submitter:
            threads = []
            for _ in range(6):
                thread = await submitter.create_thread()
                await submitter.create_run(thread["id"], "benchmark", "latency_ms=4000")
                threads.append(thread["id"])
        await asyncio.sleep(1.0)
        workers = await _workers(c.database_url)
        busy = {w.split(":")[1] for w, s in workers.values() if s == "running" and w}
        victim = next(n for n in c.nodes if str(n.process.pid) in busy)
        survivor = next(n for n in c.nodes if n is not victim)
        victim.kill()
        # Every run ends, those of the dead process with agent_error code interrupted.
        async with Client(survivor.url, token) as client:
            results = await asyncio.wait_for(
                asyncio.gather(*(_collect(client, t, 1) for t in threads)), 60
            )
        codes: Counter[str] = Counter()
        for events in results:
            assert thread_violations(events) == []
            terminal = events[-1]
            codes[terminal["type"] + ":" + str(terminal.get("error", {}).get("code", ""))] += 1
        print(f"\nterminal events after kill -9 of pid {victim.process.pid}: {dict(codes)}")
        assert codes["agent_error:interrupted"] >= 1
        assert sum(codes.values()) == 6


async def test_redis_restart_mid_stream_loses_nothing(postgres_url: str, tmp_path: Path) -> None:
    async with cluster(postgres_url, tmp_path, nodes=2) as c:
        _, token = await c.user("streamer")
        async with Client(c.nodes[1].url, token) as watcher, Client(c.nodes[0].url, token) as http:
            thread = await http.create_thread()
            for _ in range(3):
                await http.create_run(thread["id"], "benchmark", "latency_ms=700 events=40")
            collector = asyncio.create_task(_collect(watcher, thread["id"], 3))
            await asyncio.sleep(0.5)
            c.redis.stop()
            await asyncio.sleep(1.0)
            c.redis.start()
            events = await asyncio.wait_for(collector, 60)
            stored = await http.events(thread["id"], limit=1000)
        metrics = await _metrics(c.nodes[1].url, c.admin_token)
        assert metrics["tenet_bus_resumes_total"] >= 1, (
            "the watcher's socket resumed from the store"
        )
        assert metrics["tenet_queue_overflows_total"] == 0, "an outage is not a slow client"
        assert thread_violations(events) == []
        assert [e["event_id"] for e in events] == [e["event_id"] for e in stored]
        assert len(stored) == 3 * 40


async def test_isolation_audit_passes_against_the_cluster(
    postgres_url: str, tmp_path: Path
) -> None:
    async with cluster(postgres_url, tmp_path, nodes=3) as c:
        report = await IsolationAudit(c.nodes[1].url, c.admin_token, users=8, runs=1).run()
    assert report.ok, {n: ch.violations[:3] for n, ch in report.checks.items() if ch.violations}


async def test_a_cancel_sent_to_any_process_reaches_the_executing_one(
    postgres_url: str, tmp_path: Path
) -> None:
    import time

    async with cluster(postgres_url, tmp_path, nodes=3) as c:
        _, token = await c.user("canceller")
        async with Client(c.nodes[0].url, token) as submitter:
            thread = await submitter.create_thread()
            run = await submitter.create_run(thread["id"], "benchmark", "latency_ms=5000")
            for _ in range(100):
                worker, status = (await _workers(c.database_url))[run["id"]]
                if status == "running":
                    break
                await asyncio.sleep(0.05)
        executor = worker.split(":")[1]
        other = next(n for n in c.nodes if str(n.process.pid) != executor)
        async with Client(other.url, token) as client:
            started = time.perf_counter()
            await client.cancel_run(run["id"])
            events = await asyncio.wait_for(_collect(client, thread["id"], 1), 30)
            took = time.perf_counter() - started
        print(
            f"\ncancel through pid {other.process.pid} reached pid {executor} in {took * 1000:.0f} ms"
        )
        assert events[-1]["type"] == "run_cancelled" and events[-1]["reason"] == "user"
        assert not any(e["type"] == "agent_completed" for e in events)
        assert thread_violations(events) == []
