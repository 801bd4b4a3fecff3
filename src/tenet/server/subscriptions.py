"""How many threads one socket may follow (``TENET_WS_MAX_SUBSCRIPTIONS``).

Each followed thread holds a cursor and a place in the bus's routing table, and
each ``subscribe`` replays stored events (paged, paced by the client's reads);
without a bound one socket could hold any number of them. An explicit
``subscribe`` over the bound is refused; a ``run`` on a new thread instead drops
the socket's oldest subscription (the client gets ``unsubscribed`` for it and
can ``subscribe`` with ``after`` again), so a client that runs thread after
thread on one socket never has to manage the bound itself.
"""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any

from ..errors import RateLimited


def check_room(count: int, limit: int) -> None:
    """Raise ``RateLimited`` when a socket following ``count`` threads may follow no more."""
    if count >= limit:
        raise RateLimited(f"a socket may follow at most {limit} threads; unsubscribe one first")


def make_room(cursors: MutableMapping[str, Any], limit: int) -> list[str]:
    """Remove the oldest followed threads until one more fits; returns their ids, oldest first.

    ``cursors`` is in subscription order (a dict keeps insertion order).
    """
    dropped: list[str] = []
    while len(cursors) >= limit:
        oldest = next(iter(cursors))
        del cursors[oldest]
        dropped.append(oldest)
    return dropped
