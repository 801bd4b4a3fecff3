"""Every WebSocket row of PROTOCOL.md: auth, frames, answers, errors and close codes."""

from __future__ import annotations

import asyncio
import json

import pytest
from server_support import (
    User,
    close_code,
    http,
    new_user,
    ready,
    recv,
    send,
    stored_events,
    until_terminal,
    wait_run,
    ws_connect,
)
from websockets.asyncio.client import ClientConnection

from tenet.testing import ServerHandle


async def test_header_auth_gets_ready(server: ServerHandle, alice: User) -> None:
    async with ws_connect(server, alice) as ws:
        frame = await ready(ws)
        assert frame["user_id"] == alice.user_id
        assert frame["connection_id"].startswith("con_")
        assert set(frame) == {"type", "user_id", "connection_id"}


async def test_first_frame_auth_gets_ready(server: ServerHandle, alice: User) -> None:
    async with ws_connect(server) as ws:
        await send(ws, {"type": "auth", "token": alice.token, "ref": "hello"})
        frame = await ready(ws)
        assert frame["user_id"] == alice.user_id and frame["ref"] == "hello"


@pytest.mark.parametrize(
    "first",
    [
        {"type": "auth", "token": "tnt_wrong"},
        {"type": "auth"},
        {"type": "ping"},
        "not json",
    ],
)
async def test_bad_first_frame_closes_4401_after_accept(
    server: ServerHandle, first: object
) -> None:
    async with ws_connect(server) as ws:  # the handshake itself succeeds
        await ws.send(first if isinstance(first, str) else json.dumps(first))
        assert await close_code(ws) == 4401


async def test_bad_header_token_closes_4401(server: ServerHandle) -> None:
    async with ws_connect(server, User("usr_x", "tnt_not-a-token")) as ws:
        assert await close_code(ws) == 4401


async def test_admin_token_is_not_a_socket_user(server: ServerHandle) -> None:
    async with ws_connect(server, User("admin", server.admin_token)) as ws:
        assert await close_code(ws) == 4401


async def test_silent_client_closed_4401_after_auth_timeout(server_factory) -> None:
    async with server_factory(ws_auth_timeout_s=0.3) as srv, ws_connect(srv) as ws:
        loop = asyncio.get_running_loop()
        start = loop.time()
        assert await close_code(ws) == 4401
        assert 0.25 <= loop.time() - start < 3


async def test_ping_pong_and_ref_echo(server: ServerHandle, alice: User) -> None:
    async with ws_connect(server, alice) as ws:
        await ready(ws)
        await send(ws, {"type": "ping"})
        assert await recv(ws) == {"type": "pong"}
        await send(ws, {"type": "ping", "ref": "r-1"})
        assert await recv(ws) == {"type": "pong", "ref": "r-1"}


async def test_run_is_accepted_before_its_events_and_streams_all(
    server: ServerHandle, alice: User
) -> None:
    async with ws_connect(server, alice) as ws:
        await ready(ws)
        await send(ws, {"type": "run", "agent": "benchmark", "input": "events=30", "ref": "go"})
        accepted = await recv(ws)
        assert accepted["type"] == "run_accepted" and accepted["ref"] == "go"
        assert set(accepted) == {"type", "run_id", "thread_id", "ref"}
        run_id, thread_id = accepted["run_id"], accepted["thread_id"]
        frames = await until_terminal(ws, run_id)
        assert [f["seq"] for f in frames] == list(range(1, 31))
        assert frames[0]["type"] == "agent_started" and frames[-1]["type"] == "agent_completed"
        assert all(f["user_id"] == alice.user_id and f["thread_id"] == thread_id for f in frames)
        assert frames == await stored_events(server, alice, thread_id)


