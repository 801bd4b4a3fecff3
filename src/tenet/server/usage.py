"""``GET /v1/me/usage``: the caller's token usage since a time, in total and per agent.

Summed in the store over the caller's runs (see :mod:`tenet.store.usage`), so it
counts runs of every process of a cluster. Only the caller's own runs are ever
summed: the user id comes from the credential.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Query
from pydantic import AwareDatetime
from starlette.responses import Response

from ..clock import format_time
from ..store.usage import usage_by_agent
from ..usage import day_start
from .auth import Caller, current_caller, state_dependency
from .query import OnceQueryRoute
from .routes import ERROR_RESPONSES
from .state import ServerState
from .wire import json_response

router = APIRouter(responses=ERROR_RESPONSES, route_class=OnceQueryRoute)


def since_or_today(value: datetime | None) -> datetime:
    """``since`` in UTC; unset: 00:00 UTC today."""
    return day_start() if value is None else value.astimezone(UTC)


@router.get("/v1/me/usage")
async def my_usage(
    caller: Annotated[Caller, Depends(current_caller)],
    state: Annotated[ServerState, Depends(state_dependency)],
    since: Annotated[
        AwareDatetime | None,
        Query(description="RFC 3339 time with its zone, e.g. 2026-11-29T00:00:00Z"),
    ] = None,
) -> Response:
    """Tokens of the caller's runs created at or after ``since`` (default: today, UTC)."""
    start = since_or_today(since)
    rows = await usage_by_agent(state.service.store, caller.user_id, start)
    agents = [
        {
            "agent": agent,
            "usage": {"input_tokens": i, "output_tokens": o, "model_calls": c},
            "runs": n,
        }
        for agent, (i, o, c, n) in rows.items()
    ]
    total = {
        key: sum(a["usage"][key] for a in agents)  # type: ignore[index]
        for key in ("input_tokens", "output_tokens", "model_calls")
    }
    return json_response(
        {
            "since": format_time(start),
            "usage": total,
            "runs": sum(int(a["runs"]) for a in agents),  # type: ignore[call-overload]
            "agents": agents,
            "tokens_per_day": state.settings.user_tokens_per_day,
        }
    )
