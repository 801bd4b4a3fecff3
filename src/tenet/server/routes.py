"""The HTTP resources of PROTOCOL.md.

Every handler takes the caller from the credential and passes the caller's user
id to the store, which filters by it; a foreign id is therefore "not found",
answered with the same bytes as a missing one.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, Query, Request
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictStr,
    WithJsonSchema,
)
from starlette.responses import Response
from typing_extensions import TypeAliasType

from .. import thread_gate
from ..errors import Invalid, TooLarge, Unavailable
from .auth import Caller, current_caller, require_admin, server_state, state_dependency
from .live import TOKEN_REVOKED
from .metrics import CONTENT_TYPE
from .params import SeqQuery
from .query import OnceQueryRoute
from .state import ServerState
from .wire import events_response, json_response, message_json, run_json, thread_json

log = logging.getLogger("tenet.server")

#: The largest ``metadata`` object a thread or run may carry, serialized.
MAX_METADATA_BYTES = 16 * 1024
#: How long deleting a thread waits for its running run to write its last event.
DELETE_WAIT_S = 10.0


class ErrorDetail(BaseModel):
    code: str
    message: str


class ErrorBody(BaseModel):
    """The one error body of the protocol."""

    error: ErrorDetail


#: Every route may answer these, with :class:`ErrorBody` (documented so clients and
#: schema checkers know them).
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorBody, "description": description}
    for status, description in {
        401: "missing or bad credentials",
        404: "not found (or not the caller's)",
        405: "method not allowed",
        409: "conflict (e.g. a run of the thread is still stopping: retry)",
        413: "body or input too large",
        422: "invalid request",
        429: "rate limited (see Retry-After)",
        500: "internal error (no details)",
        503: "unavailable: shutting down or the store is unreachable",
    }.items()
}

router = APIRouter(responses=ERROR_RESPONSES, route_class=OnceQueryRoute)
CallerDep = Annotated[Caller, Depends(current_caller)]
StateDep = Annotated[ServerState, Depends(state_dependency)]


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore")


class UserCreate(_Body):
    name: StrictStr = Field(min_length=1, max_length=200)


def _no_integer(value: Any) -> Any:
    if isinstance(value, int):  # bool included: those take their own branches
        raise ValueError("an integer is not a fraction")
    return value


#: An integer the store's JSON encoder can hold: signed or unsigned 64 bits.
Int64 = Annotated[int, Field(ge=-(2**63), le=2**64 - 1)]
#: A number with a fraction or an exponent; an integer never takes this branch (no rounding).
Fraction = Annotated[
    float,
    BeforeValidator(_no_integer),
    WithJsonSchema({"type": "number", "not": {"type": "integer"}}),
]
#: Any JSON value whose integers fit in 64 bits (RFC 8259 allows wider ones; the store does not).
MetadataValue = TypeAliasType(
    "MetadataValue",
    "Int64 | Fraction | StrictStr | StrictBool | list[MetadataValue] | dict[str, MetadataValue] | None",
)
Metadata = dict[str, MetadataValue]


class ThreadCreate(_Body):
    metadata: Metadata | None = None


class RunCreate(_Body):
    agent: StrictStr
    input: StrictStr
    metadata: Metadata | None = None


def check_metadata(metadata: dict[str, Any] | None) -> dict[str, Any]:
    if not metadata:
        return {}
    try:
        size = len(orjson.dumps(metadata))
    except orjson.JSONEncodeError:  # JSON allows it, the store can't hold it: beyond 64 bits
        raise Invalid("metadata holds a number beyond 64 bits, which cannot be stored") from None
    if size > MAX_METADATA_BYTES:
        raise TooLarge(f"metadata is larger than {MAX_METADATA_BYTES} bytes")
    return metadata


# Identity ---------------------------------------------------------------------------------------


@router.post("/v1/users", status_code=201, dependencies=[Depends(require_admin)])
async def create_user(body: UserCreate, state: StateDep) -> Response:
    user, token = await state.service.store.create_user(body.name)
    return json_response({"user_id": user.id, "name": user.name, "token": token}, 201)


@router.post("/v1/tokens", status_code=201)
async def create_token(caller: CallerDep, state: StateDep) -> Response:
    token = await state.service.store.create_token(
        caller.user_id, limit=state.settings.max_tokens_per_user
    )
    return json_response({"token": token}, 201)


@router.delete("/v1/tokens/current", status_code=204)
async def revoke_current_token(caller: CallerDep, state: StateDep) -> Response:
    if caller.issuer is not None:
        raise Invalid("a JWT is revoked by its issuer, not here")
    await state.service.store.revoke_token(caller.user_id, caller.token_hash)
    closed = state.live.revoke(caller.token_hash)
    signal = getattr(state.service.bus, "signal", None)
    if signal is not None:  # the token's sockets on other processes
        signal(TOKEN_REVOKED, caller.token_hash)
    log.info(
        "token revoked; %d open connection(s) closed", closed, extra={"user_id": caller.user_id}
    )
    return Response(status_code=204)


@router.get("/v1/me")
async def me(caller: CallerDep) -> Response:
    body = {"user_id": caller.user_id, "name": caller.name}
    if caller.issuer is not None:  # signed in with a JWT: who the provider says this is
        body.update(issuer=caller.issuer, subject=caller.subject)
    return json_response(body)


# Agents -----------------------------------------------------------------------------------------


@router.get("/v1/agents")
async def list_agents(_caller: CallerDep, state: StateDep) -> Response:
    return json_response(state.service.registry.specs())


# Threads ----------------------------------------------------------------------------------------


@router.post("/v1/threads", status_code=201)
async def create_thread(
    caller: CallerDep, state: StateDep, body: ThreadCreate | None = None
) -> Response:
    metadata = check_metadata(body.metadata if body else None)
    thread = await state.service.store.create_thread(
        caller.user_id, metadata, limit=state.settings.max_threads_per_user
    )
    return json_response(thread_json(thread), 201)


@router.get("/v1/threads")
async def list_threads(
    caller: CallerDep,
    state: StateDep,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    before: Annotated[str | None, Query(max_length=100)] = None,
) -> Response:
    threads = await state.service.store.list_threads(caller.user_id, limit=limit, before=before)
    return json_response([thread_json(t) for t in threads])


@router.get("/v1/threads/{thread_id}")
async def get_thread(thread_id: str, caller: CallerDep, state: StateDep) -> Response:
    return json_response(
        thread_json(await state.service.store.get_thread(caller.user_id, thread_id))
    )


@router.delete("/v1/threads/{thread_id}", status_code=204)
async def delete_thread(thread_id: str, caller: CallerDep, state: StateDep) -> Response:
    await thread_gate.delete_thread(
        state.service.engine, caller.user_id, thread_id, wait_s=DELETE_WAIT_S
    )
    return Response(status_code=204)


@router.get("/v1/threads/{thread_id}/messages")
async def list_messages(thread_id: str, caller: CallerDep, state: StateDep) -> Response:
    messages = await state.service.store.list_messages(caller.user_id, thread_id)
    return json_response([message_json(m) for m in messages])


@router.get("/v1/threads/{thread_id}/events")
async def list_events(
    thread_id: str,
    caller: CallerDep,
    state: StateDep,
    after: SeqQuery = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 1000,
) -> Response:
    bodies = await state.service.store.list_events(
        caller.user_id, thread_id, after=after, limit=limit
    )
    return events_response(bodies)


# Runs -------------------------------------------------------------------------------------------


@router.post("/v1/threads/{thread_id}/runs", status_code=202)
async def create_run(
    thread_id: str, body: RunCreate, caller: CallerDep, state: StateDep
) -> Response:
    service = state.service
    await service.store.get_thread(caller.user_id, thread_id)
    run = await service.engine.submit(
        caller.user_id, thread_id, body.agent, body.input, check_metadata(body.metadata)
    )
    return json_response(run_json(run), 202)


@router.get("/v1/runs/{run_id}")
async def get_run(run_id: str, caller: CallerDep, state: StateDep) -> Response:
    return json_response(run_json(await state.service.store.get_run(caller.user_id, run_id)))


@router.post("/v1/runs/{run_id}/cancel", status_code=202)
async def cancel_run(run_id: str, caller: CallerDep, state: StateDep) -> Response:
    run = await state.service.engine.cancel(caller.user_id, run_id)
    return json_response(run_json(run), 202)


# Operations -------------------------------------------------------------------------------------


@router.get("/healthz")
async def healthz(request: Request) -> Response:
    service = server_state(request).service
    if not service.engine.accepting:  # draining: load balancers should send work elsewhere
        raise Unavailable("the server is shutting down")
    try:
        await asyncio.wait_for(service.store.ping(), timeout=5.0)
    except Exception as exc:
        log.warning("health check failed: %s", type(exc).__name__)
        raise Unavailable("the store is unreachable") from None
    return json_response({"status": "ok"})


@router.get("/metrics", dependencies=[Depends(require_admin)])
async def metrics(state: StateDep) -> Response:
    return Response(state.metrics.render(), media_type=CONTENT_TYPE)