async def test_run_on_existing_thread_starts_with_the_runs_first_event(
    server: ServerHandle, alice: User
) -> None:
    async with http(server, alice) as c:
        thread = (await c.post("/v1/threads", json={})).json()["id"]
        first = await c.post(
            f"/v1/threads/{thread}/runs", json={"agent": "benchmark", "input": "x"}
        )
        await wait_run(server, first.json()["id"])
    async with ws_connect(server, alice) as ws:
        await ready(ws)
        await send(
            ws, {"type": "run", "agent": "benchmark", "input": "events=5", "thread_id": thread}
        )
        accepted = await recv(ws)
        assert accepted["thread_id"] == thread
        frames = await until_terminal(ws, accepted["run_id"])
        # Earlier events of the thread are not resent: the first frame is this run's first event.
        assert [f["seq"] for f in frames] == [26, 27, 28, 29, 30]
        assert {f["run_id"] for f in frames} == {accepted["run_id"]}


async def test_a_run_that_waits_its_turn_loses_no_event_stored_meanwhile(server_factory) -> None:
    # The user's one run slot is taken, so a run on a new thread (B) waits; a second run on
    # that thread (C) waits behind it and is cancelled first: its run_cancelled is the
    # thread's first event, stored before B's first. The socket was told of both runs and
    # follows the thread from B's acceptance, so it must get every event of it, in order.
    async with server_factory(user_max_runs=1) as srv:
        user = await new_user(srv, "queued")
        async with ws_connect(srv, user) as ws:
            await ready(ws)
            await send(ws, {"type": "run", "agent": "benchmark", "input": "latency_ms=5000"})
            blocker = await recv(ws)
            assert (await recv(ws))["type"] == "agent_started"  # it holds the user's slot
            await send(ws, {"type": "run", "agent": "benchmark", "input": "events=5"})
            b = await recv(ws)
            assert b["type"] == "run_accepted"
            thread = b["thread_id"]
            await send(ws, {"type": "run", "agent": "benchmark", "input": "x", "thread_id": thread})
            c = await recv(ws)
            assert c["type"] == "run_accepted" and c["thread_id"] == thread
            await send(ws, {"type": "cancel", "run_id": c["run_id"], "ref": "c"})
            assert await recv(ws) == {"type": "cancel_accepted", "run_id": c["run_id"], "ref": "c"}
            await send(ws, {"type": "cancel", "run_id": blocker["run_id"]})  # B's turn comes
            frames = await until_terminal(ws, b["run_id"])
        got = [f for f in frames if f.get("thread_id") == thread and "seq" in f]
        stored = await stored_events(srv, user, thread)
        assert stored[0]["run_id"] == c["run_id"] and stored[0]["type"] == "run_cancelled"
        assert got == stored  # C's end first, then all of B: nothing skipped


async def test_a_run_behind_a_running_one_gets_that_runs_end_first(
    server: ServerHandle, alice: User
) -> None:
    # The socket does not follow the thread; a run still running there ends after this
    # run's acceptance and before its first event: that end is sent too, then this run.
    async with http(server, alice) as c:
        thread = (await c.post("/v1/threads", json={})).json()["id"]
        earlier = await c.post(
            f"/v1/threads/{thread}/runs", json={"agent": "benchmark", "input": "latency_ms=5000"}
        )
        earlier_id = earlier.json()["id"]
        async with ws_connect(server, alice) as watcher:  # until the earlier run has started
            await ready(watcher)
            await send(watcher, {"type": "subscribe", "thread_id": thread})
            while (await recv(watcher)).get("type") != "agent_started":
                pass
        async with ws_connect(server, alice) as ws:
            await ready(ws)
            await send(
                ws, {"type": "run", "agent": "benchmark", "input": "events=5", "thread_id": thread}
            )
            accepted = await recv(ws)
            assert accepted["type"] == "run_accepted"
            assert (await c.post(f"/v1/runs/{earlier_id}/cancel")).status_code == 202
            frames = await until_terminal(ws, accepted["run_id"])
    got = [f for f in frames if "seq" in f]
    stored = await stored_events(server, alice, thread)
    assert got[0]["run_id"] == earlier_id and got[0]["type"] == "run_cancelled"
    assert got == stored[-len(got) :] and len(got) == 6  # its end, then this run's five


