"""Sockets not yet authenticated, counted per client address.

Before its credential is checked a socket belongs to no user, so no per-user
limit applies to it; yet it holds a connection, a task and a read buffer. One
address may therefore hold at most ``TENET_WS_MAX_UNAUTHENTICATED`` sockets
waiting for an ``auth`` frame at a time, each for at most
``TENET_WS_AUTH_TIMEOUT_S`` (the frame limit, ``TENET_WS_MAX_FRAME_BYTES``, is
the transport's and bounds what each may send). The address is the peer's as uvicorn reports it (behind a proxy,
the forwarded one when uvicorn trusts that proxy).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager


class PendingSockets:
    """Counts of unauthenticated sockets per address; the map holds only non-zero counts."""

    __slots__ = ("_counts",)

    def __init__(self) -> None:
        self._counts: dict[str, int] = {}

    def __len__(self) -> int:
        return sum(self._counts.values())

    @contextmanager
    def admit(self, address: str, limit: int | None) -> Iterator[bool]:
        """Yield whether a socket from ``address`` may authenticate now; counted while inside.

        ``limit`` None: not counted (a socket with an ``Authorization`` header is
        authenticated at once, by one lookup, and never waits for a frame).
        """
        if limit is None:
            yield True
            return
        count = self._counts.get(address, 0)
        if count >= limit:
            yield False
            return
        self._counts[address] = count + 1
        try:
            yield True
        finally:
            left = self._counts[address] - 1
            if left:
                self._counts[address] = left
            else:
                del self._counts[address]
