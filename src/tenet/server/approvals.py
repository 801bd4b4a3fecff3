"""Answering a run that waits for a person, over HTTP; and listing the caller's runs.

``POST /v1/runs/{run_id}/approvals/{call_id}`` takes ``{"approved", "arguments"?,
"note"?}``, ``POST /v1/runs/{run_id}/inputs/{request_id}`` takes ``{"value"}``;
both answer 202 with the run. A request that is not the caller's, or does not
exist, is the same 404; a second answer is 409 ``conflict``; a malformed answer
422. Any other field of the body (a ``user_id``, a ``run_id``) is ignored: the
caller is the credential's, the ids the path's. The WebSocket frames ``approve``
and ``respond`` do the same (:mod:`tenet.server.ws`), through the same
:class:`~tenet.approvals.Approvals`.
"""

from __future__ import annotations

from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, Path, Query, Request
from starlette.responses import Response

from ..approvals import MISSING
from ..errors import Invalid
from ..run_lifecycle import RunStatus
from ..store import approvals as stored
from .auth import Caller, current_caller, state_dependency
from .routes import ERROR_RESPONSES
from .state import ServerState
from .wire import json_response, run_json

router = APIRouter(responses=ERROR_RESPONSES)
CallerDep = Annotated[Caller, Depends(current_caller)]
StateDep = Annotated[ServerState, Depends(state_dependency)]
RequestIdDep = Annotated[str, Path(min_length=1, max_length=200)]


async def _body(request: Request) -> dict[str, Any]:
    try:
        body = orjson.loads(await request.body())
    except orjson.JSONDecodeError:
        raise Invalid("the body is not JSON") from None
    if not isinstance(body, dict):
        raise Invalid("the body must be a JSON object")
    return body


@router.post("/v1/runs/{run_id}/approvals/{call_id}", status_code=202)
async def approve(
    run_id: str, call_id: RequestIdDep, request: Request, caller: CallerDep, state: StateDep
) -> Response:
    """Approve or deny a tool call the run waits on (edited ``arguments`` with an approval)."""
    body = await _body(request)
    run = await state.service.engine.approvals.approve(
        caller.user_id,
        run_id,
        call_id,
        body.get("approved"),
        body.get("arguments"),
        body.get("note"),
    )
    return json_response(run_json(run), 202)


@router.post("/v1/runs/{run_id}/inputs/{request_id}", status_code=202)
async def respond(
    run_id: str, request_id: RequestIdDep, request: Request, caller: CallerDep, state: StateDep
) -> Response:
    """Answer a question the run waits on (``value``, checked against its schema)."""
    body = await _body(request)
    run = await state.service.engine.approvals.respond(
        caller.user_id, run_id, request_id, body.get("value", MISSING)
    )
    return json_response(run_json(run), 202)


@router.get("/v1/runs")
async def list_runs(
    caller: CallerDep,
    state: StateDep,
    status: Annotated[RunStatus, Query()],
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> Response:
    """The caller's runs in one status, newest first (``?status=requires_action``: waiting)."""
    runs = await stored.runs_with_status(state.service.store, caller.user_id, status.value, limit)
    return json_response([run_json(r) for r in runs])
