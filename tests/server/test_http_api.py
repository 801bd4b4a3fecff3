"""Every HTTP row of PROTOCOL.md, against a real server."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import anyio.to_thread
import pytest
from server_support import User, http, new_user, wait_run

from tenet.testing import ServerHandle

TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
RUN_KEYS = {
    "id",
    "thread_id",
    "agent",
    "status",
    "input",
    "output",
    "error",
    "created_at",
    "started_at",
    "finished_at",
    "usage",
}


async def test_admin_creates_users_and_is_not_a_user(server: ServerHandle) -> None:
    admin = {"Authorization": f"Bearer {server.admin_token}"}
    async with http(server) as c:
        r = await c.post("/v1/users", json={"name": "carol"}, headers=admin)
        assert r.status_code == 201
        body = r.json()
        assert set(body) == {"user_id", "name", "token"}
        assert body["name"] == "carol" and body["user_id"].startswith("usr_")
        me = await c.get("/v1/me", headers={"Authorization": f"Bearer {body['token']}"})
        assert me.json() == {"user_id": body["user_id"], "name": "carol"}
        # The admin token is not a user; a user token is not the admin.
        assert (await c.get("/v1/me", headers=admin)).status_code == 401
        user_auth = {"Authorization": f"Bearer {body['token']}"}
        r = await c.post("/v1/users", json={"name": "dave"}, headers=user_auth)
        assert r.status_code == 401
        assert r.json()["error"]["code"] == "unauthorized"
        assert (await c.post("/v1/users", json={"name": "x"})).status_code == 401
        dup = await c.post("/v1/users", json={"name": "carol"}, headers=admin)
        assert dup.status_code == 409 and dup.json()["error"]["code"] == "conflict"
        bad = await c.post("/v1/users", json={"name": ""}, headers=admin)
        assert bad.status_code == 422 and bad.json()["error"]["code"] == "invalid"


async def test_tokens_are_created_and_revoked_at_once(server: ServerHandle, alice: User) -> None:
    async with http(server, alice) as c:
        r = await c.post("/v1/tokens")
        assert r.status_code == 201 and set(r.json()) == {"token"}
        second = User(alice.user_id, r.json()["token"])
        async with http(server, second) as c2:
            assert (await c2.get("/v1/me")).json()["user_id"] == alice.user_id
            r = await c2.delete("/v1/tokens/current")
            assert r.status_code == 204 and r.content == b""
            r = await c2.get("/v1/me")
            assert r.status_code == 401
            assert r.json() == {"error": {"code": "unauthorized", "message": "invalid token"}}
        # The other token still works.
        assert (await c.get("/v1/me")).status_code == 200


async def test_missing_and_malformed_credentials_are_401(server: ServerHandle) -> None:
    async with http(server) as c:
        for headers in ({}, {"Authorization": "Basic abc"}, {"Authorization": "Bearer nope"}):
            r = await c.get("/v1/threads", headers=headers)
            assert r.status_code == 401
            assert r.json()["error"]["code"] == "unauthorized"


async def test_agents_list_their_tools(server: ServerHandle, alice: User) -> None:
    async with http(server, alice) as c:
        r = await c.get("/v1/agents")
    assert r.status_code == 200
    agents = {a["name"]: a for a in r.json()}
    assert {"assistant", "benchmark"} <= set(agents)
    for agent in agents.values():
        assert set(agent) == {"name", "description", "tools"}
        for t in agent["tools"]:
            assert set(t) == {"name", "description", "parameters"}


async def test_threads_crud_and_paging(server: ServerHandle, alice: User, bob: User) -> None:
    async with http(server, alice) as c, http(server, bob) as cb:
        r = await c.post("/v1/threads", json={"metadata": {"title": "first"}})
        assert r.status_code == 201
        first = r.json()
        assert set(first) == {"id", "created_at", "metadata"}
        assert first["metadata"] == {"title": "first"} and TIME.match(first["created_at"])
        assert (await c.post("/v1/threads")).status_code == 201  # body is optional
        ids = [first["id"]]
        for _ in range(4):
            ids.append((await c.post("/v1/threads", json={})).json()["id"])
        await cb.post("/v1/threads", json={})  # bob's thread never shows up for alice
        all_ = (await c.get("/v1/threads")).json()
        assert len(all_) == 6
        assert first["id"] == all_[-1]["id"]  # newest first
        page1 = (await c.get("/v1/threads", params={"limit": 2})).json()
        page2 = (await c.get("/v1/threads", params={"limit": 2, "before": page1[-1]["id"]})).json()
        assert [t["id"] for t in page1 + page2] == [t["id"] for t in all_[:4]]
        assert (await c.get(f"/v1/threads/{first['id']}")).json() == first
        assert (await c.get("/v1/threads", params={"limit": 0})).status_code == 422
        assert (await c.get("/v1/threads", params={"limit": "x"})).status_code == 422
        r = await c.delete(f"/v1/threads/{first['id']}")
        assert r.status_code == 204
        assert (await c.get(f"/v1/threads/{first['id']}")).status_code == 404
        assert (await c.delete(f"/v1/threads/{first['id']}")).status_code == 404


async def test_foreign_and_missing_ids_get_byte_identical_404s(
    server: ServerHandle, alice: User, bob: User
) -> None:
    async with http(server, alice) as c, http(server, bob) as cb:
        thread = (await c.post("/v1/threads", json={})).json()["id"]
        run = await c.post(f"/v1/threads/{thread}/runs", json={"agent": "benchmark", "input": "x"})
        run_id = run.json()["id"]
        await wait_run(server, run_id)
        missing_thread = "thr_" + "A" * 22
        missing_run = "run_" + "A" * 22
        pairs = [
            ("GET", f"/v1/threads/{thread}", f"/v1/threads/{missing_thread}", None),
            ("DELETE", f"/v1/threads/{thread}", f"/v1/threads/{missing_thread}", None),
            (
                "GET",
                f"/v1/threads/{thread}/messages",
                f"/v1/threads/{missing_thread}/messages",
                None,
            ),
            ("GET", f"/v1/threads/{thread}/events", f"/v1/threads/{missing_thread}/events", None),
            ("GET", f"/v1/threads/{thread}/stream", f"/v1/threads/{missing_thread}/stream", None),
            (
                "POST",
                f"/v1/threads/{thread}/runs",
                f"/v1/threads/{missing_thread}/runs",
                {"agent": "benchmark", "input": "x"},
            ),
            ("GET", f"/v1/runs/{run_id}", f"/v1/runs/{missing_run}", None),
            ("POST", f"/v1/runs/{run_id}/cancel", f"/v1/runs/{missing_run}/cancel", None),
            ("GET", "/v1/threads", "/v1/threads", None),
        ]
        for method, foreign, missing, body in pairs:
            if foreign == "/v1/threads":  # paging from a foreign thread id
                f = await cb.request(method, foreign, params={"before": thread})
                m = await cb.request(method, missing, params={"before": missing_thread})
            else:
                f = await cb.request(method, foreign, json=body)
                m = await cb.request(method, missing, json=body)
            assert f.status_code == m.status_code == 404, (method, foreign)
            assert f.content == m.content, (method, foreign)
            assert f.headers["content-type"] == m.headers["content-type"]
            assert f.json() == {"error": {"code": "not_found", "message": "not found"}}
        garbage = await cb.get("/v1/threads/not-an-id")
        assert garbage.content == m.content
        # And alice's resources are untouched.
        assert (await c.get(f"/v1/threads/{thread}")).status_code == 200


async def test_runs_are_accepted_read_and_listed(server: ServerHandle, alice: User) -> None:
    async with http(server, alice) as c:
        thread = (await c.post("/v1/threads", json={})).json()["id"]
        r = await c.post(
            f"/v1/threads/{thread}/runs", json={"agent": "benchmark", "input": "events=7"}
        )
        assert r.status_code == 202
        run = r.json()
        assert set(run) == RUN_KEYS
        assert run["status"] == "queued" and run["thread_id"] == thread
        assert run["output"] is None and run["started_at"] is None
        await wait_run(server, run["id"])
        done = (await c.get(f"/v1/runs/{run['id']}")).json()
        assert done["status"] == "completed" and done["output"] == "done 2"
        for key in ("created_at", "started_at", "finished_at"):
            assert TIME.match(done[key]), key
        messages = (await c.get(f"/v1/threads/{thread}/messages")).json()
        assert [(m["role"], m["content"], m["run_id"]) for m in messages] == [
            ("user", "events=7", run["id"]),
            ("assistant", "done 2", run["id"]),
        ]
        for m in messages:
            assert set(m) == {"id", "role", "content", "run_id", "created_at"}
        events = (await c.get(f"/v1/threads/{thread}/events")).json()
        assert [e["seq"] for e in events] == list(range(1, 8))
        assert events[0]["type"] == "agent_started" and events[-1]["type"] == "agent_completed"
        later = (
            await c.get(f"/v1/threads/{thread}/events", params={"after": 3, "limit": 2})
        ).json()
        assert [e["seq"] for e in later] == [4, 5]
        assert (
            await c.get(f"/v1/threads/{thread}/events", params={"after": -1})
        ).status_code == 422


async def test_bad_run_requests(server: ServerHandle, alice: User) -> None:
    async with http(server, alice) as c:
        thread = (await c.post("/v1/threads", json={})).json()["id"]
        url = f"/v1/threads/{thread}/runs"
        for body in (
            {"agent": "no-such-agent", "input": "x"},
            {"agent": "benchmark", "input": 5},
            {"agent": "benchmark"},
            {"input": "x"},
        ):
            r = await c.post(url, json=body)
            assert r.status_code == 422, body
            assert r.json()["error"]["code"] == "invalid"
        r = await c.post(url, content=b"{not json", headers={"content-type": "application/json"})
        assert r.status_code == 422 and r.json()["error"]["code"] == "invalid"
        long = "x" * (server.service.settings.max_input_chars + 1)
        r = await c.post(url, json={"agent": "benchmark", "input": long})
        assert r.status_code == 413 and r.json()["error"]["code"] == "too_large"


async def test_full_queue_is_429_with_retry_after(server_factory, tmp_path) -> None:
    async with server_factory(user_max_queued=2, user_max_runs=1) as srv:
        user = await new_user(srv, "busy")
        async with http(srv, user) as c:
            thread = (await c.post("/v1/threads", json={})).json()["id"]
            url = f"/v1/threads/{thread}/runs"
            body = {"agent": "benchmark", "input": "latency_ms=300"}
            statuses = [(await c.post(url, json=body)) for _ in range(4)]
            assert [r.status_code for r in statuses[:3]] == [202, 202, 202]
            limited = statuses[3]
            assert limited.status_code == 429
            assert limited.json()["error"]["code"] == "rate_limited"
            assert int(limited.headers["retry-after"]) >= 1
            for r in statuses[:3]:
                await c.post(f"/v1/runs/{r.json()['id']}/cancel")


async def test_cancel_running_and_finished_runs(server: ServerHandle, alice: User) -> None:
    async with http(server, alice) as c:
        thread = (await c.post("/v1/threads", json={})).json()["id"]
        url = f"/v1/threads/{thread}/runs"
        slow = (await c.post(url, json={"agent": "benchmark", "input": "latency_ms=5000"})).json()
        queued = (await c.post(url, json={"agent": "benchmark", "input": "x"})).json()
        for _ in range(100):
            if (await c.get(f"/v1/runs/{slow['id']}")).json()["status"] == "running":
                break
            await asyncio.sleep(0.02)
        r = await c.post(f"/v1/runs/{queued['id']}/cancel")
        assert r.status_code == 202 and r.json()["status"] == "cancelled"
        r = await c.post(f"/v1/runs/{slow['id']}/cancel")
        assert r.status_code == 202
        assert r.json()["status"] in ("cancelling", "cancelled")
        await wait_run(server, slow["id"])
        assert (await c.get(f"/v1/runs/{slow['id']}")).json()["status"] == "cancelled"
        again = await c.post(f"/v1/runs/{slow['id']}/cancel")
        assert again.status_code == 202 and again.json()["status"] == "cancelled"
        events = (await c.get(f"/v1/threads/{thread}/events")).json()
        terminal = [e for e in events if e["type"] == "run_cancelled"]
        assert {e["run_id"] for e in terminal} == {slow["id"], queued["id"]}


async def test_deleting_a_thread_cancels_its_runs(server: ServerHandle, alice: User) -> None:
    async with http(server, alice) as c:
        thread = (await c.post("/v1/threads", json={})).json()["id"]
        run = (
            await c.post(
                f"/v1/threads/{thread}/runs",
                json={"agent": "benchmark", "input": "latency_ms=5000"},
            )
        ).json()
        await asyncio.sleep(0.1)
        assert (await c.delete(f"/v1/threads/{thread}")).status_code == 204
        assert (await c.get(f"/v1/runs/{run['id']}")).status_code == 404
        assert (await c.get(f"/v1/threads/{thread}/events")).status_code == 404
        assert server.service.engine.queued_or_running(alice.user_id, thread) == []


async def test_every_error_has_the_protocol_body(server: ServerHandle, alice: User) -> None:
    async with http(server, alice) as c:
        r = await c.get("/no/such/route")
        assert r.status_code == 404
        assert r.json() == {"error": {"code": "not_found", "message": "not found"}}
        r = await c.put("/v1/me")
        assert r.status_code == 405 and set(r.json()["error"]) == {"code", "message"}
        assert "GET" in r.headers["allow"]
        r = await c.post("/v1/threads", json={"metadata": "not an object"})
        assert r.status_code == 422 and r.json()["error"]["code"] == "invalid"
        big = "x" * (server.service.settings.max_body_bytes + 1)
        r = await c.post("/v1/threads", content=big, headers={"content-type": "application/json"})
        assert r.status_code == 413 and r.json()["error"]["code"] == "too_large"

        async def chunks():  # no Content-Length: the limit still holds
            for _ in range(10):
                yield b"x" * (server.service.settings.max_body_bytes // 8)

        r = await c.post("/v1/threads", content=chunks())
        assert r.status_code == 413 and r.json()["error"]["code"] == "too_large"
        r = await c.post("/v1/threads", json={"metadata": {"k": "v" * 20_000}})
        assert r.status_code == 413
        # A number JSON carries but the store's encoder can't (beyond 64 bits), in a
        # thread's or a run's metadata: 422, never a 500.
        wide = '{"metadata": {"n": 18446744073709551616}}'
        r = await c.post("/v1/threads", content=wide, headers={"content-type": "application/json"})
        assert r.status_code == 422 and r.json()["error"]["code"] == "invalid"
        thread = (await c.post("/v1/threads", json={})).json()
        run = '{"agent": "assistant", "input": "hi", "metadata": {"n": -18446744073709551616}}'
        r = await c.post(
            f"/v1/threads/{thread['id']}/runs",
            content=run,
            headers={"content-type": "application/json"},
        )
        assert r.status_code == 422 and r.json()["error"]["code"] == "invalid"


async def test_a_bug_is_a_bare_500(server: ServerHandle, alice: User) -> None:
    secret = "secret-detail-of-usr_other"

    async def broken(*_a, **_k):
        raise RuntimeError(secret)

    server.service.store.list_threads = broken  # type: ignore[method-assign]
    async with http(server, alice) as c:
        r = await c.get("/v1/threads")
    assert r.status_code == 500
    assert r.json() == {"error": {"code": "internal", "message": "internal error"}}
    assert secret not in r.text and "Traceback" not in r.text


async def test_healthz(server: ServerHandle) -> None:
    async with http(server) as c:
        r = await c.get("/healthz")
        assert r.status_code == 200 and r.json() == {"status": "ok"}

        async def unreachable() -> None:
            raise OSError("connection refused")

        server.service.store.ping = unreachable  # type: ignore[method-assign]
        r = await c.get("/healthz")
        assert r.status_code == 503
        assert r.json()["error"]["code"] == "unavailable"


async def test_metrics_need_the_admin_token(server: ServerHandle, alice: User) -> None:
    async with http(server, alice) as c:
        assert (await c.get("/metrics")).status_code == 401
        thread = (await c.post("/v1/threads", json={})).json()["id"]
        run = await c.post(f"/v1/threads/{thread}/runs", json={"agent": "benchmark", "input": "x"})
        await wait_run(server, run.json()["id"])
        r = await c.get("/metrics", headers={"Authorization": f"Bearer {server.admin_token}"})
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain")
    text = r.text
    for name in (
        "tenet_connections_open",
        'tenet_runs{status="completed"} 1.0',
        "tenet_events_published_total 25.0",
        "tenet_queue_overflows_total 0.0",
        "tenet_user_sessions",
        "tenet_isolation_violations_total 0.0",
    ):
        assert name in text, name


async def test_openapi_docs_are_served(server: ServerHandle) -> None:
    async with http(server) as c:
        assert (await c.get("/docs")).status_code == 200
        assert "/v1/threads" in (await c.get("/openapi.json")).json()["paths"]


async def test_api_requests_never_hop_to_a_worker_thread(
    server: ServerHandle, alice: User, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every handler and dependency of the API is async: a sync one would run on AnyIO's
    thread pool, a thread hop per request and up to 40 threads, each with its own malloc
    arena (memory that stays after a burst of users has gone)."""
    hops: list[str] = []
    run_sync = anyio.to_thread.run_sync

    async def counting(func: Any, *args: Any, **kwargs: Any) -> Any:
        hops.append(getattr(func, "__name__", repr(func)))
        return await run_sync(func, *args, **kwargs)

    monkeypatch.setattr(anyio.to_thread, "run_sync", counting)
    async with http(server, alice) as client:
        thread = (await client.post("/v1/threads", json={})).json()
        run = (
            await client.post(
                f"/v1/threads/{thread['id']}/runs", json={"agent": "benchmark", "input": "x"}
            )
        ).json()
        await wait_run(server, run["id"])
        for path in (
            "/v1/me",
            "/v1/agents",
            "/v1/threads",
            f"/v1/threads/{thread['id']}",
            f"/v1/threads/{thread['id']}/messages",
            f"/v1/threads/{thread['id']}/events",
            f"/v1/runs/{run['id']}",
            "/healthz",
        ):
            assert (await client.get(path)).status_code == 200, path
    assert hops == []


async def test_an_idle_connection_outlives_the_clients_own_keep_alive(
    server: ServerHandle,
) -> None:
    """A connection idle for longer than httpx keeps one (5 s) still answers its next request.

    A server that closes an idle connection first races the client's next request on it
    (the request meets a closed socket: a reset, not an answer); so the server keeps it
    open longer than clients and proxies keep theirs (``TENET_HTTP_KEEP_ALIVE_S``).
    """
    host, port = server.url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    request = f"GET /healthz HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()
    try:
        for _ in range(2):
            writer.write(request)
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            assert head.startswith(b"HTTP/1.1 200"), head
            length = re.search(rb"content-length: (\d+)", head, re.IGNORECASE)
            assert length is not None, head
            await reader.readexactly(int(length.group(1)))
            await asyncio.sleep(6)  # idle past the client's own 5 s
    finally:
        writer.close()
