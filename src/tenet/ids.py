"""Server-made identifiers.

Every ID is a short type prefix and 128 random bits (``run_`` + 22 url-safe
characters). Random rather than sequential so that an ID reveals nothing and can
not be guessed; prefixed so that logs and bug reports are readable and so that a
thread ID passed where a run ID belongs is rejected by validation, not looked up.
"""

from __future__ import annotations

import re
import secrets

PREFIXES = ("usr", "tok", "thr", "msg", "run", "exe", "evt", "not", "con")
_PATTERN = re.compile(r"^(usr|tok|thr|msg|run|exe|evt|not|con)_[A-Za-z0-9_-]{22}$")


def new_id(prefix: str) -> str:
    """A fresh unguessable ID of the given kind."""
    if prefix not in PREFIXES:
        raise ValueError(f"unknown id prefix {prefix!r}")
    return f"{prefix}_{secrets.token_urlsafe(16)}"


def is_valid(value: object, prefix: str | None = None) -> bool:
    """True when ``value`` is shaped like an ID this server made (of ``prefix``, if given)."""
    if not isinstance(value, str) or len(value) != 26:
        return False
    m = _PATTERN.match(value)
    return m is not None and (prefix is None or m.group(1) == prefix)
