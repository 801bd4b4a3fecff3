"""Tools from MCP servers, through one MCP session per user per server.

``mcp_server("github", url=..., headers={"Authorization": "Bearer {secret:github_token}"})``
or ``mcp_server("files", command=["python", "-m", "files_server"], env={...})``
declares a server; given to ``Agent(tools=[...])`` beside ordinary tools, the
tools it offers become the agent's tools, named ``{server}__{tool}`` (OpenAI
function names allow no dots; ``tool_name=`` changes the pattern).

Why a session per user: an MCP server keeps state per session (and is given the
caller's credential when the session opens), so a session shared between users
would hand one user's state and credential to another. A user's sessions are
opened on first use (:class:`UserMCPSessions`, kept in the user's in-memory
session) and closed with it; a stdio server is a process per user and server,
capped per process by ``TENET_MCP_MAX_PROCESSES``.

``{secret:NAME}`` in a header or environment value is replaced by the calling
user's secret ``NAME`` when that user's session opens; the value never appears
in an event, a result or an error (errors are scrubbed of it).

The tool list comes from the server, through a listing session of the process's
own (:meth:`MCPServer.refresh`, with ``list_secrets`` standing in for user
secrets): at service start, every ``TENET_MCP_RELIST_S`` until a server that
could not be listed is, and again when any session says the list changed. A
user's session never sets the catalogue every user sees: a server may tailor
what it lists to the credential, and that must not reach another user.

Everything that goes wrong in a call stays in that call, as a ``ToolFailed``:

- ``missing_secret``: the user has not set a secret the server needs;
- ``mcp_unavailable``: the server could not be reached, or the session broke;
- ``mcp_process_limit``: ``TENET_MCP_MAX_PROCESSES`` stdio servers are open;
- ``timeout``: the call took longer than the tool timeout;
- ``mcp_tool_error``: the server answered the call with an error.

After any failure but the last two the user's session to that server is closed,
so the next call opens a fresh one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, Protocol, cast

from . import linear_re
from .context import RunContext
from .errors import ToolFailed
from .tools import ApprovalPolicy, Tool

if TYPE_CHECKING:
    from mcp import ClientSession
    from mcp_types import Tool as RemoteTool

    from .tool_threads import ToolThreads

log = logging.getLogger("tenet.mcp")

#: ``{secret:NAME}`` in a header or environment value.
SECRET_REF = linear_re.compile(r"\{secret:([A-Za-z_][A-Za-z0-9_.-]{0,63})\}")
#: A name OpenAI-style function calling accepts.
_TOOL_NAME = linear_re.compile(r"[^A-Za-z0-9_-]")
_SERVER_NAME = linear_re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,39}$")

#: A user's secret by name (None: not set).
SecretLookup = Callable[[str], Awaitable[str | None]]


class MCPHost(Protocol):
    """What an MCP tool needs from the run that calls it (``tenet.runtime.RunRuntime``)."""

    def mcp_sessions(self, ctx: RunContext) -> UserMCPSessions:
        """The calling user's MCP sessions (made on first use, kept in the user's session)."""
        ...


class MCPHub:
    """Process-wide limits of MCP sessions: one per process, shared by every user.

    ``processes`` counts the stdio servers running now; a new one beyond
    ``max_processes`` is refused at once (``mcp_process_limit``), never queued.
    """

    def __init__(self, *, max_processes: int = 64, connect_timeout_s: float = 10.0) -> None:
        self.max_processes = max_processes
        self.connect_timeout_s = connect_timeout_s
        self.processes = 0
        #: Sessions open now, over both transports (for metrics and tests).
        self.open_sessions = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._relisting: set[int] = set()

    def relist(self, server: MCPServer) -> None:
        """List ``server`` again soon, through a listing session (one at a time per server)."""
        if id(server) in self._relisting:
            return
        self._relisting.add(id(server))

        async def again() -> None:
            try:
                await server.refresh(self)
            except ToolFailed as exc:
                log.warning("MCP server %r: tools not listed: %s", server.name, exc.message)
            finally:
                self._relisting.discard(id(server))

        self.spawn(again())

    def spawn(self, work: Awaitable[None]) -> None:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def keep_listing(self, servers: Iterable[MCPServer], every_s: float) -> None:
        """Until each of ``servers`` has tools, list it again every ``every_s`` seconds."""
        waiting = [s for s in servers if not s.tools]
        if not waiting:
            return

        async def loop() -> None:
            while waiting:
                await asyncio.sleep(every_s)
                for server in list(waiting):
                    with contextlib.suppress(ToolFailed):
                        await server.refresh(self)
                        log.info("MCP server %r: %d tools", server.name, len(server.tools))
                    if server.tools:
                        waiting.remove(server)

        self.spawn(loop())

    async def aclose(self) -> None:
        """Stop listing (user sessions are closed with their users' sessions)."""
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)


