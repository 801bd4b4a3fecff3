"""Log correlation: every record of tenet carries user, thread and run ids when known.

Ids come from an explicit ``extra=`` first and otherwise from the contextvar
copy of the :class:`~tenet.context.RunContext` (set by the engine while a run
executes). The filter only annotates records; it never decides anything.
"""

from __future__ import annotations

import logging

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
