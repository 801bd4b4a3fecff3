"""A run's stored status agrees with its events: once a client has its terminal event,
``GET /v1/runs/{id}`` already reads the run as ended, with its output or error.

The run's final status is stored in the same transaction as its terminal event, so
there is no moment in which the event is out and the run still reads ``running``.
"""

from __future__ import annotations

from server_support import http, new_user, ready, recv, send, until_terminal, ws_connect

from tenet.agents import Agent
from tenet.context import RunContext
from tenet.examples import default_registry
from tenet.registry import AgentRegistry


class Broken(Agent):
    def __init__(self) -> None:
        super().__init__(name="broken", description="Fails at once.")

    async def run(self, ctx: RunContext, input: str) -> str:
        raise RuntimeError("broken on purpose")


async def test_a_run_reads_as_ended_as_soon_as_its_terminal_event_arrives(server_factory) -> None:
    registry = AgentRegistry([*default_registry(), Broken()])
    async with server_factory(registry=registry) as srv:
        user = await new_user(srv)
        async with ws_connect(srv, user) as ws, http(srv, user) as client:
            await ready(ws)
            thread_id = None
            for i in range(20):
                frame = {"type": "run", "agent": "benchmark", "input": f"events=6 n={i}"}
                if thread_id:
                    frame["thread_id"] = thread_id
                await send(ws, frame)
                accepted = await recv(ws)
                thread_id = accepted["thread_id"]
                frames = await until_terminal(ws, accepted["run_id"])
                run = (await client.get(f"/v1/runs/{accepted['run_id']}")).json()
                assert frames[-1]["type"] == "agent_completed"
                assert run["status"] == "completed", f"run {i} read {run['status']!r}"
                assert run["output"] == frames[-1]["final_response"]
                assert run["finished_at"] is not None

            await send(ws, {"type": "run", "agent": "broken", "input": "x"})
            accepted = await recv(ws)
            frames = await until_terminal(ws, accepted["run_id"])
            run = (await client.get(f"/v1/runs/{accepted['run_id']}")).json()
            assert frames[-1]["type"] == "agent_error"
            assert run["status"] == "failed"
            assert run["error"] == frames[-1]["error"]

            await send(ws, {"type": "run", "agent": "benchmark", "input": "latency_ms=5000"})
            accepted = await recv(ws)
            await send(ws, {"type": "cancel", "run_id": accepted["run_id"]})
            frames = await until_terminal(ws, accepted["run_id"])
            run = (await client.get(f"/v1/runs/{accepted['run_id']}")).json()
            assert frames[-1]["type"] == "run_cancelled"
            assert run["status"] == "cancelled"
