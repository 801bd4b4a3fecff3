"""A single-valued query parameter given twice is 422 ``invalid`` naming it, on every route.

FastAPI reads the last value of a repeated parameter, so ``?status=a&status=b``
used to mean ``status=b``, silently. Real server, real client.
"""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.routing import APIRoute
from server_support import User, http, new_user

from tenet.testing import ServerHandle

#: (path, the repeated parameter's two values) of every route that takes a query parameter.
REPEATED = [
    ("/v1/runs?status=queued&status=running", "status"),
    ("/v1/runs?status=queued&limit=1&limit=2", "limit"),
    ("/v1/threads?limit=1&limit=2", "limit"),
    ("/v1/threads?before={thread}&before={thread}", "before"),
    ("/v1/threads/{thread}/events?after=0&after=1", "after"),
    ("/v1/threads/{thread}/events?limit=5&limit=5", "limit"),
    ("/v1/threads/{thread}/stream?after=0&after=1", "after"),
    ("/v1/me/usage?since=2026-11-29T00:00:00Z&since=2026-11-30T00:00:00Z", "since"),
]


@pytest.mark.parametrize(("path", "name"), REPEATED)
async def test_a_repeated_single_valued_parameter_is_422_naming_it(
    server: ServerHandle, alice: User, path: str, name: str
) -> None:
    async with http(server, alice) as c:
        thread = (await c.post("/v1/threads", json={})).json()["id"]
        r = await c.get(path.format(thread=thread))
        assert r.status_code == 422, r.text
        error = r.json()["error"]
        assert error["code"] == "invalid" and repr(name) in error["message"], error
        # Given once, the same parameter is taken.
        once = path.format(thread=thread).replace(f"&{name}=", "&_other=")
        if "/stream" not in once:
            assert (await c.get(once)).status_code == 200


async def test_parameters_given_once_or_not_declared_are_taken(
    server: ServerHandle, alice: User
) -> None:
    async with http(server, alice) as c:
        # A parameter the route does not take is ignored, repeated or not.
        r = await c.get("/v1/threads?limit=2&x=1&x=2")
        assert r.status_code == 200, r.text
        r = await c.get("/v1/runs", params=[("status", "requires_action")])
        assert r.status_code == 200 and r.json() == []


async def test_the_refusal_comes_before_the_thread_is_looked_up(server: ServerHandle) -> None:
    """A repeat is refused whoever's thread it names: the answer tells nothing of the thread."""
    alice, bob = await new_user(server), await new_user(server)
    async with http(server, alice) as a, http(server, bob) as b:
        thread = (await a.post("/v1/threads", json={})).json()["id"]
        mine = await a.get(f"/v1/threads/{thread}/events?after=0&after=1")
        his = await b.get(f"/v1/threads/{thread}/events?after=0&after=1")
        assert mine.status_code == his.status_code == 422
        assert mine.content == his.content


async def test_every_http_route_refuses_repeats(server: ServerHandle) -> None:
    """Every route of the app is a ``OnceQueryRoute``: a new router cannot forget it."""
    from tenet.server.query import OnceQueryRoute

    found: list[Any] = []
    stack: list[Any] = list(server.app.routes)
    while stack:
        route = stack.pop()
        included = getattr(route, "original_router", None)
        stack.extend(getattr(included or route, "routes", ()) if included else ())
        if isinstance(route, APIRoute):
            found.append(route)
    assert len(found) > 20
    assert all(isinstance(r, OnceQueryRoute) for r in found), [
        r.path for r in found if not isinstance(r, OnceQueryRoute)
    ]
