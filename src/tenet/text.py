"""Making text valid Unicode before it is stored.

Python strings may hold UTF-16 surrogates (U+D800 to U+DFFF) that UTF-8 cannot
encode: a JSON ``"\\ud83d"`` decoded by a lenient parser, or an emoji a model
or a custom agent streams as its two halves in consecutive pieces. Stored or
sent as is, such text fails serialization and would fail the run. So text from
models, tools and agents is repaired before it is stored: two halves that form
a pair, in one string or split across consecutive streamed pieces
(:class:`HalfJoiner`), are joined into their character; a half without its
partner is replaced with U+FFFD (the replacement character). Text from clients
is refused instead (422 / ``invalid``): see ``server/errors.py``.
"""

from __future__ import annotations

import re
from typing import Any

#: U+FFFD, what an unpaired surrogate becomes.
REPLACEMENT = "\ufffd"
_SURROGATE = re.compile("[\ud800-\udfff]")
#: A client's JSON text escaping a surrogate (``\\ud83d``), the only way one reaches a body.
ESCAPED_SURROGATE = re.compile(rb"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")


def has_surrogates(text: str) -> bool:
    return _SURROGATE.search(text) is not None


def repair(text: str) -> str:
    """``text`` with surrogate pairs joined and unpaired halves replaced with U+FFFD."""
    if not has_surrogates(text):
        return text
    return text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")


def repair_value(value: Any) -> Any:
    """A JSON-like value (dicts, lists, strings, keys included) with every string repaired."""
    if isinstance(value, str):
        return repair(value)
    if isinstance(value, dict):
        return {(repair(k) if isinstance(k, str) else k): repair_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [repair_value(v) for v in value]
    return value


def _is_high(char: str) -> bool:
    return "\ud800" <= char <= "\udbff"


class HalfJoiner:
    """Joins surrogate halves split across the streamed pieces of one execution.

    A piece that ends with a high (leading) surrogate keeps it back until the next
    piece of the same execution: if that starts with the low half, the pair becomes
    one character; otherwise the half is unpaired and becomes U+FFFD. Keyed by
    execution id, one per run (never shared between users).
    """

    __slots__ = ("_held",)

    def __init__(self) -> None:
        self._held: dict[str, str] = {}

    def join(self, key: str, piece: str) -> str:
        """The text of ``piece`` that can be emitted now, repaired (may be empty)."""
        held = self._held.pop(key, None)
        if held is not None:
            piece = held + piece
        if piece and _is_high(piece[-1]):
            self._held[key] = piece[-1]
            piece = piece[:-1]
        return repair(piece)

    def rest(self, key: str) -> str:
        """What is still held for ``key`` (an unpaired half: U+FFFD), and forget it."""
        return REPLACEMENT if self._held.pop(key, None) is not None else ""
