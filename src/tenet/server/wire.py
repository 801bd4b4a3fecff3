"""The JSON shapes of threads, runs and messages, exactly as PROTOCOL.md lists them."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.responses import Response

from ..clock import format_time
from ..store.db import as_utc
from ..store.tables import Message, Run, Thread
from ..usage import run_usage


def thread_json(thread: Thread) -> dict[str, Any]:
    return {
        "id": thread.id,
        "created_at": format_time(as_utc(thread.created_at)),
        "metadata": thread.meta or {},
    }


def run_json(run: Run) -> dict[str, Any]:
    return {
        "id": run.id,
        "thread_id": run.thread_id,
        "agent": run.agent,
        "status": run.status,
        "input": run.input,
        "output": run.output,
        "error": run.error,
        "created_at": format_time(as_utc(run.created_at)),
        "started_at": format_time(as_utc(run.started_at)),
        "finished_at": format_time(as_utc(run.finished_at)),
        "usage": run_usage(run),
    }


def message_json(message: Message) -> dict[str, Any]:
    return {
        "id": message.id,
        "role": message.role,
        "content": message.content,
        "run_id": message.run_id,
        "created_at": format_time(as_utc(message.created_at)),
    }


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(
        orjson.dumps(data), status_code=status, media_type="application/json", headers=headers
    )


def events_response(bodies: list[str]) -> Response:
    """A JSON array of stored events, sent as the exact bytes that were stored."""
    return Response(
        ("[" + ",".join(bodies) + "]").encode(), status_code=200, media_type="application/json"
    )
