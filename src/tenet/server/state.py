"""What one app holds besides the service: live connections, metrics, the guard.

Kept on ``app.state.tenet`` so that two apps in one process (tests do this) share
nothing: no module-level registry, counter or connection list.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..service import Service
from ..settings import Settings
from .guard import IsolationGuard
from .jwt_auth import JwtUsers
from .live import LiveConnections
from .metrics import Metrics


@dataclass(eq=False)
class ServerState:
    service: Service
    metrics: Metrics
    guard: IsolationGuard
    live: LiveConnections
    owns_service: bool = False
    #: Verifies JWTs and maps them to users (``TENET_AUTH=jwt|both``); None with tokens only.
    jwt_users: JwtUsers | None = None

    @property
    def settings(self) -> Settings:
        return self.service.settings
