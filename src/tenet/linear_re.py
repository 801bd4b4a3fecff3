"""Regular expressions whose cost is linear in the text they read.

A pattern applied to text a user controls (a run's input, a model's output, a
log line that quotes a frame) runs on the shared event loop: with a
backtracking engine such as :mod:`re`, one crafted input of the maximum length
can hold the loop for seconds to minutes (``\\d+(\\s*[-+]\\s*\\d+)+`` searched
over 32,000 digits is quadratic). RE2 (``google-re2``) builds an automaton
instead: every search costs O(len(pattern) * len(text)), whatever the text.

RE2 has no back-references and no look-around; flags are written inline
(``(?i)``, ``(?s)``). The compiled object answers ``match``, ``search``,
``fullmatch``, ``sub`` and ``finditer`` like :mod:`re`'s.
"""

from __future__ import annotations

from typing import Any

import re2

_OPTIONS = re2.Options()
#: The automaton's memory, per pattern (bytes): ample for the short patterns tenet uses.
_OPTIONS.max_mem = 8 << 20


def compile(pattern: str) -> Any:
    """Compile ``pattern`` for linear-time matching.

    Raises ``re2.error`` at import time for a construct RE2 cannot run in linear
    time (a back-reference, a look-around), so no such pattern ever reaches user text.
    """
    return re2.compile(pattern, _OPTIONS)
