"""Refusals logged as a count per interval, never one line per refused client.

A client refused at the edge (a socket over ``TENET_WS_MAX_UNAUTHENTICATED``, a
JWT that does not verify) costs the server microseconds; a log line per refusal
would let anyone who can open sockets write the server's log as fast as they
can connect, burying every other line and filling the disk. So the first
refusal of each reason is logged at once, the next ones of the same reason
within :data:`INTERVAL_S` are only counted, and when that interval ends one
line says how many there were. The log gets at most two lines per reason per
interval whatever the rate; nothing is hidden, only summed.

Reasons are the caller's fixed texts (a handful); past :data:`MAX_REASONS`
distinct ones in one interval the rest are counted under one ``"other"`` line,
so the table cannot grow with what clients send.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field

#: How long refusals of one reason are summed into one line (seconds).
INTERVAL_S = 10.0
#: Distinct reasons counted apart within one interval.
MAX_REASONS = 32


@dataclass(slots=True)
class _Window:
    """One reason's current interval: when it ends and the refusals counted since its first."""

    ends: float
    counted: int = 0
    flush: asyncio.TimerHandle | None = field(default=None)


class RefusalLog:
    """Logs refusals of one logger at ``level``, summed per reason per interval."""

    def __init__(
        self, logger: logging.Logger, level: int = logging.WARNING, interval_s: float = INTERVAL_S
    ) -> None:
        self._log = logger
        self._level = level
        self._interval_s = interval_s
        self._windows: dict[str, _Window] = {}

    def refused(self, reason: str) -> None:
        """One refusal: logged at once if it is the first of its reason in an interval.

        Called on the event loop (a timer writes the interval's count when it ends).
        """
        now = time.monotonic()
        window = self._current(reason, now)
        if window is None and len(self._windows) >= MAX_REASONS:
            for stale in [r for r, w in self._windows.items() if now >= w.ends]:
                self._end(stale)
            if len(self._windows) >= MAX_REASONS:
                reason = "other"
                window = self._current(reason, now)
        if window is None:
            self._windows[reason] = _Window(ends=now + self._interval_s)
            self._log.log(self._level, "%s", reason)
            return
        window.counted += 1
        if window.flush is None:
            loop = asyncio.get_running_loop()
            window.flush = loop.call_later(max(0.0, window.ends - now), self._end, reason)

    def _current(self, reason: str, now: float) -> _Window | None:
        """The open interval of ``reason``, or None (one that has ended is written first)."""
        window = self._windows.get(reason)
        if window is not None and now >= window.ends:
            self._end(reason)
            return None
        return window

    def _end(self, reason: str) -> None:
        """The interval of ``reason`` ended: one line with its count, and the reason forgotten."""
        window = self._windows.pop(reason, None)
        if window is None:
            return
        if window.flush is not None:
            window.flush.cancel()
        if window.counted:
            self._log.log(
                self._level, "%s (%d more in %g s)", reason, window.counted, self._interval_s
            )

    def close(self) -> None:
        """Write the counts not yet written and stop their timers."""
        for reason in list(self._windows):
            self._end(reason)
