"""A client's WebSocket frame read as JSON, its numbers exactly as sent.

orjson, which reads every frame, reads an integer beyond 64 bits as a float
(``18446744073709551616`` becomes ``1.8446744073709552e+19``), so a run's
metadata would be stored holding another number than the one sent. HTTP reads
its bodies with the standard library, which keeps the integer, and refuses it
(422 ``invalid``: the store's encoder holds 64 bits). So a frame whose text
holds 19 digits in a row, as any integer beyond 64 bits does, is read again
with the standard library, and every check after sees what the client sent.
The search is linear in the frame (:mod:`tenet.linear_re`); a frame without
such a run of digits, nearly every one, is read once. A number past a double's
range (over 309 digits) is refused by orjson itself: the frame is not read.
"""

from __future__ import annotations

import json
from typing import Any

import orjson

from .. import linear_re

__all__ = ["loads"]

#: Nineteen digits in a row: the shortest an integer beyond 64 bits is written.
_LONG_DIGITS = linear_re.compile(r"\d{19}")


def loads(text: str) -> Any:
    """The frame's JSON value, integers exact.

    Raises ``orjson.JSONDecodeError`` for what orjson does not read (text that is
    not JSON, a number past a double's range). Text orjson has read is strict JSON
    of at most 309-digit numbers, which the standard library reads the same way.
    """
    value = orjson.loads(text)
    if _LONG_DIGITS.search(text) is None:
        return value
    return json.loads(text)
