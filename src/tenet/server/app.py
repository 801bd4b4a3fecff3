"""The app factory: one FastAPI app serving one :class:`~tenet.service.Service`.

Everything the app holds (the service, live connections, metrics, the isolation
guard) hangs off ``app.state.tenet``; two apps in one process share nothing.
The lifespan starts the service unless it already runs, and on shutdown closes
every socket with 1001 before closing the service it started.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from starlette.middleware.cors import CORSMiddleware

from ..registry import AgentRegistry
from ..service import Service
from ..settings import Settings
from . import ag_ui, approvals, routes, secrets, sse, usage, web, ws
from .errors import GuardMiddleware, install_error_handlers
from .guard import IsolationGuard
from .jwt_auth import JwtUsers
from .live import TOKEN_REVOKED, LiveConnections
from .metrics import Metrics
from .state import ServerState


def create_app(
    service: Service | None = None,
    *,
    settings: Settings | None = None,
    registry: AgentRegistry | None = None,
) -> FastAPI:
    """A tenet server app for ``service`` (built from ``settings``/``registry`` if not given)."""
    if service is None:
        service = Service(settings, registry)
    live = LiveConnections()
    metrics = Metrics(service, lambda: len(live))
    state = ServerState(
        service=service,
        metrics=metrics,
        guard=IsolationGuard(metrics.isolation_violations),
        live=live,
        jwt_users=_jwt_users(service),
    )

    on_signal = getattr(service.bus, "on_signal", None)
    if on_signal is not None:  # revocations made by other processes close our sockets too
        on_signal(TOKEN_REVOKED, live.revoke)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        if not service.started:
            await service.start()
            state.owns_service = True
        try:
            yield
        finally:
            await live.close_all(1001)
            state.ws_refusals.close()
            state.jwt_refusals.close()
            if state.owns_service:
                await service.close(grace_s=0)
            if state.jwt_users is not None:
                await state.jwt_users.aclose()

    app = FastAPI(
        title="tenet",
        version="1",
        summary="Run many people's AI agents at once, each isolated, streamed live and stored.",
        lifespan=lifespan,
    )
    app.state.tenet = state
    install_error_handlers(app)
    app.add_middleware(GuardMiddleware, max_body_bytes=service.settings.max_body_bytes)
    origins = service.settings.cors_origin_list
    if origins:  # off unless TENET_CORS_ORIGINS names origins; outermost, so errors carry it too
        app.add_middleware(
            CORSMiddleware,
            allow_origins=origins,
            allow_methods=["GET", "POST", "DELETE"],
            allow_headers=["Authorization", "Content-Type", "Last-Event-ID"],
            allow_credentials=False,
            max_age=600,
        )
    app.include_router(routes.router)
    app.include_router(approvals.router)
    app.include_router(secrets.router)
    app.include_router(usage.router)
    app.include_router(sse.router)
    app.include_router(ag_ui.router)
    app.include_router(ws.router)
    app.include_router(web.router)
    return app


def _jwt_users(service: Service) -> JwtUsers | None:
    """What verifies JWTs and maps them to users, when ``TENET_AUTH`` takes JWTs."""
    if service.settings.auth == "tokens":
        return None
    return JwtUsers(service.settings, service.store)
