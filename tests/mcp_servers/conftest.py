"""Fixtures of the MCP tests: a real MCP server (``echo_server.py``) over both transports."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

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


@pytest.fixture
async def echo_http() -> AsyncIterator[str]:
    """The base URL of a running echo server (``/mcp``, and ``/garbage``)."""
    proc, base = await start_echo_http()
    try:
        yield base
    finally:
        proc.kill()
        proc.wait()


def stdio_command() -> list[str]:
    return [sys.executable, str(ECHO), "stdio"]
