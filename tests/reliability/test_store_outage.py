"""The database goes away under load and comes back: the server says 503 and recovers alone.

The server reaches Postgres through a TCP proxy the test controls; cutting it
resets every pooled connection and refuses new ones, like a database that
stopped (the machine's shared Postgres itself is never touched).
"""

from __future__ import annotations

import asyncio

import httpx
from reliability_support import TcpProxy
from server_support import new_user, ready, recv, send, ws_connect
from sqlalchemy.engine import make_url
from websockets.exceptions import ConnectionClosed

from tenet import Settings
from tenet.testing import running_server


async def test_store_outage_answers_503_and_recovers_without_restart(postgres_url: str) -> None:
    url = make_url(postgres_url)
    proxy = await TcpProxy(url.host or "127.0.0.1", url.port or 5432).start()
    settings = Settings(
        database_url=url.set(host="127.0.0.1", port=proxy.port).render_as_string(False)
    )
    statuses: list[int] = []
    try:
        async with running_server(settings) as server:
            alice = await new_user(server)
            async with (
                httpx.AsyncClient(base_url=server.url, headers=alice.headers, timeout=20) as http,
                ws_connect(server, alice) as ws,
            ):
                await ready(ws)
                await send(ws, {"type": "run", "agent": "benchmark", "input": "latency_ms=800"})
                accepted = await recv(ws)
                run_id, thread_id = accepted["run_id"], accepted["thread_id"]
                assert (await recv(ws))["type"] == "agent_started"

                await proxy.cut()
                # Everything that needs the store says 503 unavailable, never 500.
                health = await http.get("/healthz")
                assert health.status_code == 503
                for method, path, body in [
                    ("GET", "/v1/me", None),
                    ("GET", f"/v1/threads/{thread_id}/events", None),
                    ("POST", f"/v1/threads/{thread_id}/runs", {"agent": "benchmark", "input": "x"}),
                    ("POST", "/v1/threads", {}),
                ]:
                    r = await http.request(method, path, json=body)
                    statuses.append(r.status_code)
                    assert r.status_code == 503, (path, r.text)
                    assert r.json()["error"]["code"] == "unavailable"
                await send(ws, {"type": "subscribe", "thread_id": thread_id, "ref": "s"})
                frames = [await recv(ws, 10)]
                while frames[-1].get("ref") != "s":
                    frames.append(await recv(ws, 10))
                assert frames[-1]["type"] == "error" and frames[-1]["code"] == "unavailable"
                # A new socket cannot be authenticated: closed with 1013 (try again later).
                async with ws_connect(server, alice) as ws2:
                    try:
                        await asyncio.wait_for(ws2.recv(), 10)
                    except ConnectionClosed as exc:
                        assert exc.rcvd is not None and exc.rcvd.code == 1013
                # The run cannot store its events: it stops, and the engine lives on.
                await asyncio.wait_for(server.service.engine.wait(run_id), 15)

                await proxy.restore()
                async with asyncio.timeout(20):
                    while (await http.get("/healthz")).status_code != 200:
                        await asyncio.sleep(0.2)
                # The run that could not finish is marked once the store is back.
                async with asyncio.timeout(20):
                    while True:
                        run = (await http.get(f"/v1/runs/{run_id}")).json()
                        if run["status"] not in ("running", "queued", "cancelling"):
                            break
                        await asyncio.sleep(0.2)
                assert run["status"] == "failed"
                assert run["error"]["code"] == "interrupted"
                events = (await http.get(f"/v1/threads/{thread_id}/events")).json()
                assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
                ends = [e for e in events if e["type"] in ("agent_completed", "agent_error")]
                assert [(e["type"], e["error"]["code"]) for e in ends] == [
                    ("agent_error", "interrupted")
                ]
                # And the server serves again, without a restart.
                r = await http.post(
                    f"/v1/threads/{thread_id}/runs", json={"agent": "benchmark", "input": "x"}
                )
                assert r.status_code == 202
                await asyncio.wait_for(server.service.engine.wait(r.json()["id"]), 15)
                assert (await http.get(f"/v1/runs/{r.json()['id']}")).json()["status"] == (
                    "completed"
                )
    finally:
        await proxy.close()
    assert 500 not in statuses
