"""Query parameters given once: a single-valued parameter repeated is 422, not its last value.

Starlette keeps every value of a repeated query parameter and FastAPI hands a
parameter declared as one value the last of them, so ``GET
/v1/runs?status=queued&status=running`` silently meant ``status=running``, and a
client that believed it had asked for two statuses got one. Every HTTP route of
the API is a :class:`OnceQueryRoute` (its router's ``route_class``): a
single-valued query parameter it declares, given more than once, is answered 422
``invalid`` naming it, before any value is read (before the credential is, as a
malformed request is refused whoever sends it). A parameter declared as a list
may repeat; a parameter the route does not declare is ignored, repeated or not.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Sequence
from collections.abc import Set as AbstractSet
from types import UnionType
from typing import Any, Union, get_args, get_origin

from fastapi import Depends, Request
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute

from ..errors import Invalid

#: Annotations of a parameter that takes several values.
_MANY = (list, set, frozenset, tuple, Sequence, AbstractSet)


def _is_list(annotation: Any) -> bool:
    """Whether a query parameter is declared as several values (``list[...] | None`` too)."""
    origin = get_origin(annotation)
    if origin in (Union, UnionType):
        return any(_is_list(arg) for arg in get_args(annotation))
    return annotation in _MANY or origin in _MANY


def _query_fields(dependant: Dependant) -> list[Any]:
    """The query parameters of a route: its own and its dependencies'."""
    out: list[Any] = []
    stack = [dependant]
    while stack:
        current = stack.pop()
        out.extend(current.query_params)
        stack.extend(current.dependencies)
    return out


class OnceQueryRoute(APIRoute):
    """An ``APIRoute`` that refuses its single-valued query parameters given twice (422)."""

    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        dependencies = list(kwargs.pop("dependencies", None) or ())
        self._single: frozenset[str] | None = None
        super().__init__(
            path, endpoint, dependencies=[Depends(self._given_once()), *dependencies], **kwargs
        )

    def single_valued(self) -> frozenset[str]:
        """The names (as sent) of the query parameters this route takes one value of."""
        if self._single is None:
            fields = _query_fields(self.dependant)
            self._single = frozenset(
                f.alias for f in fields if not _is_list(f.field_info.annotation)
            )
        return self._single

    def _given_once(self) -> Callable[[Request], Coroutine[Any, Any, None]]:
        async def given_once(request: Request) -> None:
            items = request.query_params.multi_items()
            if len(items) < 2:
                return
            seen: set[str] = set()
            for name, _ in items:
                if name in seen and name in self.single_valued():
                    raise Invalid(f"query parameter {name!r} must be given once")
                seen.add(name)

        return given_once
