"""Running a real tenet server: in the current event loop (tests) or blocking (the CLI).

:func:`running_server` starts a real ``uvicorn.Server`` on a free loopback port
inside the running event loop, so tests talk to it over real sockets with real
HTTP and WebSocket clients. :func:`serve` is what ``tenet serve`` runs.

Both use :class:`TenetServer`, a ``uvicorn.Server`` that closes tenet's sockets
with 1001 ("going away", as PROTOCOL.md says) before uvicorn's own shutdown
would close them with 1012.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import socket
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from fastapi import FastAPI

from .heap import freeze_startup_heap
from .registry import AgentRegistry
from .server import create_app
from .server.state import ServerState
from .service import Service
from .settings import Settings

log = logging.getLogger("tenet")


class TenetServer(uvicorn.Server):
    """uvicorn, but tenet's sockets are closed with 1001 first on shutdown."""

    def __init__(
        self,
        config: uvicorn.Config,
        app: FastAPI,
        *,
        handle_signals: bool = True,
        grace_s: float = 0.0,
        on_started: Callable[[Service], Awaitable[None]] | None = None,
        freeze_heap: bool = False,
    ) -> None:
        super().__init__(config)
        self.tenet_app = app
        self.handle_signals = handle_signals
        self.grace_s = grace_s
        self.on_started = on_started
        #: Whether this server owns its process: its start-up heap is then frozen
        #: (:mod:`tenet.heap`).
        self.freeze_heap = freeze_heap

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        """uvicorn's start-up, then ``on_started``: what is announced is already serving."""
        await super().startup(sockets)
        if self.freeze_heap and self.started:
            freeze_startup_heap()
        if self.on_started is not None and self.started and not self.should_exit:
            await self.on_started(self.tenet_app.state.tenet.service)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        """Drain, then close: see "Graceful shutdown" in ``docs/deploy.md``.

        While the listener is still open, new runs are refused (503 / error frame
        ``unavailable``, ``/healthz`` 503) and running runs get ``grace_s`` to
        finish; then the engine stops the rest (embedded: ``run_cancelled`` reason
        ``shutdown``; cluster: back to the queue if they emitted nothing yet), every
        socket gets what was queued for it and is closed with 1001, and uvicorn
        stops. The writer flushes when the service closes (lifespan end).
        """
        state: ServerState = self.tenet_app.state.tenet
        if state.owns_service and state.service.started:
            await state.service.engine.drain(self.grace_s, abort=lambda: self.force_exit)
            await asyncio.sleep(0.1)  # let sockets pick up the last published events
        await state.live.close_all(1001)
        await super().shutdown(sockets)

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        if self.handle_signals:
            with super().capture_signals():
                yield
        else:
            yield


def uvicorn_config(app: FastAPI, settings: Settings, **kwargs: Any) -> uvicorn.Config:
    """The uvicorn settings tenet needs: protocol-level keep-alive pings, an idle HTTP
    connection kept longer than its client keeps it (``TENET_HTTP_KEEP_ALIVE_S``), lifespan on."""
    kwargs.setdefault("log_level", "warning")
    return uvicorn.Config(
        app,
        ws_ping_interval=settings.ws_ping_s,
        ws_ping_timeout=settings.ws_ping_s,
        ws_per_message_deflate=settings.ws_compression,
        ws_max_size=settings.ws_transport_max_bytes,  # refused from the frame's header: 1009
        timeout_keep_alive=settings.http_keep_alive_s,
        lifespan="on",
        timeout_graceful_shutdown=5,
        **kwargs,
    )


@dataclass
class ServerHandle:
    """A running server: where it is and what it serves."""

    url: str
    ws_url: str
    app: FastAPI
    service: Service
    admin_token: str

    async def create_user(self, name: str | None = None) -> tuple[str, str]:
        """A new user through the admin API; returns ``(user_id, token)``."""
        name = name or f"user-{secrets.token_hex(4)}"
        async with httpx.AsyncClient(base_url=self.url) as http:
            r = await http.post(
                "/v1/users",
                json={"name": name},
                headers={"Authorization": f"Bearer {self.admin_token}"},
            )
            r.raise_for_status()
            body = r.json()
        return body["user_id"], body["token"]


def _free_socket(host: str = "127.0.0.1") -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, 0))
    sock.listen(512)
    sock.setblocking(False)
    return sock


@contextlib.asynccontextmanager
async def running_server(
    settings: Settings | None = None,
    registry: AgentRegistry | None = None,
    *,
    service: Service | None = None,
) -> AsyncIterator[ServerHandle]:
    """A real uvicorn server on a free loopback port, in this event loop, stopped on exit.

    Without settings it uses a fresh SQLite file in a temporary directory; without an
    admin token in the settings it makes one up (``handle.admin_token``).
    """
    with contextlib.ExitStack() as stack:
        if service is not None:
            settings = service.settings
        if settings is None:
            tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="tenet-"))
            settings = Settings(database_url=f"sqlite+aiosqlite:///{Path(tmp) / 'tenet.db'}")
        if not settings.admin_token:
            settings = settings.model_copy(update={"admin_token": secrets.token_urlsafe(24)})
            if service is not None:
                service.settings = settings
        service = service or Service(settings, registry)
        assert settings.admin_token
        app = create_app(service)
        sock = _free_socket()
        port = sock.getsockname()[1]
        server = TenetServer(uvicorn_config(app, settings), app, handle_signals=False)
        task = asyncio.create_task(server.serve(sockets=[sock]), name="tenet-uvicorn")
        try:
            while not server.started:
                if task.done():
                    task.result()
                    raise RuntimeError("the server stopped before it started")
                await asyncio.sleep(0.01)
            yield ServerHandle(
                url=f"http://127.0.0.1:{port}",
                ws_url=f"ws://127.0.0.1:{port}/v1/ws",
                app=app,
                service=service,
                admin_token=settings.admin_token,
            )
        finally:
            server.should_exit = True
            try:
                await asyncio.wait_for(asyncio.shield(task), timeout=15)
            except TimeoutError:
                server.force_exit = True
                await task
            finally:
                sock.close()


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port``, bound before anything is announced.

    Raises ``OSError`` (the port is taken, the address is not this machine's): the
    caller says so and exits before printing a URL or minting a token.
    """
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(2048)
    except OSError:
        sock.close()
        raise
    return sock


def serve(
    settings: Settings | None = None,
    registry: AgentRegistry | None = None,
    *,
    sock: socket.socket | None = None,
    on_started: Callable[[Service], Awaitable[None]] | None = None,
) -> None:
    """Run the server until interrupted (``tenet serve``, ``tenet demo``).

    It listens on ``sock`` (default: :func:`bind` of ``TENET_HOST``:``TENET_PORT``) and
    calls ``on_started`` once the service is up and the socket is served.
    """
    from .server.logs import configure_logging, redact_library_logs
    from .service import describe_model

    settings = settings or Settings()
    configure_logging(settings.log_level)
    sock = sock or bind(settings.host, settings.port)
    app = create_app(settings=settings, registry=registry)
    config = uvicorn_config(app, settings, log_level=settings.log_level.lower())
    redact_library_logs()  # after uvicorn configured its loggers
    log.info("model: %s", describe_model(settings, app.state.tenet.service.engine.model))
    server = TenetServer(
        config, app, grace_s=settings.shutdown_grace_s, on_started=on_started, freeze_heap=True
    )
    server.run(sockets=[sock])