async def test_run_frame_errors(server: ServerHandle, alice: User, bob: User) -> None:
    async with http(server, bob) as c:
        bobs_thread = (await c.post("/v1/threads", json={})).json()["id"]
    async with ws_connect(server, alice) as ws:
        await ready(ws)
        cases = [
            (
                {"type": "run", "agent": "benchmark", "input": "x", "thread_id": bobs_thread},
                "not_found",
            ),
            (
                {"type": "run", "agent": "benchmark", "input": "x", "thread_id": "thr_" + "A" * 22},
                "not_found",
            ),
            ({"type": "run", "agent": "nope", "input": "x"}, "invalid"),
            ({"type": "run", "input": "x"}, "invalid"),
            ({"type": "run", "agent": "benchmark"}, "invalid"),
            ({"type": "run", "agent": "benchmark", "input": 3}, "invalid"),
            (
                {
                    "type": "run",
                    "agent": "benchmark",
                    "input": "x" * (server.service.settings.max_input_chars + 1),
                },
                "too_large",
            ),
        ]
        for i, (frame, code) in enumerate(cases):
            await send(ws, {**frame, "ref": f"e{i}"})
            answer = await recv(ws)
            assert answer["type"] == "error", frame
            assert answer["code"] == code, frame
            assert answer["ref"] == f"e{i}" and answer["message"]
        # foreign and missing are indistinguishable
        await send(ws, cases[0][0])
        foreign = await recv(ws)
        await send(ws, cases[1][0])
        assert await recv(ws) == foreign
        # still open
        await send(ws, {"type": "ping"})
        assert await recv(ws) == {"type": "pong"}


async def test_bad_frames_get_error_frames_and_the_socket_stays_open(
    server: ServerHandle, alice: User
) -> None:
    async with ws_connect(server, alice) as ws:
        await ready(ws)
        bad: list[tuple[str, str]] = [
            ("not json", "invalid"),
            ("[1, 2]", "invalid"),
            (json.dumps({"no": "type"}), "invalid"),
            (json.dumps({"type": "dance", "ref": "d"}), "invalid"),
            (json.dumps({"type": "subscribe", "ref": "s"}), "invalid"),
            (json.dumps({"type": "cancel"}), "invalid"),
            (json.dumps({"type": "unsubscribe"}), "invalid"),
            (json.dumps({"type": "subscribe", "thread_id": "thr_x", "after": -1}), "invalid"),
        ]
        for text, code in bad:
            await ws.send(text)
            answer = await recv(ws)
            assert answer["type"] == "error" and answer["code"] == code, text[:60]
        await ws.send(json.dumps({"type": "dance", "ref": "d"}))
        assert (await recv(ws))["ref"] == "d"
        await send(ws, {"type": "ping"})
        assert await recv(ws) == {"type": "pong"}


async def test_foreign_thread_and_run_are_not_found(
    server: ServerHandle, alice: User, bob: User
) -> None:
    async with http(server, bob) as c:
        thread = (await c.post("/v1/threads", json={})).json()["id"]
        run = (
            await c.post(
                f"/v1/threads/{thread}/runs",
                json={"agent": "benchmark", "input": "latency_ms=3000"},
            )
        ).json()
    async with ws_connect(server, alice) as ws:
        await ready(ws)
        for frame in (
            {"type": "subscribe", "thread_id": thread},
            {"type": "subscribe", "thread_id": thread, "after": 0},
            {"type": "unsubscribe", "thread_id": thread},
            {"type": "cancel", "run_id": run["id"]},
        ):
            await send(ws, {**frame, "ref": "f"})
            answer = await recv(ws)
            assert answer == {
                "type": "error",
                "code": "not_found",
                "message": "not found",
                "ref": "f",
            }
        await send(ws, {"type": "cancel", "run_id": "run_" + "B" * 22, "ref": "f"})
        assert await recv(ws) == answer
    # bob's run was not cancelled
    async with http(server, bob) as c:
        assert (await c.get(f"/v1/runs/{run['id']}")).json()["status"] in ("queued", "running")
        await c.post(f"/v1/runs/{run['id']}/cancel")


