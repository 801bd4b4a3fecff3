"""The request rules OpenAI's chat completions enforce with a 400, for the test endpoint.

A real endpoint rejects a conversation that breaks the tool-call pairing or puts
a non-string where a string belongs; the fake one used by the tests must too, or
a history that would fail against OpenAI would pass here.
"""

from __future__ import annotations

from typing import Any


def chat_request_problem(body: dict[str, Any]) -> str | None:
    """What OpenAI would answer 400 about in this request's ``messages``, or None."""
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return "'messages' must be a non-empty array"
    open_calls: list[str] = []  # calls of the latest assistant message not yet answered
    for i, m in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(m, dict):
            return f"{where}: must be an object"
        role = m.get("role")
        if role != "tool" and open_calls:
            return (
                "An assistant message with 'tool_calls' must be followed by tool messages "
                f"responding to each 'tool_call_id'. The following tool_call_ids did not have "
                f"response messages: {', '.join(open_calls)}"
            )
        if role in ("system", "user"):
            if not isinstance(m.get("content"), str):
                return f"{where}.content: expected a string"
        elif role == "assistant":
            content = m.get("content")
            calls = m.get("tool_calls")
            if content is not None and not isinstance(content, str):
                return f"{where}.content: expected a string or null"
            if calls is not None:
                if not isinstance(calls, list) or not calls:
                    return f"{where}.tool_calls: expected a non-empty array"
                for call in calls:
                    function = call.get("function") if isinstance(call, dict) else None
                    if (
                        not isinstance(call.get("id"), str)
                        or call.get("type") != "function"
                        or not isinstance(function, dict)
                        or not isinstance(function.get("name"), str)
                        or not isinstance(function.get("arguments"), str)
                    ):
                        return f"{where}.tool_calls: malformed call {call!r}"
                    open_calls.append(call["id"])
            elif content is None:
                return f"{where}: an assistant message needs content or tool_calls"
        elif role == "tool":
            call_id = m.get("tool_call_id")
            if call_id not in open_calls:
                return (
                    f"Invalid parameter: {where} with role 'tool' must be a response to a "
                    "preceeding message with 'tool_calls'."
                )
            open_calls.remove(call_id)
            if not isinstance(m.get("content"), str):
                return f"{where}.content: expected a string"
        else:
            return f"{where}.role: unknown role {role!r}"
    if open_calls:
        return (
            "An assistant message with 'tool_calls' must be followed by tool messages responding "
            f"to each 'tool_call_id'. The following tool_call_ids did not have response "
            f"messages: {', '.join(open_calls)}"
        )
    return None
