"""The errors tenet reports to callers, all in one place.

Each carries the protocol's error ``code`` and HTTP status, so the server can turn
any of them into the one error body of PROTOCOL.md without a lookup table, and
the engine and store can raise them without knowing about HTTP. The errors of a
run (:class:`AgentFailed`, :class:`ToolFailed`, :class:`DepthExceeded`,
:class:`ModelError`) are reported in its events instead: their ``code`` is the one
of the ``agent_error`` or ``tool_completed`` event's ``error``. This module is at
the bottom of the package's layers, so every layer can raise and catch them.
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


class SecretsDisabled(Unavailable):
    """Secrets cannot be stored: the server has no ``TENET_SECRET_KEY``."""

    code = "secrets_disabled"


# The errors of a run: reported in its events (``error: {"code", "message"}``). -----------


class AgentFailed(TenetError):
    """An agent could not finish; ``code`` is what ``agent_error`` reports.

    Codes tenet raises: ``max_steps`` (no answer within the agent's steps),
    ``unknown_agent`` (delegation to a name not registered), ``delegation_failed``
    (a delegated agent raised something else), ``nondeterministic``
    (:class:`Nondeterministic`).
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class Nondeterministic(AgentFailed):
    """A flow resumed after waiting for a person did not repeat the calls it made before.

    A waiting run resumes by running its flow again with what it already received
    replayed (``tenet.journal``): the flow must make the same calls, in the same
    order, between its awaits. Raised instead of running anything a second time.
    """

    def __init__(self, message: str) -> None:
        super().__init__("nondeterministic", message)


class ToolFailed(TenetError):
    """A tool call ended without a result; ``code`` says why (as shown to the model).

    Codes tenet raises: ``unknown_tool``, ``invalid_arguments``, ``timeout``,
    ``tool_error`` (the tool raised), ``declined`` (the user denied the call its
    approval, or nobody approved it in time), or the code of the :class:`TenetError` the tool
    raised; a tool may raise its own code.
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code

    def as_error(self) -> dict[str, str]:
        """The ``error`` of the ``tool_completed`` event."""
        return {"code": self.code, "message": self.message}


class DepthExceeded(TenetError):
    """Delegation went deeper than ``tenet.context.MAX_DEPTH`` (usually a delegation cycle)."""

    code = "depth_exceeded"


class ModelError(TenetError):
    """The model endpoint failed; the run that asked ends with ``agent_error``."""

    code = "model_error"
    status = 502


class ContextTooLong(ModelError):
    """The endpoint refused the prompt as longer than the model's context."""

    code = "context_length"


class RegistryFrozen(TenetError, RuntimeError):
    """An agent was registered after the registry was frozen: a start-up mistake of the
    application's code, never a caller's, so it reports ``internal``."""
