"""Fixtures of the MCP tests: a real MCP server (``echo_server.py``) over both transports."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from mcp_support import start_echo_http


@pytest.fixture
async def echo_http() -> AsyncIterator[str]:
    """The base URL of a running echo server (``/mcp``, and ``/garbage``)."""
    proc, base = await start_echo_http()
    try:
        yield base
    finally:
        proc.kill()
        proc.wait()
