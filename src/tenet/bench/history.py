"""``tenet bench --history TURNS``: what a thread's history costs a run, in server CPU.

Runs of the ``assistant`` (the default loop, the scripted model) are measured
three ways, one run of each in turn so that the machine's drift falls on all
three alike: on an empty thread; on a thread that already holds ``TURNS`` turns,
with the history not read (the context budget set to nothing for that run, so
it is sent the system prompt and its input only); and on another such thread,
with the history read. The last two differ only in the history: reading it
within the budget and handing the model the messages it holds. That difference
is the history's own cost; the difference with the empty thread is shown beside
it (it also holds what a thread's older events cost the store's writes, which
no history read can change). The service runs in this process on a fresh SQLite
file, so the CPU of the process is the server's (``time.process_time``, every
thread of it); the submit and wait are the same on every side and cancel out.
Once the service has started, the process's heap is frozen as ``tenet serve``
freezes its own (:mod:`tenet.heap`): a full garbage collection then costs what
it costs a server, not the 40 ms or more of walking this process's whole heap,
which landed on whichever run was measured at the time.

The history read alone (``Conversations.messages``, the budget applied) is timed
too, on the same threads: warm (the process has read the thread before, as it has
any thread it served recently) and cold (an empty ``TurnCache`` each time, as a
process's first read of a thread, or of one whose turns the bounded cache has
let go). Each size is measured right after its threads are filled, before longer
threads push its turns out of the cache. Two much longer threads (20 and 40
times ``TURNS``) show whether the cost keeps growing past the budget: it should
not, since reading stops once ``TENET_CONTEXT_TOKENS`` is spent (both figures
are the same when both threads hold more than the budget takes).
"""

from __future__ import annotations

import asyncio
import gc
import random
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..conversation import TURN_CACHE_BYTES, TurnCache
from ..heap import startup_heap_frozen
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


async def _interleaved_ms(
    service: Service, user_id: str, empty: list[str], off: list[str], on: list[str], start: int
) -> tuple[float, float, float]:
    """Mean CPU milliseconds per run on ``empty``, ``off`` (history not read) and ``on``
    threads, one run of each in turn, in a shuffled order: what a run leaves to do
    after it has ended (the store's checkpoint, say) is counted in the next run's
    time, and the shuffle spreads it over the three alike."""
    conversations = service.engine.conversations
    budget = conversations.context_tokens
    spent = [0.0, 0.0, 0.0]
    shuffle = random.Random(len(empty)).shuffle
    gc.collect()
    for n, threads in enumerate(zip(empty, off, on, strict=True)):
        kinds = [0, 1, 2]
        shuffle(kinds)
        for k in kinds:
            thread_id = threads[k]
            conversations.context_tokens = 0 if k == 1 else budget
            before = time.process_time()
            await _turn(service, user_id, thread_id, start + n)
            spent[k] += time.process_time() - before
    conversations.context_tokens = budget
    empty_ms, off_ms, on_ms = (s * 1000 / len(empty) for s in spent)
    return empty_ms, off_ms, on_ms


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
            # Its collections cost what a served process's cost (tenet.heap).
            with startup_heap_frozen():
                user, _ = await service.store.create_user("bench-history")
                sizes = (turns, turns * 20, turns * 40)
                full: dict[int, list[str]] = {}
                per_run: dict[int, float] = {}
                reads: dict[int, float] = {}
                cold: dict[int, float] = {}
                # Two threads per measured run at TURNS (one read with history, one without;
                # each run sees exactly TURNS turns); one thread for all runs at 20 and 40 x
                # TURNS (past the budget: a few more change nothing). Each size is measured
                # right after its threads are filled: filling the long ones pushes the short
                # ones' turns out of the process's bounded turn cache, which would measure a
                # cold read as the common case.
                for n, (size, count) in enumerate(
                    ((sizes[0], 2 * runs), *((size, 1) for size in sizes[1:]))
                ):
                    threads = [
                        (await service.store.create_thread(user.id)).id for _ in range(count)
                    ]
                    for t, thread_id in enumerate(threads):
                        for i in range(size):
                            await _turn(service, user.id, thread_id, i)
                        progress(f"filling threads with {size} turns", t + 1, count)
                    full[size] = threads[:runs] if n == 0 else threads * runs
                    if n == 0:
                        empty = [
                            (await service.store.create_thread(user.id)).id for _ in range(runs)
                        ]
                        # Warm up (imports, caches, the estimator's calibration) on other threads.
                        warm = [(await service.store.create_thread(user.id)).id for _ in range(10)]
                        await _cpu_per_run_ms(service, user.id, warm, 0)
                        progress("measuring", n, len(sizes))
                        per_run[0], off_ms, per_run[size] = await _interleaved_ms(
                            service, user.id, empty, threads[runs:], full[size], size
                        )
                    else:
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
        # The same threads of TURNS turns, the history not read: the baseline of its own cost.
        "cpu_ms_per_run_history_not_read": round(off_ms, 3),
        # From the rounded figures, so that the report's own subtraction gives it exactly.
        "history_cpu_ms_per_run": round(round(per_run[turns], 3) - round(off_ms, 3), 3),
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
