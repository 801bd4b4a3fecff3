"""A real MCP server (the SDK's server side) that keeps state per session.

``python echo_server.py stdio`` serves over stdin/stdout (the credential comes from
the ``ECHO_TOKEN`` environment variable); ``python echo_server.py http PORT``
serves streamable HTTP on 127.0.0.1:PORT at ``/mcp`` (the credential is the
``Authorization`` header) and answers garbage at ``/garbage``.

The credential is echoed as its SHA-256, so a test can prove which credential a
session was opened with while no frame ever carries the value itself.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import sys
from typing import Any

from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError

server = MCPServer("echo")
#: Per-session state: the values each session was told to remember.
_memory: dict[str, list[str]] = {}


def _credential(ctx: Context) -> str:
    headers = ctx.headers
    if headers is not None:
        return str(headers.get("authorization", ""))
    return os.environ.get("ECHO_TOKEN", "")


def _session_key(ctx: Context) -> str:
    headers = ctx.headers
    if headers is not None:
        return str(headers.get("mcp-session-id", ""))
    return "stdio"  # one session per process


@server.tool()
def remember(value: str, ctx: Context) -> str:
    """Remember a value in this session."""
    _memory.setdefault(_session_key(ctx), []).append(value)
    return "ok"


@server.tool()
def recall(ctx: Context) -> dict[str, Any]:
    """What this session remembered, and the credential it was opened with (hashed)."""
    credential = _credential(ctx)
    return {
        "values": _memory.get(_session_key(ctx), []),
        "credential_sha256": hashlib.sha256(credential.encode()).hexdigest(),
        "pid": os.getpid(),
        "session": _session_key(ctx),
    }


@server.tool()
async def sleep(seconds: float) -> str:
    """Sleep, then answer."""
    await asyncio.sleep(seconds)
    return "slept"


@server.tool()
def crash() -> str:
    """End the server process in the middle of the call."""
    os._exit(3)


@server.tool()
def fail(message: str) -> str:
    """Raise an error with this message."""
    raise ValueError(message)


@server.tool()
def careless(ctx: Context) -> str:
    """Answer with the credential itself (a careless server)."""
    return f"your credential is {_credential(ctx)}"


@server.tool()
def refuse(ctx: Context) -> str:
    """Fail with an error that quotes the credential (a careless server)."""
    raise ToolError(f"the credential {_credential(ctx)!r} is refused")


def extra() -> str:
    """A tool that appears after ``grow``."""
    return "extra"


@server.tool()
async def grow(ctx: Context) -> str:
    """Offer one more tool, and tell the client the list changed."""
    server.add_tool(extra, name="extra")
    await ctx.session.send_tool_list_changed()
    return "grown"


def main() -> None:
    if sys.argv[1] == "stdio":
        server.run("stdio")
        return
    import uvicorn
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    app = server.streamable_http_app()

    async def garbage(request: Any) -> PlainTextResponse:
        return PlainTextResponse("<html>not an MCP server</html>", media_type="text/html")

    app.router.routes.append(Route("/garbage", garbage, methods=["GET", "POST", "DELETE"]))
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[2]), log_level="warning")


if __name__ == "__main__":
    main()
