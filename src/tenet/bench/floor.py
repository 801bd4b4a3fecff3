"""The floor: the same server stack sending ready-made frames, with no agent and no store.

What tenet cannot beat on this machine: FastAPI + uvicorn (same loop, same
WebSocket implementation, same ping settings as ``tenet serve``) answering a
``run`` frame with ``run_accepted`` and the 25 frames a ``benchmark`` run
produces, of the same shape and size, rendered once per connection and input.
Only the timestamp is filled in at send time (a string replace), so the
per-event latency the driver measures means the same thing as for tenet.
``latency_ms=N`` in the input is honoured the way the benchmark agent does it.

Run as ``python -m tenet.bench.floor --port N``; users are fake (any token is
accepted) because there is nothing to isolate.
"""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

import orjson
from fastapi import FastAPI, Request, WebSocket
from fastapi.responses import JSONResponse
from starlette.websockets import WebSocketDisconnect

from ..clock import now_us, wire_time
from ..examples.benchmark import parse_input
from ..ids import new_id

_PLACEHOLDER = "2000-01-01T00:00:00.000Z"


def _parse(input: str) -> tuple[float, int]:
    """``latency_ms`` and ``events`` from a benchmark input, as the agent reads them."""
    return parse_input(input)


def render_run(user_id: str, thread_id: str, input: str, events: int) -> list[str]:
    """The frames of one benchmark run (same fields and sizes as tenet's), timestamp left blank."""
    run_id, execution_id = new_id("run"), new_id("exe")
    call_id = "call_" + "0" * 16
    value = input[:100]
    bodies: list[tuple[str, dict[str, Any]]] = [
        ("agent_started", {"input": input, "depth": 0}),
        ("agent_thinking", {"reasoning": "benchmark step", "step": 1}),
        (
            "tool_executing",
            {"tool_name": "echo", "call_id": call_id, "parameters": {"value": value}},
        ),
        (
            "tool_completed",
            {
                "tool_name": "echo",
                "call_id": call_id,
                "ok": True,
                "results": value,
                "duration_ms": 0.012,
            },
        ),
    ]
    bodies += [("message_delta", {"text": f"w{i} "}) for i in range(events - 5)]
    bodies.append(
        (
            "agent_completed",
            {
                "status": "completed",
                "final_response": f"done {events - 5}",
                "duration_ms": 1.234,
                "depth": 0,
            },
        )
    )
    frames = []
    for seq, (kind, fields) in enumerate(bodies, start=1):
        data = {
            "type": kind,
            "event_id": new_id("evt"),
            "seq": seq,
            "user_id": user_id,
            "thread_id": thread_id,
            "run_id": run_id,
            "execution_id": execution_id,
            "agent_name": "benchmark",
            "timestamp": _PLACEHOLDER,
            **fields,
        }
        frames.append(orjson.dumps(data).decode())
    return frames


def _now() -> str:
    return wire_time(now_us())


def create_floor_app() -> FastAPI:
    app = FastAPI(title="tenet floor")

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/v1/users", status_code=201)
    async def create_user(request: Request) -> JSONResponse:
        body = await request.json()
        return JSONResponse(
            {"user_id": new_id("usr"), "name": body.get("name"), "token": "floor_" + new_id("tok")},
            status_code=201,
        )

    @app.websocket("/v1/ws")
    async def ws_endpoint(ws: WebSocket) -> None:
        await ws.accept()
        user_id, thread_id = new_id("usr"), new_id("thr")
        rendered: dict[str, list[str]] = {}
        await ws.send_text(
            orjson.dumps(
                {"type": "ready", "user_id": user_id, "connection_id": new_id("con")}
            ).decode()
        )
        try:
            while True:
                frame = orjson.loads(await ws.receive_text())
                if frame.get("type") == "ping":
                    await ws.send_text('{"type":"pong"}')
                    continue
                if frame.get("type") != "run":
                    continue
                input = str(frame.get("input", ""))
                latency_ms, events = _parse(input)
                frames = rendered.get(input)
                if frames is None:
                    if len(rendered) > 16:
                        rendered.clear()
                    frames = rendered[input] = render_run(user_id, thread_id, input, events)
                accepted = {"type": "run_accepted", "run_id": new_id("run"), "thread_id": thread_id}
                await ws.send_text(orjson.dumps(accepted).decode())
                for i, body in enumerate(frames):
                    if latency_ms and i in (1, 4):  # before thinking, and after the tool call
                        await asyncio.sleep(latency_ms / 1000)
                    await ws.send_text(body.replace(_PLACEHOLDER, _now(), 1))
        except WebSocketDisconnect:
            return

    return app


def main() -> None:
    import uvicorn

    from ..settings import Settings

    parser = argparse.ArgumentParser(description="tenet's benchmark floor server")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    settings = Settings()
    # The same uvicorn options as ``tenet serve`` (testing.uvicorn_config), so only the app differs.
    from ..testing import uvicorn_config

    app = create_floor_app()
    config = uvicorn_config(app, settings, host="127.0.0.1", port=args.port, log_level="warning")
    uvicorn.Server(config).run()


if __name__ == "__main__":
    main()
