"""Answering a run that waits for a person, over HTTP; and listing the caller's runs.

``POST /v1/runs/{run_id}/approvals/{call_id}`` takes ``{"approved", "arguments"?,
"note"?}``, ``POST /v1/runs/{run_id}/inputs/{request_id}`` takes ``{"value"}``;
both answer 202 with the run. A request that is not the caller's, or does not
exist, is the same 404; a second answer is 409 ``conflict``; a malformed body
422 (checked before the request is looked up, so the same for any id). Any other field of the body (a ``user_id``, a ``run_id``) is ignored: the
caller is the credential's, the ids the path's. The WebSocket frames ``approve``
and ``respond`` do the same (:mod:`tenet.server.ws`), through the same
:class:`~tenet.approvals.Approvals`.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictStr
from starlette.responses import Response

from ..approvals import NOTE_MAX_CHARS
from ..run_lifecycle import RunStatus
from ..store import approvals as stored
from .auth import Caller, current_caller, state_dependency
from .query import OnceQueryRoute
from .routes import ERROR_RESPONSES
from .state import ServerState
from .wire import json_response, run_json

router = APIRouter(responses=ERROR_RESPONSES, route_class=OnceQueryRoute)
CallerDep = Annotated[Caller, Depends(current_caller)]
StateDep = Annotated[ServerState, Depends(state_dependency)]
RequestIdDep = Annotated[str, Path(min_length=1, max_length=200)]


class ApprovalBody(BaseModel):
    """An answer to a tool call waiting for approval (other fields are ignored)."""

    model_config = ConfigDict(extra="ignore")

    approved: StrictBool
    #: Run the call with these arguments instead (checked like the model's).
    arguments: dict[str, Any] | None = None
    note: StrictStr | None = Field(None, max_length=NOTE_MAX_CHARS)


class InputBody(BaseModel):
    """An answer to a question (checked against its schema; other fields are ignored)."""

    model_config = ConfigDict(extra="ignore")

    value: Any = Field(json_schema_extra={"nullable": True})


@router.post("/v1/runs/{run_id}/approvals/{call_id}", status_code=202)
async def approve(
    run_id: str, call_id: RequestIdDep, body: ApprovalBody, caller: CallerDep, state: StateDep
) -> Response:
    """Approve or deny a tool call the run waits on (edited ``arguments`` with an approval)."""
    run = await state.service.engine.approvals.approve(
        caller.user_id, run_id, call_id, body.approved, body.arguments, body.note
    )
    return json_response(run_json(run), 202)


@router.post("/v1/runs/{run_id}/inputs/{request_id}", status_code=202)
async def respond(
    run_id: str, request_id: RequestIdDep, body: InputBody, caller: CallerDep, state: StateDep
) -> Response:
    """Answer a question the run waits on (``value``, checked against its schema)."""
    run = await state.service.engine.approvals.respond(
        caller.user_id, run_id, request_id, body.value
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