async def test_subscribe_replays_then_goes_live_without_gap_or_duplicate(
    server: ServerHandle, alice: User
) -> None:
    async with http(server, alice) as c:
        thread = (await c.post("/v1/threads", json={})).json()["id"]
        first = await c.post(
            f"/v1/threads/{thread}/runs", json={"agent": "benchmark", "input": "events=10"}
        )
        await wait_run(server, first.json()["id"])
    async with ws_connect(server, alice) as ws:
        await ready(ws)
        await send(ws, {"type": "subscribe", "thread_id": thread, "after": 4, "ref": "s"})
        assert await recv(ws) == {
            "type": "subscribed",
            "thread_id": thread,
            "last_seq": 10,
            "ref": "s",
        }
        replayed = [await recv(ws) for _ in range(6)]
        assert [f["seq"] for f in replayed] == [5, 6, 7, 8, 9, 10]
        # Now live, on the same thread, started over HTTP.
        async with http(server, alice) as c:
            second = (
                await c.post(
                    f"/v1/threads/{thread}/runs", json={"agent": "benchmark", "input": "events=40"}
                )
            ).json()
        live = await until_terminal(ws, second["id"])
        assert [f["seq"] for f in live] == list(range(11, 51))
        stored = await stored_events(server, alice, thread)
        assert replayed + live == stored[4:]


async def test_subscribe_while_a_run_streams_has_no_gap_or_duplicate(
    server_factory,
) -> None:
    async with server_factory(bench_latency_ms=0) as srv:
        user = await new_user(srv, "racer")
        async with http(srv, user) as c:
            thread = (await c.post("/v1/threads", json={})).json()["id"]
            run = (
                await c.post(
                    f"/v1/threads/{thread}/runs", json={"agent": "benchmark", "input": "events=600"}
                )
            ).json()
            # Subscribe while the run is writing events.
            while not (
                await c.get(f"/v1/threads/{thread}/events", params={"limit": 1, "after": 50})
            ).json():
                await asyncio.sleep(0.005)
        async with ws_connect(srv, user) as ws:
            await ready(ws)
            await send(ws, {"type": "subscribe", "thread_id": thread, "after": 0})
            assert (await recv(ws))["type"] == "subscribed"
            frames = await until_terminal(ws, run["id"])
        assert [f["seq"] for f in frames] == list(range(1, 601))


async def test_subscribe_without_after_replays_everything(
    server: ServerHandle, alice: User
) -> None:
    async with http(server, alice) as c:
        thread = (await c.post("/v1/threads", json={})).json()["id"]
        run = await c.post(
            f"/v1/threads/{thread}/runs", json={"agent": "benchmark", "input": "events=5"}
        )
        await wait_run(server, run.json()["id"])
    async with ws_connect(server, alice) as ws:
        await ready(ws)
        await send(ws, {"type": "subscribe", "thread_id": thread})
        assert (await recv(ws))["last_seq"] == 5
        assert [(await recv(ws))["seq"] for _ in range(5)] == [1, 2, 3, 4, 5]


async def test_unsubscribe_stops_the_thread(server: ServerHandle, alice: User) -> None:
    async with http(server, alice) as c:
        thread = (await c.post("/v1/threads", json={})).json()["id"]
    async with ws_connect(server, alice) as ws:
        await ready(ws)
        await send(ws, {"type": "subscribe", "thread_id": thread})
        await recv(ws)
        await send(ws, {"type": "unsubscribe", "thread_id": thread, "ref": "u"})
        assert await recv(ws) == {"type": "unsubscribed", "thread_id": thread, "ref": "u"}
        async with http(server, alice) as c:
            run = await c.post(
                f"/v1/threads/{thread}/runs", json={"agent": "benchmark", "input": "x"}
            )
            await wait_run(server, run.json()["id"])
        await send(ws, {"type": "ping"})
        assert await recv(ws) == {"type": "pong"}  # no event came in between


