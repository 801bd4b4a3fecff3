"""The errors tenet reports to callers.

Each carries the protocol's error ``code`` and HTTP status, so the server can turn
any of them into the one error body of PROTOCOL.md without a lookup table, and
the engine and store can raise them without knowing about HTTP.
"""

from __future__ import annotations


class TenetError(Exception):
    """Base class: a failure the caller should see, with a protocol error code."""

    code = "internal"
    status = 500

    def __init__(self, message: str = "") -> None:
        super().__init__(message or self.code)
        self.message = message or self.code


class NotFound(TenetError):
    """Missing, or not the caller's: the two are indistinguishable on purpose."""

    code = "not_found"
    status = 404

    def __init__(self, message: str = "not found") -> None:
        super().__init__(message)


class Unauthorized(TenetError):
    code = "unauthorized"
    status = 401


class Invalid(TenetError):
    code = "invalid"
    status = 422


class TooLarge(TenetError):
    code = "too_large"
    status = 413


class RateLimited(TenetError):
    code = "rate_limited"
    status = 429

    def __init__(self, message: str = "rate limited", retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


def queue_full(limit: int) -> RateLimited:
    """The answer to a run over the user's queue limit (the engine's and the store's check)."""
    return RateLimited(f"too many queued runs (at most {limit} per user)", retry_after=1.0)


class QuotaExceeded(RateLimited):
    """The user has used up the day's tokens (``TENET_USER_TOKENS_PER_DAY``)."""

    code = "quota_exceeded"


class Conflict(TenetError):
    code = "conflict"
    status = 409


class Unavailable(TenetError):
    code = "unavailable"
    status = 503
