"""Helpers of the MCP tests: an agent over the echo server, users, and runs through the API."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx

from tenet import Agent, mcp_server
from tenet.registry import AgentRegistry
from tenet.testing import ServerHandle

TERMINAL = {"agent_completed", "agent_error", "run_cancelled"}

ECHO = Path(__file__).with_name("echo_server.py")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def start_echo_http() -> tuple[subprocess.Popen[bytes], str]:
    """The echo server over streamable HTTP in a process of its own; returns it and its base URL."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, str(ECHO), "http", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    async with httpx.AsyncClient() as client:
        for _ in range(300):
            if proc.poll() is not None:
                raise RuntimeError("the echo server exited")
            try:
                await client.get(base + "/garbage")
                return proc, base
            except httpx.HTTPError:
                await asyncio.sleep(0.05)
    proc.kill()
    raise RuntimeError("the echo server did not start")


def stdio_command() -> list[str]:
    return [sys.executable, str(ECHO), "stdio"]


def echo_registry(base: str | None, command: list[str] | None = None, **kw: Any) -> AgentRegistry:
    """Agent ``echo`` with the echo server over HTTP (``web__*``) and/or stdio (``proc__*``)."""
    tools: list[Any] = []
    if base is not None:
        tools.append(
            mcp_server(
                "web",
                url=base + "/mcp",
                headers={"Authorization": "Bearer {secret:echo_token}"},
                **kw,
            )
        )
    if command is not None:
        tools.append(mcp_server("proc", command=command, env={"ECHO_TOKEN": "{secret:echo_token}"}))
    return AgentRegistry([Agent("echo", "calls the echo MCP server", tools=tools)])


class Caller:
    """One user of the server, with an HTTP client."""

    def __init__(self, server: ServerHandle, user_id: str, token: str) -> None:
        self.server = server
        self.user_id = user_id
        self.token = token
        self.http = httpx.AsyncClient(
            base_url=server.url, headers={"Authorization": f"Bearer {token}"}, timeout=30.0
        )
        self.thread_id: str | None = None

    async def set_secret(self, name: str, value: str) -> httpx.Response:
        return await self.http.put(f"/v1/me/secrets/{name}", json={"value": value})

    async def start(self, text: str) -> str:
        if self.thread_id is None:
            r = await self.http.post("/v1/threads", json={})
            assert r.status_code == 201, r.text
            self.thread_id = r.json()["id"]
        r = await self.http.post(
            f"/v1/threads/{self.thread_id}/runs", json={"agent": "echo", "input": text}
        )
        assert r.status_code == 202, r.text
        return str(r.json()["id"])

    async def events(self, run_id: str) -> list[dict[str, Any]]:
        r = await self.http.get(f"/v1/threads/{self.thread_id}/events")
        assert r.status_code == 200, r.text
        body = r.json()
        events = body["data"] if isinstance(body, dict) else body
        return [e for e in events if e.get("run_id") == run_id]

    async def run(self, text: str) -> list[dict[str, Any]]:
        """Run ``text`` to its end; its events."""
        run_id = await self.start(text)
        await asyncio.wait_for(self.server.service.engine.wait(run_id), 60)
        return await self.events(run_id)

    async def call(self, tool: str, **arguments: Any) -> dict[str, Any]:
        """Call one tool in a run (``use TOOL k=v``); its ``tool_completed`` event."""
        args = " ".join(f"{k}={v}" for k, v in arguments.items())
        events = await self.run(f"use {tool} {args}".strip())
        done = [e for e in events if e["type"] == "tool_completed"]
        assert done, events
        return done[0]

    async def aclose(self) -> None:
        await self.http.aclose()


async def new_caller(server: ServerHandle, name: str | None = None) -> Caller:
    user_id, token = await server.create_user(name)
    return Caller(server, user_id, token)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is dead; a process reaped between the two checks is too
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False
