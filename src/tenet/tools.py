"""Tools: typed Python functions an agent can call.

``@tool`` turns a typed function into a :class:`Tool` whose JSON schema comes
from its signature (through pydantic), so the model sees exactly the arguments
the function takes and every call is validated against them before it runs. A
function whose first parameter is annotated ``RunContext`` receives the calling
execution's context: that is how a tool reaches per-user state (notes) without
ever being handed a user id.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
from collections.abc import Awaitable, Callable
from typing import Any, TypeAlias, get_type_hints, overload

import orjson
from pydantic import BaseModel, ConfigDict, ValidationError, create_model
from pydantic_core import to_jsonable_python

from . import linear_re
from .context import RunContext
from .errors import TenetError, ToolFailed
from .tool_threads import ToolThreads
from .wire_value import Uncarriable, carriable

#: Whether a tool's call waits for a person's yes: always, never, or as a policy
#: ``(ctx, arguments) -> bool`` decides per call.
ApprovalPolicy: TypeAlias = bool | Callable[[RunContext, dict[str, Any]], bool]

#: reST markup a docstring may hold: ``:role:`~a.b.C```, ``literal``, `text`.
_ROLE = linear_re.compile(r":[\w:.-]+:`~?([^`]*?)`")
_LITERAL = linear_re.compile(r"``(.+?)``|`([^`]+)`")


def describe(fn: Callable[..., Any]) -> str:
    """A tool's description from its docstring's first paragraph, as plain text.

    It is shown to users (``GET /v1/agents``, the web console) and to the model, so
    reST markup is taken out (``(2 + 3) * 4`` reads ``(2 + 3) * 4``; a role such as
    ``:class:`~tenet.RunContext``` reads ``RunContext``) and the lines are joined.
    """
    doc = inspect.getdoc(fn) or ""
    text = " ".join(doc.split("\n\n")[0].split())
    text = _ROLE.sub(
        lambda m: m.group(1).rsplit(".", 1)[-1] if "~" in m.group(0) else m.group(1), text
    )
    return _LITERAL.sub(lambda m: m.group(1) or m.group(2), text)


class Tool:
    """A callable the model may use, with its JSON schema and argument validation."""

    def __init__(
        self,
        fn: Callable[..., Any],
        *,
        name: str | None = None,
        description: str | None = None,
        timeout: float | None = None,
        requires_approval: ApprovalPolicy = False,
    ) -> None:
        self.fn = fn
        #: Whether a call waits for a person's yes before it runs: always, never, or as a
        #: policy decides per call (``(ctx, arguments) -> bool``).
        self.requires_approval = requires_approval
        self.name = name or fn.__name__
        self.description = description if description is not None else describe(fn)
        self.timeout = timeout
        self.is_async = inspect.iscoroutinefunction(fn)
        signature = inspect.signature(fn)
        hints = get_type_hints(fn)
        params = list(signature.parameters.values())
        self.takes_context = bool(params) and hints.get(params[0].name) is RunContext
        if self.takes_context:
            params = params[1:]
        fields: dict[str, Any] = {}
        for p in params:
            if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
                raise TypeError(f"tool {self.name!r}: *args and **kwargs are not supported")
            annotation = hints.get(p.name, Any)
            default = ... if p.default is inspect.Parameter.empty else p.default
            fields[p.name] = (annotation, default)
        self._args_model: type[BaseModel] = create_model(  # type: ignore[call-overload]
            f"{self.name}_arguments", __config__=ConfigDict(extra="forbid"), **fields
        )
        schema = self._args_model.model_json_schema()
        schema.pop("title", None)
        for prop in schema.get("properties", {}).values():
            prop.pop("title", None)
        schema.setdefault("properties", {})
        self.parameters: dict[str, Any] = schema

    def needs_approval(self, ctx: RunContext, arguments: dict[str, Any]) -> bool:
        """Whether this call waits for a person's yes (a policy that fails says yes)."""
        policy = self.requires_approval
        if not callable(policy):
            return bool(policy)
        try:
            return bool(policy(ctx, arguments))
        except Exception:
            return True

    def spec(self) -> dict[str, Any]:
        """The tool as listed by ``GET /v1/agents`` and offered to a model."""
        return {"name": self.name, "description": self.description, "parameters": self.parameters}

    def validate(self, arguments: dict[str, Any]) -> dict[str, Any]:
        """Checked, coerced arguments; raises ``ToolFailed('invalid_arguments')``."""
        if not isinstance(arguments, dict):
            raise ToolFailed("invalid_arguments", "arguments must be an object")
        try:
            model = self._args_model.model_validate(arguments)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or 'arguments'}: {e['msg']}"
                for e in exc.errors()
            )
            raise ToolFailed("invalid_arguments", problems) from None
        return {name: getattr(model, name) for name in type(model).model_fields}

    async def invoke(
        self,
        ctx: RunContext,
        arguments: dict[str, Any],
        *,
        timeout: float,
        threads: ToolThreads | None = None,
    ) -> Any:
        """Validate, call with a timeout, and return a JSON-ready result.

        A synchronous function runs on ``threads`` (as the context's user, within the
        user's bound; see :mod:`tenet.tool_threads`), else on asyncio's default pool.
        """
        values = self.validate(arguments)
        args: tuple[Any, ...] = (ctx,) if self.takes_context else ()
        limit = self.timeout if self.timeout is not None else timeout
        try:
            async with asyncio.timeout(limit):
                if self.is_async:
                    result = await self.fn(*args, **values)
                else:
                    call = functools.partial(self.fn, *args, **values)
                    if threads is not None:
                        result = await threads.run(ctx.user_id, call)
                    else:
                        result = await asyncio.to_thread(call)
        except TimeoutError:
            raise ToolFailed("timeout", f"tool {self.name!r} took longer than {limit:g}s") from None
        except ToolFailed:
            raise
        except TenetError as exc:
            raise ToolFailed(exc.code, exc.message) from exc
        except Exception as exc:
            raise ToolFailed("tool_error", f"{type(exc).__name__}: {exc}") from exc
        result = to_jsonable_python(result, fallback=str)
        try:
            result = carriable(result, f"result of {self.name!r}")
        except Uncarriable as exc:
            raise ToolFailed(exc.code, exc.message) from None
        return result

    def __repr__(self) -> str:
        return f"Tool({self.name!r})"


