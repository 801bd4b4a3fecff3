"""What the wire can carry: a value that serializes to JSON as every event does.

Events are serialized once, by the event writer, in a batch shared by every
user's runs; a value that cannot be serialized there (an integer wider than
64 bits, an object orjson does not know) would fail the whole batch. So each
value a user's code produces is checked where it enters an event, and a value
the wire can't carry becomes the error of that tool call or that run alone.
"""

from __future__ import annotations

from typing import Any

import orjson

from .errors import Invalid, TenetError
from .text import repair_value


class Uncarriable(TenetError):
    """A value JSON can't carry; ``code`` ``unserializable``."""

    code = "unserializable"
    status = 422


def check_carriable(value: Any, what: str = "value") -> None:
    """Raise :class:`Uncarriable` unless ``value`` serializes as an event field would.

    orjson carries integers of at most 64 bits, str keys, and JSON's own types;
    the check costs one serialization (microseconds for an event's fields).
    """
    try:
        orjson.dumps(value)
    except (TypeError, orjson.JSONEncodeError) as exc:
        raise Uncarriable(f"the {what} cannot be sent: {exc}") from None


def carriable(value: Any, what: str = "value") -> Any:
    """``value``, or a copy with its lone UTF-16 surrogates replaced by U+FFFD
    (:func:`tenet.text.repair_value`) when that is all that kept it off the wire.

    Raises :class:`Uncarriable` for anything else JSON can't carry. Text is repaired,
    not refused: a model or tool that splits an emoji into halves loses one character,
    never its run.
    """
    try:
        check_carriable(value, what)
    except Uncarriable:
        value = repair_value(value)
        check_carriable(value, what)
    return value


def check_storable(value: Any, what: str) -> None:
    """``Invalid`` (422) for a value a client sent that JSON allows but the store and the
    events can't hold: an integer wider than 64 bits, lists or objects nested over 254
    levels. Called before anything of the request is stored, so nothing is left behind."""
    try:
        orjson.dumps(value)
    except (TypeError, orjson.JSONEncodeError) as exc:
        raise Invalid(
            f"{what} cannot be stored ({exc}): integers are limited to 64 bits, "
            "nesting to 254 levels"
        ) from None
