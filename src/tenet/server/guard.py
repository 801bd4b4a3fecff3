"""The isolation guard: the last check before an event reaches the wire.

Routing already makes sure a socket or stream only receives its user's threads.
The guard is defence in depth behind it: every event frame is checked, on the
exact bytes about to be sent, against the user of the connection. A frame of
another user is dropped, logged as critical and counted in
``tenet_isolation_violations_total``, which a deployment can alert on. A non-zero
count means a bug in routing, never something a client can cause.
"""

from __future__ import annotations

import logging

import orjson
from prometheus_client import Counter

log = logging.getLogger("tenet.isolation")


class IsolationGuard:
    """Checks event frames against the receiving user; see the module docstring."""

    def __init__(self, violations: Counter) -> None:
        self._violations = violations
        self.blocked = 0

    def allows(self, receiver_user_id: str, body: str, *, channel: str) -> bool:
        """True when ``body`` (a stored event's JSON) belongs to ``receiver_user_id``."""
        try:
            owner = orjson.loads(body).get("user_id")
        except (orjson.JSONDecodeError, AttributeError):
            owner = None
        if isinstance(owner, str) and owner == receiver_user_id:
            return True
        self.blocked += 1
        self._violations.inc()
        log.critical(
            "isolation violation stopped: an event of another user was about to be sent on %s",
            channel,
            extra={"user_id": receiver_user_id, "event_user_id": owner},
        )
        return False
