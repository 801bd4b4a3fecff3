"""Token usage in the store: a run's counters, and a user's totals since a time.

The counters live on the run's row (``input_tokens``, ``output_tokens``,
``model_calls``, 64-bit; migration ``0007_usage``), incremented after each model
call, so a user's usage is a sum over their runs, in whichever process they ran.
Every query is scoped by the caller's ``user_id``. Each is a statement of the
catalogue (:mod:`tenet.store.statements`) run as a unit (:mod:`tenet.store.units`)
by the store's executor, the same on every database.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from . import units

if TYPE_CHECKING:
    from .db import Store


async def add_run_usage(
    store: Store, user_id: str, run_id: str, input_tokens: int, output_tokens: int, calls: int
) -> None:
    """Add one model call's cost to the run's counters."""
    await store.executor.run(
        units.add_run_usage, user_id, run_id, input_tokens, output_tokens, calls
    )


async def usage_by_agent(
    store: Store, user_id: str, since: datetime
) -> dict[str, tuple[int, int, int, int]]:
    """``agent -> (input_tokens, output_tokens, model_calls, runs)`` of the user's runs
    created at or after ``since``."""
    return await store.executor.run(units.usage_by_agent, user_id, since, write=False)


async def tokens_since(store: Store, user_id: str, since: datetime) -> int:
    """The user's input plus output tokens in runs created at or after ``since``."""
    return await store.executor.run(units.tokens_since, user_id, since, write=False)