@overload
def tool(fn: Callable[..., Awaitable[Any]], /) -> Tool: ...
@overload
def tool(
    *,
    name: str | None = None,
    description: str | None = None,
    timeout: float | None = None,
    requires_approval: ApprovalPolicy = False,
) -> Callable[[Callable[..., Any]], Tool]: ...
def tool(
    fn: Callable[..., Any] | None = None,
    /,
    *,
    name: str | None = None,
    description: str | None = None,
    timeout: float | None = None,
    requires_approval: ApprovalPolicy = False,
) -> Tool | Callable[[Callable[..., Any]], Tool]:
    """Make a tool of a typed function: ``@tool`` or ``@tool(name=..., timeout=...)``.

    ``requires_approval``: True, or a policy ``(ctx, arguments) -> bool``, makes a call
    wait for the user's yes (``approval_requested``) before it runs.
    """

    def wrap(f: Callable[..., Any]) -> Tool:
        return Tool(
            f,
            name=name,
            description=description,
            timeout=timeout,
            requires_approval=requires_approval,
        )

    return wrap(fn) if fn is not None else wrap


# A tool's result as a model reads it -----------------------------------------------------


def cut(text: str, max_chars: int) -> str:
    """``text``, or its first ``max_chars`` characters and a marker saying what was left out."""
    if len(text) <= max_chars:
        return text
    return text[:max_chars] + f"\n[cut: {len(text) - max_chars} more characters not shown]"


def tool_content(ok: bool, result: Any, error: Any, max_chars: int) -> str:
    """A tool's result as a ``tool`` message's content: the same text live and from history."""
    value = result if ok else {"error": error}
    return cut(orjson.dumps(value).decode(), max_chars)