async def test_cancel_frame_is_accepted_then_the_run_ends_cancelled(
    server: ServerHandle, alice: User
) -> None:
    async with ws_connect(server, alice) as ws:
        await ready(ws)
        await send(ws, {"type": "run", "agent": "benchmark", "input": "latency_ms=5000"})
        accepted = await recv(ws)
        run_id = accepted["run_id"]
        started = await recv(ws)
        assert started["type"] == "agent_started"
        await send(ws, {"type": "cancel", "run_id": run_id, "ref": "c"})
        frames = await until_terminal(ws, run_id)
        assert frames[0] == {"type": "cancel_accepted", "run_id": run_id, "ref": "c"}
        assert frames[-1]["type"] == "run_cancelled" and frames[-1]["status"] == "cancelled"


async def test_cancel_of_a_queued_run_answers_before_run_cancelled(
    server: ServerHandle, alice: User
) -> None:
    async with ws_connect(server, alice) as ws:
        await ready(ws)
        await send(ws, {"type": "run", "agent": "benchmark", "input": "latency_ms=5000"})
        first = await recv(ws)
        await send(
            ws, {"type": "run", "agent": "benchmark", "input": "x", "thread_id": first["thread_id"]}
        )
        frames = []
        while True:
            frame = await recv(ws)
            if frame["type"] == "run_accepted":
                second = frame
                break
            frames.append(frame)
        await send(ws, {"type": "cancel", "run_id": second["run_id"]})
        got = await until_terminal(ws, second["run_id"])
        kinds = [f["type"] for f in got if f.get("run_id") == second["run_id"]]
        assert kinds == ["cancel_accepted", "run_cancelled"]
        await send(ws, {"type": "cancel", "run_id": first["run_id"]})
        await until_terminal(ws, first["run_id"])


async def test_connection_limit_closes_4429(server_factory) -> None:
    async with server_factory(ws_max_connections=2) as srv:
        user = await new_user(srv, "many")
        other = await new_user(srv, "other")
        async with ws_connect(srv, user) as a, ws_connect(srv, user) as b:
            await ready(a)
            await ready(b)
            async with ws_connect(srv, user) as c:
                assert await close_code(c) == 4429
            async with ws_connect(srv, other) as d:  # another user is not limited by it
                await ready(d)
        async with ws_connect(srv, user) as e:  # room again once they closed
            await ready(e)


async def test_revoking_a_token_closes_its_sockets_4401(server: ServerHandle, alice: User) -> None:
    async with http(server, alice) as c:
        spare = User(alice.user_id, (await c.post("/v1/tokens")).json()["token"])
    async with ws_connect(server, alice) as doomed, ws_connect(server, spare) as kept:
        await ready(doomed)
        await ready(kept)
        async with http(server, alice) as c:
            assert (await c.delete("/v1/tokens/current")).status_code == 204
            assert await close_code(doomed, timeout=2) == 4401
            assert (await c.get("/v1/me")).status_code == 401
        await send(kept, {"type": "ping"})
        assert await recv(kept) == {"type": "pong"}
    async with ws_connect(server, alice) as again:
        assert await close_code(again) == 4401


async def test_a_revocation_signalled_by_another_process_closes_the_socket(
    server: ServerHandle, alice: User
) -> None:
    from tenet.store.db import hash_token

    async with ws_connect(server, alice) as ws:
        await ready(ws)
        server.service.bus.signal("token_revoked", hash_token(alice.token))
        assert await close_code(ws, timeout=2) == 4401


async def test_shutdown_closes_sockets_1001(server_factory) -> None:
    async with server_factory() as srv:
        user = await new_user(srv, "leaver")
        ws: ClientConnection = await ws_connect(srv, user)
        await ready(ws)
    try:
        assert await close_code(ws) == 1001
    finally:
        await ws.close()


async def test_connections_are_counted_in_sessions_and_metrics(
    server: ServerHandle, alice: User
) -> None:
    async with ws_connect(server, alice) as ws:
        await ready(ws)
        session = server.service.sessions.peek(alice.user_id)
        assert session is not None and len(session.connections) == 1
        async with http(server) as c:
            r = await c.get("/metrics", headers={"Authorization": f"Bearer {server.admin_token}"})
        assert "tenet_connections_open 1.0" in r.text
    for _ in range(100):
        if not session.connections:
            break
        await asyncio.sleep(0.01)
    assert not session.connections
