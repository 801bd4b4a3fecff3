"""Token usage: what a run's model calls cost, the process's counters, and the daily quota.

A run's usage is the sum of the ``usage`` its model calls reported (delegated
executions share their run's :class:`RunUsage`, so each call is counted once).
After every call that reported usage the run's row is incremented in the store,
so the user's totals (``GET /v1/me/usage``) and quota are read from the store
and hold across a cluster's processes; the run's terminal event carries the
same totals from memory.

The quota (``TENET_USER_TOKENS_PER_DAY``) counts input and output tokens of the
user's runs created since 00:00 UTC. A run is refused with 429
``quota_exceeded`` when the user is already at it; a run that crosses it ends
after the model call that crossed it, with ``agent_error`` code
``quota_exceeded``. Runs executing at the same moment may together overshoot the
quota by what their current calls cost: each stops after its call.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import UTC, datetime, time
from typing import TYPE_CHECKING, Any

from .errors import QuotaExceeded
from .models.base import Usage
from .store import usage as stored

if TYPE_CHECKING:
    from .store.db import Store


@dataclass(slots=True)
class RunUsage:
    """One run's token totals (all of its executions)."""

    input_tokens: int = 0
    output_tokens: int = 0
    model_calls: int = 0

    def add(self, usage: Usage | None) -> None:
        self.model_calls += 1
        if usage is not None:
            self.input_tokens += usage.input_tokens
            self.output_tokens += usage.output_tokens

    def as_dict(self) -> dict[str, int]:
        """The ``usage`` object of the protocol."""
        return {
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "model_calls": self.model_calls,
        }


def run_usage(run: Any) -> dict[str, int]:
    """The ``usage`` object of a stored run (its row's counters; zeros for an old row)."""
    return {
        "input_tokens": int(getattr(run, "input_tokens", 0) or 0),
        "output_tokens": int(getattr(run, "output_tokens", 0) or 0),
        "model_calls": int(getattr(run, "model_calls", 0) or 0),
    }


class UsageMeter:
    """This process's tokens by agent and model, for Prometheus (never by user).

    Read at scrape time; a lock because a scrape may run on another thread.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[tuple[str, str], list[int]] = {}

    def add(self, agent: str, model: str, usage: Usage | None) -> None:
        with self._lock:
            counts = self._counts.get((agent, model))
            if counts is None:
                counts = self._counts[(agent, model)] = [0, 0, 0]
            counts[2] += 1
            if usage is not None:
                counts[0] += usage.input_tokens
                counts[1] += usage.output_tokens

    def snapshot(self) -> dict[tuple[str, str], tuple[int, int, int]]:
        """``(agent, model) -> (input_tokens, output_tokens, model_calls)``."""
        with self._lock:
            return {key: (c[0], c[1], c[2]) for key, c in self._counts.items()}


def model_label(model: Any) -> str:
    """The model's name for metrics: the endpoint's model name, or the class's."""
    name = getattr(model, "model", None)
    return name if isinstance(name, str) and name else type(model).__name__


def day_start(now: datetime | None = None) -> datetime:
    """00:00 UTC of ``now``'s day: where a day's quota starts."""
    now = now or datetime.now(UTC)
    return datetime.combine(now.astimezone(UTC).date(), time(), tzinfo=UTC)


def _seconds_to_midnight(now: datetime) -> float:
    return max(1.0, 86400 - (now - day_start(now)).total_seconds())


class Quota:
    """``TENET_USER_TOKENS_PER_DAY`` checked against the store (None: no quota)."""

    def __init__(self, store: Store, tokens_per_day: int | None) -> None:
        self.store = store
        self.tokens_per_day = tokens_per_day

    async def used_today(self, user_id: str) -> int:
        return await stored.tokens_since(self.store, user_id, day_start())

    async def check(self, user_id: str) -> None:
        """Raise :class:`QuotaExceeded` when ``user_id`` has used the day's tokens."""
        limit = self.tokens_per_day
        if limit is None:
            return
        if await self.used_today(user_id) >= limit:
            now = datetime.now(UTC)
            raise QuotaExceeded(
                f"the daily quota of {limit} tokens is used up; it starts over at 00:00 UTC",
                retry_after=_seconds_to_midnight(now),
            )
