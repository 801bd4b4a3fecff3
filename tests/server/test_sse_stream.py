"""``GET /v1/threads/{id}/stream``: stored events, then live, resumable with Last-Event-ID."""

from __future__ import annotations

import asyncio

from server_support import User, http, new_user, sse_events, stored_events, wait_run

from tenet.testing import ServerHandle


async def _thread_with_run(server: ServerHandle, user: User, input: str) -> tuple[str, str]:
    async with http(server, user) as c:
        thread = (await c.post("/v1/threads", json={})).json()["id"]
        run = await c.post(
            f"/v1/threads/{thread}/runs", json={"agent": "benchmark", "input": input}
        )
        return thread, run.json()["id"]


async def test_sse_replays_stored_events_with_seq_ids(server: ServerHandle, alice: User) -> None:
    thread, run_id = await _thread_with_run(server, alice, "events=8")
    await wait_run(server, run_id)
    got = await sse_events(server, alice, thread, count=8)
    assert [int(i) for i, _, _ in got] == list(range(1, 9))
    assert [e for _, e, _ in got] == [d["type"] for _, _, d in got]
    assert [d for _, _, d in got] == await stored_events(server, alice, thread)
    after = await sse_events(server, alice, thread, count=3, params={"after": 5})
    assert [d["seq"] for _, _, d in after] == [6, 7, 8]


async def test_sse_goes_live_and_resumes_with_last_event_id(
    server: ServerHandle, alice: User
) -> None:
    async with http(server, alice) as c:
        thread = (await c.post("/v1/threads", json={})).json()["id"]

    async def start_run() -> str:
        await asyncio.sleep(0.2)  # after the stream opened: these events arrive live
        async with http(server, alice) as c:
            r = await c.post(
                f"/v1/threads/{thread}/runs", json={"agent": "benchmark", "input": "events=300"}
            )
            return r.json()["id"]

    runner = asyncio.create_task(start_run())
    first = await sse_events(server, alice, thread, count=120)
    run_id = await runner
    last_id = first[-1][0]
    # Reconnect as a browser does: Last-Event-ID wins over the URL's after.
    rest = await sse_events(
        server,
        alice,
        thread,
        count=300 - int(last_id),
        params={"after": 0},
        headers={"Last-Event-ID": last_id},
    )
    received = [d for _, _, d in first + rest]
    assert [d["seq"] for d in received] == list(range(1, 301))
    await wait_run(server, run_id)
    assert received == await stored_events(server, alice, thread)


async def test_sse_of_a_foreign_thread_is_404(server: ServerHandle, alice: User, bob: User) -> None:
    thread, run_id = await _thread_with_run(server, alice, "x")
    await wait_run(server, run_id)
    async with http(server, bob) as c:
        r = await c.get(f"/v1/threads/{thread}/stream")
        assert r.status_code == 404
        assert r.json() == {"error": {"code": "not_found", "message": "not found"}}
    async with http(server) as c:
        assert (await c.get(f"/v1/threads/{thread}/stream")).status_code == 401


async def test_revoking_the_token_ends_its_stream(server: ServerHandle, alice: User) -> None:
    async with http(server, alice) as c:
        thread = (await c.post("/v1/threads", json={})).json()["id"]
        spare = User(alice.user_id, (await c.post("/v1/tokens")).json()["token"])
    async with http(server, spare) as c:
        async with c.stream("GET", f"/v1/threads/{thread}/stream") as r:
            assert r.status_code == 200
            lines = r.aiter_lines()
            assert (await anext(lines)).startswith(":")
            async with http(server, spare) as c2:
                assert (await c2.delete("/v1/tokens/current")).status_code == 204

            async def drain() -> None:
                async for _ in lines:
                    pass

            await asyncio.wait_for(drain(), 5)  # the stream ended
        assert (await c.get(f"/v1/threads/{thread}/stream")).status_code == 401


async def test_a_user_holds_at_most_sse_max_streams_open(server_factory) -> None:
    """Streams are counted per user: one more than the limit is 429 before it starts,
    another user is not affected, and a closed stream frees its place."""
    async with server_factory(sse_max_streams=2) as srv:
        alice, bob = await new_user(srv, "alice"), await new_user(srv, "bob")
        thread, _ = await _thread_with_run(srv, alice, "events=5")
        bob_thread, _ = await _thread_with_run(srv, bob, "events=5")
        async with http(srv, alice) as c, http(srv, bob) as b:
            path = f"/v1/threads/{thread}/stream"
            async with c.stream("GET", path) as one, c.stream("GET", path) as two:
                assert one.status_code == two.status_code == 200
                lines = [one.aiter_lines(), two.aiter_lines()]  # kept: a dropped one hangs up
                assert [await anext(it) for it in lines] == [": stream open"] * 2
                third = await c.get(path)
                assert third.status_code == 429
                assert third.json()["error"]["code"] == "rate_limited"
                assert third.headers["retry-after"] == "1"
                async with b.stream("GET", f"/v1/threads/{bob_thread}/stream") as other:
                    assert other.status_code == 200
            async with asyncio.timeout(5):
                while srv.service.sessions.get(alice.user_id).streams:
                    await asyncio.sleep(0.02)
            async with c.stream("GET", path) as again:
                assert again.status_code == 200
