"""``tenet bench --history TURNS``: what a thread's history costs a run, in server CPU.

Runs of the ``assistant`` (the default loop, the scripted model) are measured on
a thread that already holds ``TURNS`` turns and, beside them, on empty threads;
the difference of CPU time per run is what reading and trimming the history
costs. The service runs in this process on a fresh SQLite file, so the CPU of
the process is the server's (``time.process_time``, every thread of it); the
submit and wait are the same on both sides and cancel out of the difference.

The history read alone (``Conversations.messages``, the budget applied) is timed
too, on the same threads: warm (the process has built those finished turns
before, as it has for any thread it served recently) and cold (an empty
``TurnCache`` each time, as a process's first read of a thread, or of one whose
turns the bounded cache has let go). Each size is measured right after its
threads are filled, before longer threads push its turns out of the cache. Two much longer threads (20 and 40 times ``TURNS``) show
whether the cost keeps growing past the budget: it should not, since reading
stops once ``TENET_CONTEXT_TOKENS`` is spent (both figures are the same when both
threads hold more than the budget takes).
"""

from __future__ import annotations

import asyncio
import gc
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..conversation import TURN_CACHE_BYTES, TurnCache
from ..service import Service
from ..settings import Settings

#: One turn of the prefilled threads and of the measured runs alternates these.
_INPUTS = ("what is {i}+1?", "hello number {i}, how are you?")


async def _turn(service: Service, user_id: str, thread_id: str, i: int) -> None:
    run = await service.engine.submit(user_id, thread_id, "assistant", _INPUTS[i % 2].format(i=i))
    await service.engine.wait(run.id)


async def _cpu_per_run_ms(service: Service, user_id: str, threads: list[str], start: int) -> float:
    """CPU milliseconds per run, one run on each thread in turn."""
    gc.collect()
    before = time.process_time()
    for n, thread_id in enumerate(threads):
        await _turn(service, user_id, thread_id, start + n)
    return (time.process_time() - before) * 1000 / len(threads)


async def _read_ms(
    service: Service, user_id: str, thread_id: str, reads: int, *, cold: bool = False
) -> float:
    """CPU milliseconds of one history read with the budget applied (as a run's first call);
    ``cold``: with no finished turn built before."""
    conversations = service.engine.conversations
    specs = [t.spec() for t in service.registry.get("assistant").tools]  # type: ignore[union-attr]
    kept = conversations.turns_kept
    before = time.process_time()
    for _ in range(reads):
        if cold:
            conversations.turns_kept = TurnCache(TURN_CACHE_BYTES)
        await conversations.messages(
            user_id,
            thread_id,
            "run_" + "0" * 26,
            instructions="x",
            input="what is 1+1?",
            tools=specs,
        )
    elapsed = time.process_time() - before
    conversations.turns_kept = kept
    return elapsed * 1000 / reads


async def measure(
    turns: int, runs: int, progress: Callable[[str, int, int | None], None]
) -> dict[str, Any]:
    """The history case's figures (see the module docstring)."""
    with tempfile.TemporaryDirectory(prefix="tenet-bench-history-") as tmp:
        settings = Settings(database_url=f"sqlite+aiosqlite:///{Path(tmp) / 'tenet.db'}")
        async with Service(settings) as service:
            user, _ = await service.store.create_user("bench-history")
            sizes = (turns, turns * 20, turns * 40)
            full: dict[int, list[str]] = {}
            per_run: dict[int, float] = {}
            reads: dict[int, float] = {}
            cold: dict[int, float] = {}
            # One thread per measured run at TURNS (each run sees exactly TURNS turns);
            # one thread for all runs at 20 and 40 x TURNS (past the budget: a few more
            # change nothing). Each size is measured right after its threads are filled:
            # filling the long ones pushes the short ones' turns out of the process's
            # bounded turn cache, which would measure a cold read as the common case.
            for n, (size, count) in enumerate(
                ((sizes[0], runs), *((size, 1) for size in sizes[1:]))
            ):
                threads = [(await service.store.create_thread(user.id)).id for _ in range(count)]
                for t, thread_id in enumerate(threads):
                    for i in range(size):
                        await _turn(service, user.id, thread_id, i)
                    progress(f"filling threads with {size} turns", t + 1, count)
                full[size] = threads if count == runs else threads * runs
                if n == 0:
                    empty = [(await service.store.create_thread(user.id)).id for _ in range(runs)]
                    # Warm up (imports, caches, the estimator's calibration) on other threads.
                    warm = [(await service.store.create_thread(user.id)).id for _ in range(10)]
                    await _cpu_per_run_ms(service, user.id, warm, 0)
                    per_run[0] = await _cpu_per_run_ms(service, user.id, empty, 0)
                progress("measuring", n, len(sizes))
                per_run[size] = await _cpu_per_run_ms(service, user.id, full[size], size)
                reads[size] = await _read_ms(service, user.id, full[size][0], 200)
                cold[size] = await _read_ms(service, user.id, full[size][0], 50, cold=True)
            progress("measuring", len(sizes), len(sizes))
            sent = await service.engine.conversations.history(
                user.id, full[sizes[-1]][0], "run_" + "0" * 26
            )
            longest_sent = sum(1 for m in sent if m["role"] == "user")
    return {
        "turns": turns,
        "runs": runs,
        "context_tokens": settings.context_tokens,
        "cpu_ms_per_run_empty_thread": round(per_run[0], 3),
        "cpu_ms_per_run": {str(size): round(per_run[size], 3) for size in sizes},
        "extra_cpu_ms_per_run": {str(size): round(per_run[size] - per_run[0], 3) for size in sizes},
        "history_read_cpu_ms": {str(size): round(reads[size], 3) for size in sizes},
        "history_read_cold_cpu_ms": {str(size): round(cold[size], 3) for size in sizes},
        "turns_sent_from_longest_thread": longest_sent,
    }


def run_history_bench(
    turns: int, runs: int, progress: Callable[[str, int, int | None], None]
) -> dict[str, Any]:
    return asyncio.run(measure(turns, runs, progress))
