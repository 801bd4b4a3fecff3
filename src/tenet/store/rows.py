"""Row shapes shared by the store's direct paths (SQLite and Postgres).

Both write and read the same rows as the ORM; what differs is only how a time is
stored (text on SQLite, ``timestamptz`` on Postgres), so the converters are
passed in.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import orjson

TERMINAL = ("completed", "failed", "cancelled")
RUN_COLUMNS = (
    "id, user_id, thread_id, agent, status, input, output, error, metadata, created_at, "
    "started_at, finished_at, worker_id, heartbeat_at, attempts, "
    "input_tokens, output_tokens, model_calls"
)

#: A run's start, with placeholders for each dialect: ``queued`` becomes ``running`` (a
#: cancel stored first keeps ``cancelling``); a run that has ended is left alone.
START_RUN = (
    "UPDATE runs SET status = CASE status WHEN 'queued' THEN 'running' ELSE status END, "
    "started_at = coalesce(started_at, {now}), worker_id = {worker} "
    "WHERE id = {run} AND user_id = {user} AND status NOT IN ('completed', 'failed', 'cancelled')"
)


def to_db_json(value: Any) -> str | None:
    return None if value is None else orjson.dumps(value).decode()


def from_db_json(value: str | None) -> Any:
    return None if value is None else orjson.loads(value)


def run_from_row(row: Sequence[Any], time: Callable[[Any], Any] = lambda v: v) -> dict[str, Any]:
    """A ``runs`` row (``RUN_COLUMNS``) as the keyword arguments of the ORM's ``Run``."""
    return {
        "id": row[0],
        "user_id": row[1],
        "thread_id": row[2],
        "agent": row[3],
        "status": row[4],
        "input": row[5],
        "output": row[6],
        "error": from_db_json(row[7]),
        "meta": from_db_json(row[8]) or {},
        "created_at": time(row[9]),
        "started_at": time(row[10]),
        "finished_at": time(row[11]),
        "worker_id": row[12],
        "heartbeat_at": time(row[13]),
        "attempts": row[14],
        "input_tokens": row[15],
        "output_tokens": row[16],
        "model_calls": row[17],
    }