class MCPServer:
    """An MCP server's declaration, and the tools it offers (shared by every user).

    Holds no session: sessions are per user (:class:`UserMCPSessions`). ``tools``
    is the current catalogue, by tool name as the model sees it.
    """

    def __init__(
        self,
        name: str,
        *,
        url: str | None = None,
        headers: Mapping[str, str] | None = None,
        command: Iterable[str] | None = None,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        include: Iterable[str] | None = None,
        tool_name: str = "{server}__{tool}",
        timeout: float | None = None,
        list_secrets: Mapping[str, str] | None = None,
        audit: str | None = None,
        requires_approval: ApprovalPolicy = False,
    ) -> None:
        if not _SERVER_NAME.match(name):
            raise ValueError(f"MCP server name {name!r}: a letter, then letters, digits, '-', '_'")
        if (url is None) == (command is None):
            raise ValueError(f"MCP server {name!r}: give exactly one of url= or command=")
        self.name = name
        self.url = url
        self.headers = dict(headers or {})
        self.command = list(command) if command is not None else None
        if self.command is not None and not self.command:
            raise ValueError(f"MCP server {name!r}: command= is empty")
        self.env = dict(env or {})
        self.cwd = cwd
        self.include = frozenset(include) if include is not None else None
        if "{tool}" not in tool_name:
            raise ValueError(f"MCP server {name!r}: tool_name must contain '{{tool}}'")
        self.tool_name = tool_name
        self.timeout = timeout
        self.list_secrets = dict(list_secrets or {})
        if audit is not None and (not isinstance(audit, str) or not audit):
            raise ValueError(f"MCP server {name!r}: audit= names one of its tools")
        #: The server's tool ``tenet audit`` calls as each canary user (see :meth:`audit_spec`).
        self.audit = audit
        #: Whether a call of its tools waits for the user's approval (as ``@tool``'s).
        self.requires_approval = requires_approval
        self.tools: dict[str, MCPTool] = {}

    @property
    def transport(self) -> str:
        return "stdio" if self.command is not None else "streamable_http"

    def secret_names(self) -> set[str]:
        """The secrets the server's session needs, by name."""
        values = [*self.headers.values(), *self.env.values()]
        return {m.group(1) for v in values for m in SECRET_REF.finditer(v)}

    def audit_spec(self) -> dict[str, Any] | None:
        """The canary ``tenet audit`` runs on this server, as ``GET /v1/agents`` lists it.

        ``tool``: the tool (as the model names it) the audit calls without arguments;
        it must answer an object with the ``session`` the server saw the call in and
        the ``credential_sha256`` that session was opened with. ``secrets``: the
        secrets each canary user sets first. None when the server is not marked.
        """
        if self.audit is None:
            return None
        return {"tool": self.local_name(self.audit), "secrets": sorted(self.secret_names())}

    def local_name(self, remote: str) -> str:
        return _TOOL_NAME.sub("_", self.tool_name.format(server=self.name, tool=remote))[:64]

    def absorb(self, remote_tools: Iterable[RemoteTool]) -> None:
        """Take a listing from the server as the current catalogue (an atomic swap)."""
        tools: dict[str, MCPTool] = {}
        for remote in remote_tools:
            if self.include is not None and remote.name not in self.include:
                continue
            tool = MCPTool(self, remote)
            tools[tool.name] = tool
        self.tools = tools

    async def refresh(self, hub: MCPHub | None = None) -> None:
        """List the server's tools through a session of the process's own.

        ``{secret:NAME}`` takes its value from ``list_secrets`` (empty if absent): the
        listing session belongs to no user. Raises what the connection raises.
        """
        hub = hub or MCPHub()
        values = {n: self.list_secrets.get(n, "") for n in self.secret_names()}
        connection = MCPConnection(self, values, hub, listing=True)
        try:
            await connection.open()
        finally:
            await connection.aclose()

    def __repr__(self) -> str:
        return f"mcp_server({self.name!r}, {self.transport})"


