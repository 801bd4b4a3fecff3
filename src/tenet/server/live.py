"""The open sockets and streams of one app, by token and in all.

Revoking a token must stop it at once "on open WebSockets too", so every live
connection is registered under the hash of the token that opened it; shutdown
closes them all with 1001. The registry holds only references to connections,
each of which belongs to one user. In cluster mode the revocation travels to
the other processes as the bus signal :data:`TOKEN_REVOKED` (the token's hash).
"""

from __future__ import annotations

import asyncio
from typing import Protocol

#: The bus signal that carries a revoked token's hash to every process (cluster mode).
TOKEN_REVOKED = "token_revoked"


class LiveConnection(Protocol):
    user_id: str
    token_hash: str

    def request_close(self, code: int) -> None:
        """Start closing with ``code`` (4401 revoked, 1001 shutdown); never blocks."""

    async def wait_closed(self) -> None: ...


class LiveConnections:
    """Token hash -> open connections; see the module docstring."""

    def __init__(self) -> None:
        self._by_token: dict[str, set[LiveConnection]] = {}
        self._all: set[LiveConnection] = set()
        self.shutting_down = False

    def add(self, conn: LiveConnection) -> None:
        self._all.add(conn)
        self._by_token.setdefault(conn.token_hash, set()).add(conn)

    def remove(self, conn: LiveConnection) -> None:
        self._all.discard(conn)
        conns = self._by_token.get(conn.token_hash)
        if conns is not None:
            conns.discard(conn)
            if not conns:
                del self._by_token[conn.token_hash]

    def __len__(self) -> int:
        return len(self._all)

    def of_user(self, user_id: str) -> list[LiveConnection]:
        return [c for c in self._all if c.user_id == user_id]

    def revoke(self, token_hash: str) -> int:
        """Close every connection opened with the token (4401); returns how many."""
        conns = list(self._by_token.get(token_hash, ()))
        for conn in conns:
            conn.request_close(4401)
        return len(conns)

    async def close_all(self, code: int = 1001, *, timeout: float = 3.0) -> None:
        """Close everything (server shutdown) and wait, up to ``timeout``, for it to be done."""
        self.shutting_down = True
        conns = list(self._all)
        for conn in conns:
            conn.request_close(code)
        if conns:
            await asyncio.wait(
                [asyncio.ensure_future(c.wait_closed()) for c in conns], timeout=timeout
            )
