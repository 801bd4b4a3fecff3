"""A thread's title, made from its first input as the web console makes it.

The console lists threads by ``metadata.title``; a thread made without one (by
``tenet run``, or by a ``run`` frame without ``thread_id``) would be listed as
"Untitled thread". Every place that makes a thread for an input titles it here,
so that they all agree with the console (``TITLE_LENGTH`` in ``static/app.js``).
"""

from __future__ import annotations

from typing import Any

#: Characters of the input kept as the title (the console keeps as many).
TITLE_CHARS = 80


def title_metadata(input: Any) -> dict[str, str]:
    """``{"title": ...}`` for a thread whose first input is ``input``; ``{}`` for no text."""
    if not isinstance(input, str) or not input.strip():
        return {}
    return {"title": input.strip()[:TITLE_CHARS]}
