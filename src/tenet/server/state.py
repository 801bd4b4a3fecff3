"""What one app holds besides the service: live connections, metrics, the guard.

Kept on ``app.state.tenet`` so that two apps in one process (tests do this) share
nothing: no module-level registry, counter or connection list.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from ..service import Service
from ..settings import Settings
from .admission import PendingSockets
from .guard import IsolationGuard
from .jwt_auth import JwtUsers
from .live import LiveConnections
from .metrics import Metrics
from .refusal_log import RefusalLog


@dataclass(eq=False)
class ServerState:
    service: Service
    metrics: Metrics
    guard: IsolationGuard
    live: LiveConnections
    owns_service: bool = False
    #: Verifies JWTs and maps them to users (``TENET_AUTH=jwt|both``); None with tokens only.
    jwt_users: JwtUsers | None = None
    pending: PendingSockets = field(default_factory=PendingSockets)
    #: Per-user limits shared through Redis in a cluster (see ``cluster_limits``); made on first use.
    cluster_limits: Any = None
    #: Sockets refused before they authenticate, logged as a count per interval.
    ws_refusals: RefusalLog = field(
        default_factory=lambda: RefusalLog(logging.getLogger("tenet.server.ws"))
    )
    #: JWTs refused, logged as a count per interval.
    jwt_refusals: RefusalLog = field(
        default_factory=lambda: RefusalLog(logging.getLogger("tenet.server.auth"), logging.INFO)
    )

    @property
    def settings(self) -> Settings:
        return self.service.settings
