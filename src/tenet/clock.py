"""Timestamps as the protocol and the store write them, made cheaply.

Every event is stamped when it is made, thousands of times a second, and each
stamp is written twice: on the wire (RFC 3339 with milliseconds) and in the
SQLite store (the text SQLAlchemy writes for a UTC datetime, with
microseconds). Going through :class:`datetime` costs a few microseconds per
stamp; here a stamp is an integer of microseconds, and the date and time of its
second are formatted once per second (a cache of the last few seconds, which
holds no user data).
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from functools import lru_cache


def now_us() -> int:
    """The current time in whole microseconds since the epoch."""
    return time.time_ns() // 1_000


@lru_cache(maxsize=4)
def _second(seconds: int) -> tuple[str, str]:
    """``YYYY-MM-DD`` and ``HH:MM:SS`` of one second (UTC)."""
    t = time.gmtime(seconds)
    return (
        f"{t.tm_year:04d}-{t.tm_mon:02d}-{t.tm_mday:02d}",
        f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d}",
    )


#: The last stamp made and its text, as one tuple (read and replaced whole, so
#: threads never see half of it): under load tens of events share a millisecond.
_last_wire: tuple[int, str] = (-1, "")


def wire_time(us: int) -> str:
    """RFC 3339 UTC with milliseconds: ``2026-11-29T06:00:00.123Z``."""
    global _last_wire
    ms = us // 1_000
    last_ms, text = _last_wire
    if ms == last_ms:
        return text
    seconds, millis = divmod(ms, 1_000)
    day, clock = _second(seconds)
    text = f"{day}T{clock}.{millis:03d}Z"
    _last_wire = (ms, text)
    return text


def db_time(us: int) -> str:
    """The text SQLAlchemy stores for a UTC datetime on SQLite: ``2026-11-29 06:00:00.123456``."""
    seconds, fraction = divmod(us, 1_000_000)
    day, clock = _second(seconds)
    return f"{day} {clock}.{fraction:06d}"


def to_datetime(us: int) -> datetime:
    """The aware UTC datetime of a stamp (for the stores that take datetimes)."""
    return datetime.fromtimestamp(us / 1_000_000, UTC)


def utc_now() -> datetime:
    """The current time as an aware UTC datetime (for the ORM's rows)."""
    return datetime.now(UTC)


def format_time(value: datetime | None) -> str | None:
    """RFC 3339 UTC with milliseconds, as the protocol wants: ``2026-11-29T06:00:00.123Z``."""
    if value is None:
        return None
    if value.tzinfo is not None:
        value = value.astimezone(UTC).replace(tzinfo=None)
    return value.isoformat(timespec="milliseconds") + "Z"
