"""Watching the event loop: how late it runs, and which run held it.

Every user's runs, sockets and requests share one event loop per process, so a
step that computes for 300 ms without awaiting stalls everyone for 300 ms. Two
instruments make that visible:

* a ticker task sleeps :data:`TICK_S` at a time and records how much later
  than asked it woke up: the loop's lag. ``tenet_event_loop_lag_seconds`` is
  the worst lag of the last :data:`WINDOW_S` seconds;
* a watchdog thread (outside the loop, so it sees the loop stuck) notices
  when the ticker has not run for ``TENET_LOOP_STALL_WARN_MS``, samples the
  loop thread's stack, and once the loop moves again logs a warning with the
  stall's length, where it was, and the ids of the run whose code held it
  (the innermost frame holding a :class:`~tenet.context.RunContext`).

Costs: the ticker wakes 20 times a second; the thread wakes every quarter of
the threshold and reads a stack only during a stall.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import threading
import time
from collections import deque
from types import FrameType

from .context import RunContext

log = logging.getLogger("tenet.loop")

#: How often the ticker wakes (seconds).
TICK_S = 0.05
#: The lag gauge reports the worst lag over this many seconds.
WINDOW_S = 10.0
#: :meth:`LoopWatch.busy` looks at the lag of this many seconds.
BUSY_WINDOW_S = 1.0


class LoopWatch:
    """The lag gauge and the stall warning of one event loop (see the module doc)."""

    def __init__(self, warn_ms: float, busy_ms: float = 20.0) -> None:
        self.warn_s = warn_ms / 1000
        self.busy_s = busy_ms / 1000
        self.stalls = 0
        self._lags: deque[tuple[float, float]] = deque()
        self._beat = time.monotonic()
        self._task: asyncio.Task[None] | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._loop_thread = 0

    @property
    def lag_s(self) -> float:
        """The worst lag of the last :data:`WINDOW_S` seconds (seconds; 0 when on time)."""
        horizon = time.monotonic() - WINDOW_S
        lags = self._lags
        while lags and lags[0][0] < horizon:
            lags.popleft()
        return max((lag for _, lag in lags), default=0.0)

    def busy(self) -> bool:
        """Whether the loop ran ``busy_ms`` late or more within the last :data:`BUSY_WINDOW_S`.

        A late loop has more ready work than it can do at once (or the machine gives the
        process less CPU than it asks for): what one user's work costs then delays
        everyone's. The scheduler reads it to share the loop by user, not by run.
        """
        horizon = time.monotonic() - BUSY_WINDOW_S
        for at, lag in reversed(self._lags):
            if at < horizon:
                return False
            if lag >= self.busy_s:
                return True
        return False

    def start(self) -> None:
        """Start watching the running loop (call from inside it)."""
        if self._task is not None:
            return
        self._loop_thread = threading.get_ident()
        self._beat = time.monotonic()
        self._stop.clear()
        self._task = asyncio.create_task(self._tick(), name="tenet-loop-ticker")
        self._thread = threading.Thread(target=self._watch, name="tenet-loop-watch", daemon=True)
        self._thread.start()

    async def close(self) -> None:
        self._stop.set()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task
            self._task = None
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join, 2)
            self._thread = None

    async def _tick(self) -> None:
        while True:
            asked = time.monotonic()
            await asyncio.sleep(TICK_S)
            now = time.monotonic()
            lag = now - asked - TICK_S
            if lag > 0.001:
                self._lags.append((now, lag))
                if len(self._lags) > 1024:  # a loop late on every tick: keep the newest
                    self._lags.popleft()
            self._beat = now

    def _watch(self) -> None:
        stalled_since: float | None = None
        where = ""
        ctx: RunContext | None = None
        while True:
            stopping = self._stop.wait(max(0.005, self.warn_s / 4))
            beat = self._beat
            if stopping:
                if stalled_since is not None and beat != stalled_since:
                    self._report(beat - stalled_since - TICK_S, where, ctx)
                return
            if stalled_since is None:
                if time.monotonic() - beat - TICK_S >= self.warn_s:
                    stalled_since = beat
                    where, ctx = self._sample()
            elif beat != stalled_since:  # the loop moved again: report the stall once
                self._report(beat - stalled_since - TICK_S, where, ctx)
                stalled_since, where, ctx = None, "", None

    def _sample(self) -> tuple[str, RunContext | None]:
        """Where the loop thread is now, and the run whose code it is running (if any)."""
        frame: FrameType | None = sys._current_frames().get(self._loop_thread)
        where = ""
        ctx: RunContext | None = None
        if frame is not None:
            code = frame.f_code
            where = f"{code.co_filename}:{frame.f_lineno} in {code.co_name}"
        while frame is not None and ctx is None:
            try:
                values = list(frame.f_locals.values())
            except Exception:  # a frame that ends while we read it
                values = []
            ctx = next((v for v in values if isinstance(v, RunContext)), None)
            frame = frame.f_back
        return where, ctx

    def _report(self, held_s: float, where: str, ctx: RunContext | None) -> None:
        self.stalls += 1
        extra = {}
        run = ""
        if ctx is not None:
            extra = {"user_id": ctx.user_id, "thread_id": ctx.thread_id, "run_id": ctx.run_id}
            run = f" by run {ctx.run_id} (agent {ctx.agent_name}, execution {ctx.execution_id})"
        log.warning(
            "the event loop was held for %.0f ms%s at %s",
            held_s * 1000,
            run,
            where or "an unknown place",
            extra=extra,
        )
