"""A step that holds the event loop is measured and named: the lag gauge and the warning."""

from __future__ import annotations

import asyncio
import logging
import time

from core_support import FuncAgent, new_thread, new_user, registry_with, run_to_end

from tenet import RunContext, Service
from tenet.server.metrics import Metrics


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def hog(ctx: RunContext, milliseconds: float) -> None:
    """Compute without awaiting: every other user waits meanwhile."""
    end = time.perf_counter() + milliseconds / 1000
    while time.perf_counter() < end:
        pass


async def test_a_step_holding_the_loop_is_logged_with_its_run_and_shows_in_the_gauge(
    make_settings,
) -> None:
    async def flow(ctx: RunContext, input: str) -> str:
        await ctx.think("about to hold the loop")
        hog(ctx, 400)
        return "done"

    async def polite(ctx: RunContext, input: str) -> str:
        await ctx.think("short")
        return "ok"

    settings = make_settings(loop_stall_warn_ms=100)
    handler = _Records()
    logger = logging.getLogger("tenet.loop")
    logger.addHandler(handler)
    try:
        registry = registry_with(settings, FuncAgent("hog", flow), FuncAgent("polite", polite))
        async with Service(settings, registry) as svc:
            metrics = Metrics(svc, lambda: 0)
            user = await new_user(svc)
            run, _ = await run_to_end(svc, user, await new_thread(svc, user), "hog", "x")
            await run_to_end(svc, user, await new_thread(svc, user), "polite", "x")
            for _ in range(200):  # the watchdog reports once it sees the loop move again
                if svc.loop_watch.stalls:
                    break
                await asyncio.sleep(0.01)
            text = metrics.render().decode()
        stalls = [r for r in handler.records if getattr(r, "run_id", None) == run.id]
    finally:
        logger.removeHandler(handler)
    assert stalls, [r.getMessage() for r in handler.records]
    message = stalls[0].getMessage()
    assert run.id in message and "test_loop_watch.py" in message and "hog" in message
    assert stalls[0].user_id == user  # type: ignore[attr-defined]
    (line,) = [x for x in text.splitlines() if x.startswith("tenet_event_loop_lag_seconds ")]
    assert float(line.split()[1]) >= 0.3


async def test_a_loop_that_is_never_held_logs_nothing(make_settings) -> None:
    handler = _Records()
    logging.getLogger("tenet.loop").addHandler(handler)
    try:
        async with Service(make_settings(loop_stall_warn_ms=100)) as svc:
            user = await new_user(svc)
            for _ in range(3):
                await run_to_end(svc, user, await new_thread(svc, user), "assistant", "2 + 2")
    finally:
        logging.getLogger("tenet.loop").removeHandler(handler)
    assert handler.records == []
