"""A model reply's answer as ``message_delta`` events: as it streams, but bounded in number.

Every ``message_delta`` is a whole event: made, stored, published and sent to
each subscriber (tens of microseconds of the event loop, shared by every user).
A model streams its answer in pieces, and how many pieces is in the user's hands:
the scripted model answers word by word and echoes its input, so one input of
``TENET_MAX_INPUT_CHARS`` made of one-letter words became thousands of events,
half a second of the loop for one run; a real model asked for a long answer
streams one piece per token.

So :class:`DeltaStream` passes the first ``TENET_DELTA_BURST`` pieces of a reply
through as they come (what a person reads, and every reply of the example
agents, streams exactly as before), and after that sends at most one
``message_delta`` per ``TENET_DELTA_INTERVAL_MS``: a piece that arrives sooner
than that after the last event is held and goes out joined to the next, or when
the reply ends. A model streaming slower than one piece per interval (a person's
reading speed is far slower) is not changed at all; one streaming faster has its
pieces joined, none lost or reordered. The event count of one reply is then at
most ``burst + duration / interval + 1``, whatever the input.

Held text waits for the next piece that comes after the interval, or the end of
the reply (a reasoning step of the model sends it first, so events stay in
order); a model that pauses mid-answer for long therefore shows the pieces of
its last interval late, never out of order.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .context import RunContext
    from .models.base import Callback, ChatMessage, ChatModel, ModelReply

#: Pieces of one reply passed through as they come, before they are joined.
DEFAULT_BURST = 32
#: After the burst, the least time between two ``message_delta`` events (seconds).
DEFAULT_INTERVAL_S = 0.02


class DeltaStream:
    """The ``on_delta`` of one model call: passes pieces to ``say``, joining a fast stream.

    ``say`` is awaited once per event with the text of one or more pieces, in order;
    :meth:`flush` sends what is held (call it before any other event of the run and
    when the reply ends).
    """

    __slots__ = ("_burst", "_clock", "_held", "_interval_s", "_last", "_say", "pieces", "sent")

    def __init__(
        self,
        say: Callable[[str], Awaitable[None]],
        *,
        burst: int = DEFAULT_BURST,
        interval_s: float = DEFAULT_INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._say = say
        self._burst = burst
        self._interval_s = interval_s
        self._clock = clock
        self._held: list[str] = []
        self._last = float("-inf")
        #: Pieces the model streamed, and ``message_delta`` events sent for them.
        self.pieces = 0
        self.sent = 0

    async def add(self, text: str) -> None:
        """One piece of the answer: sent now, or held to join the next (see the module doc)."""
        if not text:
            return
        self.pieces += 1
        self._held.append(text)
        if self.pieces <= self._burst or self._clock() - self._last >= self._interval_s:
            await self.flush()

    async def flush(self) -> None:
        """Send what is held as one ``message_delta`` (nothing when nothing is)."""
        if not self._held:
            return
        text = self._held[0] if len(self._held) == 1 else "".join(self._held)
        self._held.clear()
        self._last = self._clock()
        self.sent += 1
        await self._say(text)


async def stream_reply(
    ctx: RunContext,
    model: ChatModel,
    messages: list[ChatMessage],
    tools: list[dict[str, Any]],
    *,
    on_delta: Callback | None = ...,  # type: ignore[assignment]
    on_reasoning: Callback | None = ...,  # type: ignore[assignment]
    burst: int = DEFAULT_BURST,
    interval_s: float = DEFAULT_INTERVAL_S,
) -> ModelReply:
    """``model.complete`` with its answer streamed through a :class:`DeltaStream` of ``ctx``.

    A reasoning step sends the held answer text first; a failed call still sends
    what it had streamed (as before); a cancelled one does not (the run is ending).
    A caller that gives its own ``on_delta`` (a custom flow calling its model
    directly; None: not streamed) gets the model's pieces as they come, on its own
    callbacks, and the execution emits nothing for them.
    """
    if on_delta is not ...:
        return await model.complete(
            messages,
            tools,
            on_delta=on_delta,
            on_reasoning=None if on_reasoning is ... else on_reasoning,
        )
    deltas = DeltaStream(ctx.say, burst=burst, interval_s=interval_s)

    async def reasoning(text: str) -> None:
        await deltas.flush()
        await ctx.think(text)

    try:
        reply = await model.complete(messages, tools, on_delta=deltas.add, on_reasoning=reasoning)
    except Exception:
        await deltas.flush()
        raise
    await deltas.flush()
    return reply
