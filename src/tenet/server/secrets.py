"""``/v1/me/secrets``: the caller's secrets, write-only.

``PUT /v1/me/secrets/{name}`` ``{"value"}`` stores one (204), ``GET
/v1/me/secrets`` lists names (never values), ``DELETE /v1/me/secrets/{name}``
deletes one (204; 404 if not set). A change reaches the caller's runs at once,
on every process (:mod:`tenet.secret_changes`): the cached value in the caller's
session is dropped, and the caller's MCP sessions that were opened with it are
closed, so the next call opens a session with the new value. Neither a response
nor a log line carries a value.
"""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import APIRouter, Depends, Path
from pydantic import BaseModel, ConfigDict, Field, StrictStr
from starlette.responses import Response

from ..errors import NotFound
from ..store.secrets import MAX_SECRET_CHARS, check_name
from .auth import Caller, current_caller, state_dependency
from .query import OnceQueryRoute
from .routes import ERROR_RESPONSES
from .state import ServerState
from .wire import json_response

log = logging.getLogger("tenet.server")

router = APIRouter(responses=ERROR_RESPONSES, route_class=OnceQueryRoute)
CallerDep = Annotated[Caller, Depends(current_caller)]
StateDep = Annotated[ServerState, Depends(state_dependency)]
#: A secret's name in the path (``store.secrets.SECRET_NAME``, stated for the schema).
NameDep = Annotated[str, Path(pattern=r"^[A-Za-z_][A-Za-z0-9_.-]{0,63}$", max_length=64)]


class SecretValue(BaseModel):
    model_config = ConfigDict(extra="ignore", hide_input_in_errors=True)

    value: StrictStr = Field(min_length=1, max_length=MAX_SECRET_CHARS)


@router.get("/v1/me/secrets")
async def list_secrets(caller: CallerDep, state: StateDep) -> Response:
    names = await state.service.secrets.names(caller.user_id)
    return json_response({"data": names, "enabled": state.service.secrets.enabled})


@router.put("/v1/me/secrets/{name}", status_code=204)
async def put_secret(
    name: NameDep, body: SecretValue, caller: CallerDep, state: StateDep
) -> Response:
    check_name(name)
    await state.service.secrets.put(caller.user_id, name, body.value)
    await state.service.secret_changes.changed(caller.user_id, name)
    log.info("secret %r set", name, extra={"user_id": caller.user_id})
    return Response(status_code=204)


@router.delete("/v1/me/secrets/{name}", status_code=204)
async def delete_secret(name: NameDep, caller: CallerDep, state: StateDep) -> Response:
    if not await state.service.secrets.delete(caller.user_id, check_name(name)):
        raise NotFound("no secret of that name")
    await state.service.secret_changes.changed(caller.user_id, name)
    log.info("secret %r deleted", name, extra={"user_id": caller.user_id})
    return Response(status_code=204)