def mcp_server(
    name: str,
    *,
    url: str | None = None,
    headers: Mapping[str, str] | None = None,
    command: Iterable[str] | None = None,
    env: Mapping[str, str] | None = None,
    cwd: str | None = None,
    include: Iterable[str] | None = None,
    tool_name: str = "{server}__{tool}",
    timeout: float | None = None,
    list_secrets: Mapping[str, str] | None = None,
    audit: str | None = None,
    requires_approval: ApprovalPolicy = False,
) -> MCPServer:
    """Declare an MCP server whose tools an agent may call; see the module docstring.

    ``url`` (streamable HTTP, with ``headers``) or ``command`` (stdio: argv, with
    ``env`` added to a minimal environment); ``include`` keeps only the named
    tools; ``timeout`` overrides ``TENET_TOOL_TIMEOUT_S`` for its calls. ``audit``
    marks the server for ``tenet audit``'s MCP canary: the name of its tool that
    reports the session and credential a call sees (see ``docs/mcp.md``).
    ``requires_approval``: True, or a policy ``(ctx, arguments) -> bool`` (the
    arguments hold no tool name: read ``ctx`` or decide per server), makes each call
    of the server's tools wait for the user's approval, as ``@tool``'s does.
    """
    return MCPServer(
        name,
        url=url,
        headers=headers,
        command=command,
        env=env,
        cwd=cwd,
        include=include,
        tool_name=tool_name,
        timeout=timeout,
        list_secrets=list_secrets,
        audit=audit,
        requires_approval=requires_approval,
    )


class MCPTool(Tool):
    """One tool of an MCP server, called through the calling user's session."""

    def __init__(self, server: MCPServer, remote: RemoteTool) -> None:
        self.fn = None  # type: ignore[assignment]
        self.server = server
        self.remote_name = remote.name
        self.name = server.local_name(remote.name)
        self.description = " ".join((remote.description or remote.title or "").split())
        self.timeout = server.timeout
        self.is_async = True
        self.takes_context = True
        self.requires_approval = server.requires_approval
        schema = dict(remote.input_schema or {})
        schema.setdefault("type", "object")
        schema.setdefault("properties", {})
        self.parameters = schema

    def validate(self, arguments: dict[str, Any]) -> dict[str, Any]:
        """Only the shape: the server checks the arguments against its own schema."""
        if not isinstance(arguments, dict):
            raise ToolFailed("invalid_arguments", "arguments must be an object")
        return arguments

    async def invoke(
        self,
        ctx: RunContext,
        arguments: dict[str, Any],
        *,
        timeout: float,
        threads: ToolThreads | None = None,  # an MCP call is I/O on the loop: no thread
    ) -> Any:
        values = self.validate(arguments)
        limit = self.timeout if self.timeout is not None else timeout
        host = cast(MCPHost, ctx.runtime)
        if not hasattr(host, "mcp_sessions"):
            raise ToolFailed("mcp_unavailable", "this run has no MCP sessions")
        return await host.mcp_sessions(ctx).call(self.server, self.remote_name, values, limit)

    def __repr__(self) -> str:
        return f"MCPTool({self.name!r})"


def _substitute(template: str, values: Mapping[str, str]) -> str:
    return SECRET_REF.sub(lambda m: values[m.group(1)], template)


#: Secret values shorter than this are not scrubbed from what a server answers: they
#: cannot be told from ordinary text, and replacing them would garble every answer.
SCRUB_MIN_CHARS = 6


def _scrub(text: str, values: Iterable[str]) -> str:
    """``text`` without any secret value in it (an error message may echo a header)."""
    for value in values:
        if len(value) >= SCRUB_MIN_CHARS:
            text = text.replace(value, "***")
    return text


def _scrub_value(value: Any, secrets: Iterable[str]) -> Any:
    """A result with every secret value in its strings replaced by ``***``.

    A careless server may echo the credential it was given; a result becomes an
    event, and events never hold a secret.
    """
    if isinstance(value, str):
        return _scrub(value, secrets) if any(s in value for s in secrets) else value
    if isinstance(value, list):
        return [_scrub_value(v, secrets) for v in value]
    if isinstance(value, dict):
        return {_scrub_value(k, secrets): _scrub_value(v, secrets) for k, v in value.items()}
    return value


