"""A user's changed secret reaches every process: cached values and sessions dropped.

A process keeps, in a user's in-memory session, the user's decrypted secrets
(:class:`~tenet.store.secrets.UserSecrets`) and the MCP sessions opened with them
(:class:`~tenet.mcp_tools.UserMCPSessions`). When the user sets or deletes a
secret, the process that served the request drops both at once, before it
answers; every other process of a cluster is told over the bus (the
``secret_changed`` signal, a user id and a name, never a value) and drops them as
soon as the signal arrives, so the user's next call there opens a session with
the new value, or fails for want of one. A process that holds no session of the
user has nothing to drop.
"""

from __future__ import annotations

import asyncio
import logging
import secrets

import orjson

from .bus import Bus
from .sessions import UserSessions

log = logging.getLogger("tenet.secrets")

#: The bus signal: ``{"user_id", "name", "from"}`` (``from``: the sending process).
SECRET_CHANGED = "secret_changed"


class SecretChanges:
    """Drops a user's cached secret and its MCP sessions here, and tells every process."""

    def __init__(self, sessions: UserSessions, bus: Bus) -> None:
        self._sessions = sessions
        self._bus = bus
        self._me = secrets.token_hex(8)
        self._pending: set[asyncio.Task[None]] = set()

    def start(self) -> None:
        self._bus.on_signal(SECRET_CHANGED, self._on_signal)

    async def changed(self, user_id: str, name: str) -> None:
        """The user's secret ``name`` was set or deleted (and stored): forget it everywhere."""
        await self.drop(user_id, name)
        payload = {"user_id": user_id, "name": name, "from": self._me}
        self._bus.signal(SECRET_CHANGED, orjson.dumps(payload).decode())

    async def drop(self, user_id: str, name: str) -> None:
        """Forget the old value in the user's session here, and close the sessions it opened."""
        session = self._sessions.peek(user_id)
        if session is None:
            return
        cached = session.resources.get("secrets")
        if cached is not None:
            cached.forget(name)
        mcp = session.resources.get("mcp")
        if mcp is not None:
            await mcp.drop_using(name)

    def _on_signal(self, payload: str) -> None:
        try:
            message = orjson.loads(payload)
            user_id, name, sender = message["user_id"], message["name"], message.get("from")
        except (orjson.JSONDecodeError, KeyError, TypeError):
            return
        if sender == self._me or not isinstance(user_id, str) or not isinstance(name, str):
            return  # dropped here before the signal went out
        task = asyncio.ensure_future(self.drop(user_id, name))
        self._pending.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._pending.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("dropping a changed secret's sessions failed: %r", task.exception())

    async def close(self) -> None:
        """Wait for the drops under way (sessions close next)."""
        if self._pending:
            await asyncio.gather(*self._pending, return_exceptions=True)
