"""Log correlation: every record of tenet carries user, thread and run ids when known.

Ids come from an explicit ``extra=`` first and otherwise from the contextvar
copy of the :class:`~tenet.context.RunContext` (set by the engine while a run
executes). The filter only annotates records; it never decides anything.
"""

from __future__ import annotations

import logging

from .. import linear_re
from ..context import current_context

FIELDS = ("user_id", "thread_id", "run_id")
FORMAT = "%(asctime)s %(levelname)s %(name)s [user=%(user_id)s thread=%(thread_id)s run=%(run_id)s] %(message)s"


class ContextFilter(logging.Filter):
    """Adds ``user_id``, ``thread_id`` and ``run_id`` to each record ("-" when unknown)."""

    def filter(self, record: logging.LogRecord) -> bool:
        ctx = current_context.get()
        for name in FIELDS:
            if getattr(record, name, None) is None:
                value = getattr(ctx, name, None) if ctx is not None else None
                setattr(record, name, value or "-")
        return True


def configure_logging(level: str = "INFO") -> None:
    """Route tenet's logs through one handler whose lines carry the correlation ids."""
    handler = logging.StreamHandler()
    handler.addFilter(ContextFilter())
    handler.setFormatter(logging.Formatter(FORMAT))
    logger = logging.getLogger("tenet")
    if not any(isinstance(f, ContextFilter) for h in logger.handlers for f in h.filters):
        logger.addHandler(handler)
    logger.setLevel(level.upper())
    logger.propagate = False


class RedactTokens(logging.Filter):
    """Masks credentials in a record's text: ``Bearer <anything>`` and tenet tokens (``tnt_...``).

    Tokens are never logged by tenet itself; this guards what libraries log at
    DEBUG (uvicorn's WebSocket layer prints request headers and frames).
    """

    _PATTERNS = (
        (linear_re.compile(r"(?i)(bearer\s+)[^\s'\",}]+"), r"\1[redacted]"),
        (linear_re.compile(r"tnt_[A-Za-z0-9_\-]{4,}"), "tnt_[redacted]"),
    )

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple) and any(map(_is_frame, record.args)):
            # A WebSocket frame's payload is never logged: an ``auth`` frame holds a token,
            # and the library shortens long payloads to head...tail, which no pattern can
            # tell apart from other text. Its kind and size remain.
            record.args = tuple(_frame_summary(a) if _is_frame(a) else a for a in record.args)
        try:
            text = record.getMessage()
        except Exception:  # a malformed record is left to the handler to report
            return True
        redacted = text
        for pattern, replacement in self._PATTERNS:
            redacted = pattern.sub(replacement, redacted)
        if redacted != text:
            record.msg, record.args = redacted, None
        return True


def _is_frame(value: object) -> bool:
    """A frame of the ``websockets`` library (its legacy and current classes alike)."""
    return hasattr(value, "opcode") and hasattr(value, "data") and hasattr(value, "fin")


def _frame_summary(frame: object) -> str:
    opcode = getattr(frame, "opcode", None)
    size = len(getattr(frame, "data", b"") or b"")
    return f"{getattr(opcode, 'name', opcode)} [{size} bytes, payload not logged]"


def redact_library_logs() -> None:
    """Put :class:`RedactTokens` on the loggers and handlers that may see credentials."""
    redact = RedactTokens()
    for name in ("", "tenet", "uvicorn", "uvicorn.error", "uvicorn.access", "websockets"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, RedactTokens) for f in logger.filters):
            logger.addFilter(redact)
        for handler in logger.handlers:
            if not any(isinstance(f, RedactTokens) for f in handler.filters):
                handler.addFilter(redact)