def _describe(exc: BaseException) -> str:
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _result(result: Any) -> Any:
    """A ``CallToolResult`` as a JSON-ready value: structured content, else the text."""
    structured = getattr(result, "structured_content", None)
    if structured is not None:
        return structured
    parts: list[Any] = []
    for block in getattr(result, "content", None) or []:
        text = getattr(block, "text", None)
        parts.append(text if text is not None else block.model_dump(mode="json", by_alias=True))
    if len(parts) == 1:
        return parts[0]
    return parts


class MCPConnection:
    """One open MCP session (and, for stdio, its process), owned by a task of its own.

    The SDK's transports and ``ClientSession`` hold anyio task groups, which must be
    entered and left by one task: :meth:`_hold` is that task. Calls come from the
    runs' tasks; a transport error, or the end of the task, breaks the connection
    and fails the calls waiting on it at once (not at their timeout).
    """

    def __init__(
        self, server: MCPServer, secrets: Mapping[str, str], hub: MCPHub, *, listing: bool = False
    ) -> None:
        self.server = server
        self._secrets = dict(secrets)
        self._hub = hub
        #: The process's own listing session: it sets the server's catalogue, and its
        #: process (stdio) is not counted against the cap.
        self._listing = listing
        self.session: ClientSession | None = None
        self._ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._closing = asyncio.Event()
        self.broken = asyncio.Event()
        self.error = ""
        self._task: asyncio.Task[None] | None = None
        self._holds_process = False

    @property
    def alive(self) -> bool:
        return self._task is not None and not self.broken.is_set() and not self._task.done()

    def scrub(self, text: str) -> str:
        return _scrub(text, self._secrets.values())[:1000]

    async def open(self) -> None:
        """Connect, initialize, list tools; raises ``ToolFailed`` when it cannot."""
        if self.server.command is not None and not self._listing:
            if self._hub.processes >= self._hub.max_processes:
                raise ToolFailed(
                    "mcp_process_limit",
                    f"MCP server {self.server.name!r}: {self._hub.max_processes} MCP server "
                    "processes are running (TENET_MCP_MAX_PROCESSES); try again later",
                )
            self._hub.processes += 1
            self._holds_process = True
        self._task = asyncio.get_running_loop().create_task(
            self._hold(), name=f"tenet-mcp-{self.server.name}"
        )
        broken = asyncio.ensure_future(self.broken.wait())
        try:
            async with asyncio.timeout(self._hub.connect_timeout_s):
                await asyncio.wait({self._ready, broken}, return_when=asyncio.FIRST_COMPLETED)
        except TimeoutError:
            await self.aclose()
            raise ToolFailed(
                "mcp_unavailable",
                f"MCP server {self.server.name!r} did not open a session within "
                f"{self._hub.connect_timeout_s:g}s",
            ) from None
        finally:
            broken.cancel()
        if not self._ready.done() or self._ready.exception() is not None:
            await self.aclose()
            raise ToolFailed(
                "mcp_unavailable",
                f"MCP server {self.server.name!r} is unavailable: {self.error or 'no session'}",
            )

    def _transport(self) -> contextlib.AbstractAsyncContextManager[Any]:
        if self.server.command is not None:
            from mcp.client.stdio import StdioServerParameters, stdio_client

            params = StdioServerParameters(
                command=self.server.command[0],
                args=self.server.command[1:],
                env={k: _substitute(v, self._secrets) for k, v in self.server.env.items()},
                cwd=self.server.cwd,
            )
            return stdio_client(params, errlog=sys.stderr)
        return self._http()

    @contextlib.asynccontextmanager
    async def _http(self) -> AsyncIterator[Any]:
        import httpx2
        from mcp.client.streamable_http import streamable_http_client

        headers = {k: _substitute(v, self._secrets).strip() for k, v in self.server.headers.items()}
        timeout = httpx2.Timeout(self._hub.connect_timeout_s, read=300.0)
        async with (
            httpx2.AsyncClient(headers=headers, timeout=timeout) as client,
            streamable_http_client(cast(str, self.server.url), http_client=client) as streams,
        ):
            yield streams

    async def _on_message(self, message: Any) -> None:
        if isinstance(message, Exception):
            self._break(_describe(message))
            return
        from mcp_types import ToolListChangedNotification

        if isinstance(getattr(message, "root", message), ToolListChangedNotification):
            self._hub.relist(self.server)

    def _break(self, why: str) -> None:
        if not self.broken.is_set():
            self.error = self.scrub(why)
            self.broken.set()

    async def _hold(self) -> None:
        from mcp import ClientSession

        try:
            async with contextlib.AsyncExitStack() as stack:
                read, write = await stack.enter_async_context(self._transport())
                session = await stack.enter_async_context(
                    ClientSession(read, write, message_handler=self._on_message)
                )
                await session.initialize()
                listing = await session.list_tools()
                if self._listing:
                    self.server.absorb(listing.tools)
                self.session = session
                self._hub.open_sessions += 1
                try:
                    self._ready.set_result(None)
                    await self._closing.wait()
                finally:
                    self._hub.open_sessions -= 1
        except asyncio.CancelledError:
            self._break("closed")
            if not self._ready.done():
                self._ready.set_exception(ToolFailed("mcp_unavailable", "closed"))
            raise
        except BaseException as exc:  # the transport's failures come as exception groups
            self._break(_describe(exc))
            if not self._ready.done():
                self._ready.set_exception(ToolFailed("mcp_unavailable", self.error))
        finally:
            self._break("the session ended")
            if self._holds_process:
                self._holds_process = False
                self._hub.processes -= 1
            if not self._ready.done():
                self._ready.set_exception(ToolFailed("mcp_unavailable", self.error))
            with contextlib.suppress(BaseException):
                self._ready.exception()  # retrieved: no "never retrieved" warning

    async def call(self, tool: str, arguments: dict[str, Any], timeout: float) -> Any:
        """Call ``tool``; its result, or ``ToolFailed`` (see the module docstring)."""
        session = self.session
        if session is None or not self.alive:
            raise ToolFailed("mcp_unavailable", f"MCP server {self.server.name!r}: {self.error}")
        call = asyncio.ensure_future(session.call_tool(tool, arguments))
        broken = asyncio.ensure_future(self.broken.wait())
        try:
            done, _ = await asyncio.wait(
                {call, broken}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            broken.cancel()
            if not call.done():
                call.cancel()
        if call not in done:
            with contextlib.suppress(BaseException):
                await call
            if self.broken.is_set():
                raise ToolFailed(
                    "mcp_unavailable",
                    f"MCP server {self.server.name!r} failed during the call: {self.error}",
                )
            raise ToolFailed(
                "timeout", f"tool {self.server.name}__{tool} took longer than {timeout:g}s"
            )
        if call.cancelled():  # the session's task group ended under the call
            self._break("the session ended during the call")
            raise ToolFailed(
                "mcp_unavailable",
                f"MCP server {self.server.name!r} failed during the call: {self.error}",
            )
        exc = call.exception()
        if exc is not None:
            from mcp.shared.exceptions import MCPError
            from mcp_types import CONNECTION_CLOSED

            if isinstance(exc, MCPError) and exc.code != CONNECTION_CLOSED and self.alive:
                # The server answered with a protocol error (e.g. unknown tool, bad
                # arguments): the session is fine.
                raise ToolFailed("mcp_tool_error", self.scrub(str(exc) or "error")) from None
            self._break(_describe(exc))
            raise ToolFailed(
                "mcp_unavailable",
                f"MCP server {self.server.name!r} failed during the call: {self.error}",
            ) from None
        result = call.result()
        if getattr(result, "is_error", False):
            text = _result(result)
            message = text if isinstance(text, str) else str(text)
            raise ToolFailed("mcp_tool_error", self.scrub(message or "the tool failed"))
        secrets = [v for v in self._secrets.values() if len(v) >= SCRUB_MIN_CHARS]
        return _scrub_value(_result(result), secrets) if secrets else _result(result)

    async def aclose(self) -> None:
        """End the session (and its process); idempotent, never raises."""
        self._closing.set()
        task = self._task
        if task is None or task.done():
            return
        try:
            async with asyncio.timeout(5.0):
                await asyncio.shield(task)
        except (TimeoutError, Exception):
            task.cancel()
            with contextlib.suppress(BaseException):
                await task


class UserMCPSessions:
    """One user's MCP sessions, by server: opened on first use, closed with the user.

    Lives in the user's :class:`~tenet.sessions.UserSession` (``resources``), so it is
    never reached from another user's run, and is closed when that session is
    evicted. Concurrent first calls to one server open one session (a lock per
    server); a broken session is closed and the next call opens a new one.
    """

    def __init__(self, hub: MCPHub, secrets: SecretLookup) -> None:
        self._hub = hub
        self._secret = secrets
        self._connections: dict[str, MCPConnection] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._closed = False

    def __len__(self) -> int:
        return sum(1 for c in self._connections.values() if c.alive)

    async def connection(self, server: MCPServer) -> MCPConnection:
        """The user's open session to ``server``, opened now if there is none."""
        lock = self._locks.setdefault(server.name, asyncio.Lock())
        async with lock:
            if self._closed:
                raise ToolFailed("mcp_unavailable", "the user's session is closing")
            found = self._connections.get(server.name)
            if found is not None and found.alive:
                return found
            if found is not None:
                del self._connections[server.name]
                await found.aclose()
            values: dict[str, str] = {}
            for name in sorted(server.secret_names()):
                value = await self._secret(name)
                if value is None:
                    raise ToolFailed(
                        "missing_secret",
                        f"MCP server {server.name!r} needs the secret {name!r}, which is not "
                        f"set: set it with PUT /v1/me/secrets/{name} (or on the console's "
                        "secrets page)",
                    )
                values[name] = value
            connection = MCPConnection(server, values, self._hub)
            await connection.open()
            self._connections[server.name] = connection
            return connection

    async def call(
        self, server: MCPServer, tool: str, arguments: dict[str, Any], timeout: float
    ) -> Any:
        connection = await self.connection(server)
        try:
            return await connection.call(tool, arguments, timeout)
        except ToolFailed as exc:
            if exc.code == "mcp_unavailable":
                await self.drop(server.name, connection)
            raise

    async def drop(self, name: str | None = None, connection: MCPConnection | None = None) -> None:
        """Close the session to server ``name`` (all with None); the next call reopens."""
        names = [name] if name is not None else list(self._connections)
        for n in names:
            found = self._connections.get(n)
            if found is None or (connection is not None and found is not connection):
                continue
            del self._connections[n]
            await found.aclose()

    async def drop_using(self, secret: str) -> None:
        """Close the sessions opened with the secret ``secret`` (its value changed).

        Each under its server's lock: a session being opened meanwhile (perhaps with
        the old value) is closed once open, never kept.
        """
        for name, lock in list(self._locks.items()):
            async with lock:
                found = self._connections.get(name)
                if found is not None and secret in found.server.secret_names():
                    await self.drop(name, found)

    async def aclose(self) -> None:
        self._closed = True
        await self.drop()


#: Libraries that log raw MCP messages and HTTP exchanges at DEBUG and INFO: what a
#: server sends back may quote the credential it was given.
SDK_LOGGERS = ("mcp", "mcp_types", "httpx2", "httpcore2")


def quiet_sdk_logs() -> None:
    """Keep the MCP SDK's loggers at WARNING unless the operator set their level.

    A careless server may echo a user's credential in an error or a result, which
    the SDK logs verbatim at DEBUG; tenet's own lines never hold a secret value.
    """
    for name in SDK_LOGGERS:
        logger = logging.getLogger(name)
        if logger.level == logging.NOTSET:
            logger.setLevel(logging.WARNING)


async def list_mcp_tools(agents: Iterable[Any], hub: MCPHub, *, relist_s: float = 30.0) -> None:
    """List the tools of every MCP server the agents name, at once, before serving.

    A server that cannot be listed now is logged (by name and error, never a
    secret) and listed again every ``relist_s`` seconds until it is.
    """
    quiet_sdk_logs()
    servers: dict[int, MCPServer] = {}
    for agent in agents:
        for server in getattr(agent, "mcp_servers", ()):
            servers[id(server)] = server

    async def one(server: MCPServer) -> None:
        try:
            await server.refresh(hub)
        except ToolFailed as exc:
            log.warning("MCP server %r: tools not listed: %s", server.name, exc.message)
        else:
            log.info("MCP server %r: %d tools", server.name, len(server.tools))

    await asyncio.gather(*(one(s) for s in servers.values()))
    hub.keep_listing(servers.values(), relist_s)
