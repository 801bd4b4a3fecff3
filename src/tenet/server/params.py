"""Range checks for every number a client sends, before it reaches a driver.

A number from a client (a query parameter, a header, a frame field) is checked
here against what the store can hold: every stored counter is a signed 64-bit
integer on every backend, so a cursor is 0 to :data:`SEQ_MAX`. A number outside
its range is a client error (422 ``invalid`` over HTTP, an ``invalid`` error
frame over WebSocket), never a driver overflow answered with a 500, and never a
stream that silently delivers nothing.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Query

from ..errors import Invalid

#: The largest ``seq`` (and any stored counter): the signed 64-bit maximum.
SEQ_MAX = 2**63 - 1

#: A cursor in a query string: ``seq`` values after it are returned (422 out of range).
SeqQuery = Annotated[int, Query(ge=0, le=SEQ_MAX)]


def header_seq(value: str | None) -> int | None:
    """A ``Last-Event-ID`` as a seq, or None when absent, malformed or out of range.

    An invalid ``Last-Event-ID`` is ignored (the protocol's rule), so an
    out-of-range one is too: the stream then starts from ``after``.
    """
    if value is None:
        return None
    text = value.strip()
    if not text.isascii() or not text.isdigit() or len(text) > 19:
        return None
    seq = int(text)
    return seq if seq <= SEQ_MAX else None


def frame_seq(value: Any, name: str = "after") -> int:
    """A cursor from a WebSocket frame (absent or null: 0); raises :class:`Invalid`."""
    if value is None:
        return 0
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= SEQ_MAX:
        raise Invalid(f"{name} must be an integer from 0 to {SEQ_MAX}")
    return value
