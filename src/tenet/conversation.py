"""A thread's conversation for the model, built from its stored events, within a budget.

There is one conversation and it is the stored event stream: a run's input is
its root ``agent_started``, each tool call of its root execution is a
``tool_executing`` with the ``tool_completed`` that answered it, and its answer
is its root ``agent_completed``. This module turns those events into the
chat-completions messages a model is sent. The default agent loop,
``ctx.history()`` and anything else that needs the conversation read it through
here, from the store, on every run; the only thing kept is what cannot change:
a finished run's messages (:class:`TurnCache`), used only for runs the store
has just returned. A run keeps its own turn there as it ends
(:meth:`Conversations.keep_turn`, built from the text it stored), so the next
run of the thread builds none. And a read keeps the thread's newest turns in
the order it took them (:class:`ThreadOrder`), so that the next read asks the
store only for what is newer, and for the mark that proves the order is still
the thread's.

The rules (OpenAI answers 400 to any breach of the first two):

* A ``tool`` message is only ever sent right after the assistant message holding
  its call, and a call only with its result. A call whose result was never
  stored (the run failed or the process died mid-tool) is left out, call and all.
* Runs that failed or were cancelled contribute what they completed: their input
  and their finished tool calls, no answer.
* The budget (``TENET_CONTEXT_TOKENS``) covers the system prompt, the tool specs,
  the current input and the history. The first three always go; then the most
  recent earlier turns that fit, whole, newest first; the first turn that does
  not fit whole goes as its input and answer alone if those fit, and nothing
  older goes at all (oldest dropped first).
* A tool result longer than ``TENET_TOOL_RESULT_MAX_CHARS`` is cut, with a marker
  saying how much was left out, before any model sees it (the stored event keeps
  the whole result).
* Delegated executions' own events are not part of the thread's conversation: a
  delegated agent is given its delegated input, and reads ``ctx.history()`` if
  it wants the thread.
* A call of a client tool (a front-end tool, handed to the run's caller: its
  ``tool_completed`` has ``error.code`` ``client_tool``) is sent with the result
  the caller returned, which the next run stores as its root ``tool_completed``
  for that ``call_id`` (see :func:`client_results_in`). A handed-over call never
  answered is left out like any unanswered call, and so is the empty answer of
  the run that handed calls over. A run that carries client results and no input
  text has no user message of its own: it continues the conversation after them.

Reading is bounded by the budget, not by the thread: events are read newest
first, a page at a time, and reading stops once the budget is spent. What a read
costs, and where it goes, is in ``docs/benchmarks.md`` ("History").
"""

from __future__ import annotations

import math
from collections import OrderedDict, deque
from collections.abc import Sequence
from typing import Any

import orjson

from .models.base import ChatMessage
from .store.history import NEWEST, turn_bodies_between, turn_events_before
from .tools import cut, tool_content

__all__ = ["Conversations", "TokenEstimator", "cut", "tool_content", "turn_messages"]

#: Tokens a message costs beyond its text (role, separators): what OpenAI's own
#: counting guide adds per message, rounded up.
MESSAGE_OVERHEAD_TOKENS = 4
#: The estimate's starting point before any endpoint has reported ``prompt_tokens``.
DEFAULT_CHARS_PER_TOKEN = 3.5
_FIRST_PAGE = 256
#: A read's ``resume`` when nothing older is needed.
_DONE = -2
#: Once the estimate is steady, calibration learns from one call in this many.
CALIBRATE_EVERY = 16
#: A sample this close to the ratio (relative) does not move it.
SETTLED = 0.01
_MAX_PAGE = 1024
#: What a process keeps of finished turns (``TurnCache``) by default, in bytes, and as much
#: again of threads' orders (``TENET_HISTORY_CACHE_BYTES`` is both).
TURN_CACHE_BYTES = 8 * 1024 * 1024
_MAX_HINTS = 65536
#: A kept turn's memory beyond its JSON and sizes: the entry's list, key, ids and dict slot.
_ENTRY_OVERHEAD = 512


class TokenEstimator:
    """Counts tokens as characters divided by a ratio the endpoint keeps calibrating.

    No tokenizer that matches every OpenAI-compatible model can be had offline
    (tiktoken downloads its tables; local models use their own vocabularies), so
    the count is ``ceil(chars / chars_per_token) + 4`` per message. The ratio
    starts at 3.5, below the ~4 characters per token of BPE tokenizers on English
    text, so that the first estimates of prose err high; a model call that
    reports ``usage.prompt_tokens`` moves it a quarter of the way to what that
    call measured (clamped to 1..8; see :meth:`calibrate` for which calls).
    Error bound: once calibrated, within about ±15% for text like what the
    endpoint has already been sent (the ratio is an average: a thread that turns
    from prose to code drifts until recalibrated); before any call, from +15%
    (English prose, counted high) to -45% (code, JSON, non-Latin scripts at
    1.5-2.5 characters per token, counted low). Budget with that in mind: the
    endpoint's own context limit is reported as ``context_length`` when it is
    crossed anyway.

    One estimator serves a process; the ratio is a property of the model's
    tokenizer, not of any user's data.
    """

    __slots__ = ("chars_per_token", "samples", "steady")

    def __init__(self, chars_per_token: float = DEFAULT_CHARS_PER_TOKEN) -> None:
        self.chars_per_token = chars_per_token
        #: Calls offered for calibration so far.
        self.samples = 0
        #: Whether the last sample agreed with the ratio (within 5%).
        self.steady = False

    def tokens(self, chars: int) -> int:
        return math.ceil(chars / self.chars_per_token)

    def message_tokens(self, message: ChatMessage) -> int:
        return self.tokens(message_chars(message)) + MESSAGE_OVERHEAD_TOKENS

    def messages_tokens(self, messages: Sequence[ChatMessage]) -> int:
        ratio = self.chars_per_token
        ceil = math.ceil
        return sum(ceil(message_chars(m) / ratio) for m in messages) + (
            MESSAGE_OVERHEAD_TOKENS * len(messages)
        )

    def calibrate(
        self, messages: Sequence[ChatMessage], tools: Sequence[dict[str, Any]], prompt_tokens: int
    ) -> None:
        """Learn from one call: ``messages`` and ``tools`` were ``prompt_tokens`` to the endpoint.

        The per-message overhead is taken off first, so that the ratio is that of
        the text alone and the estimate stays right for short and long messages alike.
        While the ratio is still moving every call is learnt from; once a sample
        agrees with it (within 5%), one call in 16: the ratio is a property of the
        tokenizer, and counting a long request's characters is not free. A sample
        within 1% leaves the ratio as it is: the estimate is as close as it gets,
        and every move makes the next reads count each kept turn's tokens again.
        """
        self.samples += 1
        if self.steady and self.samples % CALIBRATE_EVERY:
            return
        chars = prompt_chars(messages, tools)
        text_tokens = prompt_tokens - MESSAGE_OVERHEAD_TOKENS * len(messages)
        if chars <= 0 or text_tokens <= 0:
            return
        measured = min(8.0, max(1.0, chars / text_tokens))
        off = abs(measured - self.chars_per_token)
        self.steady = off <= 0.05 * self.chars_per_token
        if off > SETTLED * self.chars_per_token:
            self.chars_per_token += (measured - self.chars_per_token) * 0.25


def message_chars(message: ChatMessage) -> int:
    """The characters of a message that become tokens (content, and any tool calls)."""
    content = message.get("content")
    chars = len(content) if content.__class__ is str else 0
    calls = message.get("tool_calls")
    if calls:
        for call in calls:
            function = call.get("function") or {}
            chars += len(function.get("name") or "") + len(function.get("arguments") or "") + 8
    return chars


def prompt_chars(messages: Sequence[ChatMessage], tools: Sequence[dict[str, Any]]) -> int:
    """The characters of a whole request that become tokens: messages' text and tool specs."""
    chars = sum(message_chars(m) for m in messages)
    return chars + (len(orjson.dumps(list(tools))) if tools else 0)


def call_message(call_id: str, name: str, arguments: Any) -> ChatMessage:
    """The assistant message holding one tool call."""
    return {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": call_id,
                "type": "function",
                "function": {"name": name, "arguments": orjson.dumps(arguments).decode()},
            }
        ],
    }


#: The ``error.code`` of the ``tool_completed`` of a call handed to the run's caller
#: (``tenet.runtime.CLIENT_TOOL_ERROR``).
CLIENT_TOOL_CODE = "client_tool"


def handed_over(event: dict[str, Any]) -> bool:
    """Whether a ``tool_completed`` is the hand-over of a client tool's call (not a result)."""
    error = event.get("error")
    return isinstance(error, dict) and error.get("code") == CLIENT_TOOL_CODE


def client_results_in(events: Sequence[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The results a run carries for calls of earlier runs, by ``call_id``.

    They are its root ``tool_completed`` events whose call it did not make itself:
    what the caller returned for client tools the run before handed over. Not one
    of them: the run's own declined call (``error.code`` ``declined``, after its
    ``approval_requested`` and ``approval_resolved``, which are not turn events, so
    its ``seq`` is not the next after the turn event before it; a carried result's
    always is, as the run stores them right after its start). Counted as carried,
    a declined call would make the run's turn never final, never kept.
    """
    if len(events) < 3:
        return {}
    root = events[0].get("execution_id")
    made = {
        e.get("call_id")
        for e in events
        if e.get("type") == "tool_executing" and e.get("execution_id") == root
    }
    carried: dict[str, dict[str, Any]] = {}
    before = events[0]
    for e in events:
        if (
            e.get("type") == "tool_completed"
            and e.get("execution_id") == root
            and e.get("call_id") not in made
            and not _declined_here(e, before)
        ):
            carried[str(e.get("call_id"))] = e
        before = e
    return carried


def _declined_here(event: dict[str, Any], before: dict[str, Any]) -> bool:
    """Whether a ``tool_completed`` is the run's own declined call (see
    :func:`client_results_in`): code ``declined`` and not stored right after ``before``."""
    error = event.get("error")
    if not (isinstance(error, dict) and error.get("code") == "declined"):
        return False
    seq, previous = event.get("seq"), before.get("seq")
    return isinstance(seq, int) and isinstance(previous, int) and seq > previous + 1


def turn_messages(
    events: Sequence[dict[str, Any]],
    max_tool_chars: int,
    answered: dict[str, dict[str, Any]] | None = None,
) -> list[ChatMessage]:
    """One run's messages from its turn events (ascending, the root ``agent_started`` first).

    Only the root execution's calls count, each with its result; a call without
    a stored result is left out. A client tool's call takes its result from
    ``answered`` (the ``tool_completed`` a later run stored for it, by ``call_id``).
    """
    started = events[0]
    root = started.get("execution_id")
    input = str(started.get("input") or "")
    messages: list[ChatMessage] = [{"role": "user", "content": input}]
    if len(events) == 2:  # no tool call: the input and the run's end
        end = events[1]
        if end.get("type") == "agent_completed" and end.get("depth") == 0:
            messages.append({"role": "assistant", "content": str(end.get("final_response") or "")})
        return messages
    if not input and client_results_in(events):
        messages = []  # it continues after the client results it carries
    results: dict[str, deque[dict[str, Any]]] = {}
    handing = False
    for event in events:
        if event.get("type") == "tool_completed" and event.get("execution_id") == root:
            if handed_over(event):
                handing = True
                found = (answered or {}).get(str(event.get("call_id")))
                if found is None:
                    continue  # never answered by the caller
                event = found
            results.setdefault(str(event.get("call_id")), deque()).append(event)
    for event in events[1:]:
        kind = event.get("type")
        if kind == "tool_executing" and event.get("execution_id") == root:
            call_id = str(event.get("call_id"))
            answers = results.get(call_id)
            if not answers:
                continue  # never answered: neither the call nor a result is sent
            done = answers.popleft()
            messages.append(
                call_message(call_id, str(event.get("tool_name")), event.get("parameters"))
            )
            messages.append(
                {
                    "role": "tool",
                    "tool_call_id": call_id,
                    "content": tool_content(
                        bool(done.get("ok")), done.get("results"), done.get("error"), max_tool_chars
                    ),
                }
            )
        elif kind == "agent_completed" and event.get("depth") == 0:
            final = str(event.get("final_response") or "")
            if final or not handing:
                messages.append({"role": "assistant", "content": final})
    return messages


def _cost(chars: list[int], ratio: float) -> int:
    """Tokens of messages of ``chars`` characters each, as :meth:`TokenEstimator.messages_tokens`."""
    ceil = math.ceil
    return sum(ceil(c / ratio) for c in chars) + MESSAGE_OVERHEAD_TOKENS * len(chars)


def _ended(events: Sequence[dict[str, Any]]) -> bool:
    """Whether a run's turn events (ascending) end with the run's own end: then they are
    final (nothing is ever added to a run after its terminal event). Its messages are
    final too unless it handed calls to its client (answered by a later run) or
    carries answers to an earlier run's (see :func:`_final`)."""
    last = events[-1]
    kind = last["type"]
    return kind == "run_cancelled" or (
        kind in ("agent_completed", "agent_error") and last.get("depth") == 0
    )


def _final(events: Sequence[dict[str, Any]], carried: dict[str, dict[str, Any]]) -> bool:
    """Whether a run's messages (from its whole turn, ascending) can never change, so may
    be kept: it has ended, handed no call to its client (a later run answers those) and
    carries no answer (``carried``) to an earlier run's call."""
    return (
        not carried
        and _ended(events)
        and not any(e["type"] == "tool_completed" and handed_over(e) for e in events)
    )


#: One turn of a read, newest first, kept: ``(run id, its newest mark's seq, its messages'
#: JSON without the brackets, how many messages, its tokens at the read's ratio)``.
_Listed = tuple[str, int, bytes, int, int]


class ThreadOrder:
    """A thread's newest turns, all final, as one read took them: the next read's shortcut.

    ``runs``: ``(run id, its newest mark's seq)`` newest first, contiguous (no turn of
    the thread between them); ``whole``: they go down to the thread's start.
    ``blob``: every message of those turns, oldest first, as one JSON array, so that
    a read decodes them in one go; ``counts``, ``costs`` and ``sizes``: per turn,
    newest first, its messages, its tokens at ``ratio`` and its bytes in ``blob``.
    A read uses the order only once the store has returned the newest turn's mark for
    the same user and thread (see :meth:`Conversations.turns`); it never widens a
    read, and it is read only by this process. Held to what a budget of
    ``TENET_CONTEXT_TOKENS`` can take (and one turn more, whose input and answer
    may still go).
    """

    __slots__ = ("blob", "costs", "counts", "ratio", "runs", "sizes", "whole")

    def __init__(
        self,
        runs: list[tuple[str, int]],
        whole: bool,
        blob: bytes,
        counts: list[int],
        costs: list[int],
        sizes: list[int],
        ratio: float,
    ) -> None:
        self.runs, self.whole, self.blob, self.ratio = runs, whole, blob, ratio
        self.counts, self.costs, self.sizes = counts, costs, sizes

    def nbytes(self) -> int:
        """What it holds in memory, about: its JSON, and a tuple, run id and numbers per turn."""
        return len(self.blob) + 200 * len(self.runs) + _ENTRY_OVERHEAD

    @classmethod
    def made(
        cls,
        listed: list[_Listed],
        tail: ThreadOrder | None,
        whole: bool,
        ratio: float,
        cap: int,
    ) -> ThreadOrder | None:
        """The order of ``listed`` (newest first) followed by all of ``tail`` (older, at the
        same ratio; its own ``whole`` then counts), cut to the newest turns that ``cap``
        tokens take and one more. None when there is no turn."""
        runs = [(e[0], e[1]) for e in listed]
        counts = [e[3] for e in listed]
        costs = [e[4] for e in listed]
        sizes = [len(e[2]) for e in listed]
        parts = [e[2] for e in reversed(listed)]  # oldest first
        if tail is not None:
            runs += tail.runs
            counts += tail.counts
            costs += tail.costs
            sizes += tail.sizes
            whole = tail.whole
            parts.insert(0, tail.blob[1:-1])
        if not runs:
            return None
        spent, keep = 0, len(costs)
        for i, cost in enumerate(costs):
            spent += cost
            if spent > cap:
                keep = i + 1
                break
        inner = b",".join(p for p in parts if p)
        if keep < len(runs):
            whole = False
            dropped = sizes[keep:]  # the oldest turns: the head of ``inner``
            inner = inner[sum(dropped) + len(dropped) :]
            del runs[keep:], counts[keep:], costs[keep:], sizes[keep:]
        return cls(runs, whole, b"[" + inner + b"]", counts, costs, sizes, ratio)


class TurnCache:
    """Finished turns' messages, compact (JSON bytes), least recently used first out.

    A run's turn events are final once its terminal event is stored, so its
    messages can be kept: they never go stale, in this process or because of
    another. They are put here by a read that built them, or by the run itself as
    it ends in this process (a run that ended in another is built by the first
    read here that needs it). The cache is only ever asked about runs that the store has just
    returned for the caller's own thread (keyed by user and run), so it cannot
    widen what a read returns: a deleted thread's runs are no longer returned, and
    their entries age out. Kept as bytes, each use decodes a fresh copy, so a
    caller changing its messages changes nothing here. Bounded by ``max_bytes``.
    """

    __slots__ = ("entries", "hints", "max_bytes", "orders", "orders_size", "size")

    def __init__(self, max_bytes: int) -> None:
        #: (user id, run id) -> [messages as JSON, each one's characters, the
        #: characters-per-token ratio of the cost, the turn's cost in tokens at it, the
        #: ``seq`` of the run's terminal event: only a read that has that mark takes it].
        self.entries: OrderedDict[tuple[str, str], list[Any]] = OrderedDict()
        self.max_bytes = max_bytes
        self.size = 0
        #: (user id, thread id) -> the newest ``seq`` of that thread's turns kept here at
        #: its last read: a hint that older rows' text need not be read (if one is needed
        #: after all, it is read then). Bounded to ``_MAX_HINTS`` threads.
        self.hints: OrderedDict[tuple[str, str], int] = OrderedDict()
        #: (user id, thread id) -> the thread's newest turns as its last read took them
        #: (:class:`ThreadOrder`). Bounded to ``max_bytes`` more.
        self.orders: OrderedDict[tuple[str, str], ThreadOrder] = OrderedDict()
        self.orders_size = 0

    def order(self, key: tuple[str, str]) -> ThreadOrder | None:
        found = self.orders.get(key)
        if found is not None:
            self.orders.move_to_end(key)
        return found

    def set_order(self, key: tuple[str, str], order: ThreadOrder | None) -> None:
        """Keep a thread's order (None: forget it)."""
        old = self.orders.pop(key, None)
        if old is not None:
            self.orders_size -= old.nbytes()
        if order is None or order.nbytes() > self.max_bytes // 16:
            return
        self.orders[key] = order
        self.orders_size += order.nbytes()
        while self.orders_size > self.max_bytes:
            _, old = self.orders.popitem(last=False)
            self.orders_size -= old.nbytes()

    def hint(self, key: tuple[str, str]) -> int:
        return self.hints.get(key, -1)

    def set_hint(self, key: tuple[str, str], seq: int) -> None:
        self.hints[key] = seq
        self.hints.move_to_end(key)
        if len(self.hints) > _MAX_HINTS:
            self.hints.popitem(last=False)

    def get(self, key: tuple[str, str]) -> list[Any] | None:
        found = self.entries.get(key)
        if found is not None:
            self.entries.move_to_end(key)
        return found

    def put(
        self,
        key: tuple[str, str],
        messages: list[ChatMessage],
        chars: list[int],
        ratio: float,
        cost: int,
        newest: int,
    ) -> bytes | None:
        """Keep a turn's messages (``chars``: each one's characters; ``cost``: its tokens at
        the estimator's ``ratio``, counted again only once the ratio moves; ``newest``: the
        ``seq`` of its run's terminal event); the JSON kept, or None when it is not kept."""
        found = self.entries.get(key)
        if found is not None:
            return found[0]  # type: ignore[no-any-return]
        data = orjson.dumps(messages)
        if len(data) > self.max_bytes // 16:
            return None  # one huge turn does not push out many others
        self.entries[key] = [data, chars, ratio, cost, newest]
        self.size += _entry_bytes(data, chars)
        while self.size > self.max_bytes:
            _, old = self.entries.popitem(last=False)
            self.size -= _entry_bytes(old[0], old[1])
        return data


def _entry_bytes(data: bytes, chars: list[int]) -> int:
    """What a kept turn holds in memory, about: its JSON, its list of sizes, the entry
    itself and its key (so the bound is on memory, not only on the JSON)."""
    return len(data) + 8 * len(chars) + _ENTRY_OVERHEAD


class Conversations:
    """Reads threads' conversations for runs: the store, the budget, the estimate.

    Shared by every run of a process; it holds settings, the estimator's ratio and
    the finished turns already built (:class:`TurnCache`), which are final.
    """

    def __init__(
        self,
        store: Any,
        *,
        context_tokens: int,
        tool_result_max_chars: int,
        estimator: TokenEstimator | None = None,
        cache_bytes: int = 2 * TURN_CACHE_BYTES,
    ) -> None:
        self.store = store
        self.context_tokens = context_tokens
        self.tool_result_max_chars = tool_result_max_chars
        self.estimator = estimator or TokenEstimator()
        #: Half of ``cache_bytes`` (``TENET_HISTORY_CACHE_BYTES``) for finished turns, half
        #: for threads' orders.
        self.turns_kept = TurnCache(cache_bytes // 2)

    async def history(
        self,
        user_id: str,
        thread_id: str,
        run_id: str,
        *,
        budget: int | None = None,
        answered: dict[str, dict[str, Any]] | None = None,
    ) -> list[ChatMessage]:
        """The thread's turns before run ``run_id``, oldest first, within ``budget`` tokens.

        Read through the store with ``user_id``: only this user's events of this
        thread can be returned. ``answered``: client results run ``run_id`` itself
        carries (its own events are not read), by ``call_id``.
        """
        turns = await self.turns(user_id, thread_id, run_id, budget=budget, answered=answered)
        return [m for _, messages in turns for m in messages]

    async def turns(
        self,
        user_id: str,
        thread_id: str,
        run_id: str,
        *,
        budget: int | None = None,
        answered: dict[str, dict[str, Any]] | None = None,
        before: int = NEWEST,
    ) -> list[tuple[str, list[ChatMessage]]]:
        """:meth:`history` as ``(run_id, messages)`` per turn, oldest first (for ids), of
        the events below seq ``before`` (default: all).

        A read of the whole thread first tries the thread's kept order (:meth:`TurnCache.order`):
        it reads only the marks at and above the order's newest turn, and takes the
        turns below from the order once the store has returned that turn's newest mark
        for this user and thread (so a deleted thread, or one changed in a way the order
        does not know, is read from the store instead).
        """
        remaining = self.context_tokens if budget is None else budget
        if remaining <= 0:
            return []
        if before == NEWEST:
            order = self.turns_kept.order((user_id, thread_id))
            if order is not None:
                found = await self._read(user_id, thread_id, run_id, remaining, answered, order)
                if found is not None:
                    return found
        found = await self._read(user_id, thread_id, run_id, remaining, answered, None, before)
        assert found is not None  # only a read along an order can give up
        return found

    async def _read(
        self,
        user_id: str,
        thread_id: str,
        run_id: str,
        remaining: int,
        answered: dict[str, dict[str, Any]] | None,
        order: ThreadOrder | None,
        before: int = NEWEST,
    ) -> list[tuple[str, list[ChatMessage]]] | None:
        """The turns of :meth:`turns` within ``remaining`` tokens.

        ``order``: the thread's kept order, used once its newest turn's mark is read;
        None is returned when that mark is not where the order says (the caller reads
        again without it)."""
        ratio, ceil, loads = self.estimator.chars_per_token, math.ceil, orjson.loads
        max_tool_chars = self.tool_result_max_chars
        cache = self.turns_kept
        answered = dict(answered or {})
        turns: list[tuple[str, list[ChatMessage]]] = []  # newest first until the end
        pending: dict[str, list[dict[str, Any]]] = {}
        taken: set[str] = set()  # runs taken whole from the cache
        newest: dict[str, int] = {}  # each run's newest seq, while it is being read
        # The turns taken so far, newest first, as long as every one is kept (then the
        # order they came from, ``tail``): the thread's order for the next read.
        listed: list[_Listed] = []
        listing = True
        tail: ThreadOrder | None = None
        thread_key = (user_id, thread_id)
        whole_read = before == NEWEST
        fresh, kept = cache.hint(thread_key), -1
        low = order.runs[0][1] if order is not None else 0
        page, scanned = _FIRST_PAGE, 0
        full = whole = False

        def add(rid: str, messages: list[ChatMessage], chars: list[int], cost: int) -> bool:
            """Take a turn (newest first) if it fits whole, else its input and answer if
            those fit; whether it fitted whole (if not, the budget is spent)."""
            nonlocal remaining, full
            if cost <= remaining:
                remaining -= cost
                turns.append((rid, messages))
                return True
            full = True
            if len(messages) > 2 and messages[0]["role"] == "user":
                if messages[-1]["role"] == "assistant":
                    short = [messages[0], messages[-1]]
                    short_cost = ceil(chars[0] / ratio) + ceil(chars[-1] / ratio)
                    if short_cost + 2 * MESSAGE_OVERHEAD_TOKENS <= remaining:
                        turns.append((rid, short))
            return False

        def take(rid: str, known: list[Any], seq: int) -> None:
            """Take a kept turn (its newest mark at ``seq``) from the cache."""
            nonlocal kept
            taken.add(rid)
            kept = max(kept, seq)
            if known[2] != ratio:  # the estimate moved since: count again
                known[2], known[3] = ratio, _cost(known[1], ratio)
            messages = loads(known[0])
            if add(rid, messages, known[1], known[3]) and listing:
                listed.append((rid, seq, known[0][1:-1], len(messages), known[3]))

        while not full:
            rows = await turn_events_before(
                self.store, user_id, thread_id, before, page, run_id, fresh, low
            )
            bodies: dict[int, str] | None = None
            resume = -1
            for seq, rid, kind, body in rows:
                if seq == low and order is not None:
                    # The newest mark of the order's newest turn: every turn below it is
                    # in the order, as long as it is that run's and no newer run is half read.
                    runs = order.runs
                    if (
                        rid != runs[0][0]
                        or pending
                        or rid in taken
                        or any(orid == run_id for orid, _ in runs)  # read as an older run
                    ):
                        return None
                    kept = max(kept, seq)
                    resume = _DONE if order.whole else runs[-1][1]
                    if order.ratio == ratio:  # its messages decoded in one go
                        flat, counts = loads(order.blob), order.counts
                        pos = len(flat)
                        for (orid, _), count, cost in zip(runs, counts, order.costs, strict=True):
                            messages = flat[pos - count : pos]
                            pos -= count
                            if cost > remaining:
                                add(orid, messages, [message_chars(m) for m in messages], cost)
                                break
                            remaining -= cost
                            turns.append((orid, messages))
                        if listing:
                            tail, listing = order, False
                        if resume >= 0 and not full:  # the store is read below the order
                            taken.update(orid for orid, _ in runs)
                    else:  # counted at another ratio: turn by turn, from the cache
                        for orid, oseq in runs:
                            known = cache.get((user_id, orid))
                            if known is None or known[4] != oseq:  # let go since: from the store
                                resume = oseq + 1
                                break
                            take(orid, known, oseq)
                            if full:
                                break
                    order, low = None, 0
                    break
                if rid in taken:
                    continue
                found = pending.get(rid)
                if found is None:
                    # The run's newest turn event: a finished run may be built already, if
                    # this is its terminal event (rows read before the run ended, or below
                    # ``before``, hold less than the kept turn: they are built as read).
                    known = cache.get((user_id, rid))
                    if known is not None and known[4] == seq:
                        take(rid, known, seq)
                        if full:
                            break
                        continue
                    found = pending[rid] = []
                    newest[rid] = seq
                if body is None:  # left out as probably built, but it is not (any more)
                    if bodies is None:
                        bodies = await turn_bodies_between(
                            self.store, user_id, thread_id, rows[-1][0], seq, run_id
                        )
                    body = bodies.get(seq)
                    if body is None:
                        continue  # gone since the first read (the thread was deleted)
                event = loads(body)
                found.append(event)
                if kind != "agent_started" or event.get("depth") != 0:
                    continue
                del pending[rid]
                found.reverse()
                carried = client_results_in(found)
                answered.update(carried)  # read before the runs they answer
                messages = turn_messages(found, max_tool_chars, answered)
                chars = [message_chars(m) for m in messages]
                cost = _cost(chars, ratio)
                data = (
                    cache.put((user_id, rid), messages, chars, ratio, cost, newest[rid])
                    if _final(found, carried)
                    else None
                )
                if data is not None:
                    kept = max(kept, newest[rid])
                if add(str(rid), messages, chars, cost) and listing:
                    if data is None:
                        listing = False
                    else:
                        listed.append((str(rid), newest[rid], data[1:-1], len(messages), cost))
                if full:
                    break
            if full:
                break
            if resume == _DONE:  # the order went down to the thread's start
                whole = True
                break
            scanned += len(rows)
            if resume >= 0:
                before, page = resume, _FIRST_PAGE
                continue
            # Every event read costs at least a token's worth of budget, so a thread of
            # events that make no messages (runs cancelled while queued) is not read to its end.
            if len(rows) < page:
                if order is not None:
                    return None  # the order's newest mark is not there: read without it
                whole = True  # nothing older: the thread's start
                break
            if scanned >= self.context_tokens:
                break
            before = rows[-1][0]
            page = min(page * 2, _MAX_PAGE)
        if kept != fresh:
            cache.set_hint(thread_key, kept)
        if whole_read:
            cache.set_order(
                thread_key,
                ThreadOrder.made(
                    listed, tail, whole and listing and not full, ratio, self.context_tokens
                ),
            )
        turns.reverse()
        return turns

    def keep_turn(
        self, user_id: str, thread_id: str, run_id: str, bodies: Sequence[str], newest: int
    ) -> bool:
        """Keep the turn a run just stored, built, so that the next run need not build it.

        ``bodies``: the run's turn events (``store.tables.TURN_TYPES``, its root ``agent_started``
        first, its terminal event last) exactly as stored, ascending; ``newest``: the
        terminal event's ``seq``. Called by the run itself once its terminal event is
        stored. Kept by the same rule as a read keeps a turn (:func:`_final`), built by
        the same function from the same stored text, so the next read is given what it
        would have built from the store. Returns whether it was kept.
        """
        if len(bodies) < 2:
            return False
        loads = orjson.loads
        events = [loads(b) for b in bodies]
        first = events[0]
        if first.get("type") != "agent_started" or first.get("depth") != 0:
            return False
        if first.get("seq", 0) <= 1:
            # A thread's first turn: most threads never get a second (one-shot runs), and a
            # kept turn holds memory until pushed out (10,000 one-run users left 5 KB each
            # behind). The thread's second run builds it from the store and keeps it then.
            return False
        if not _final(events, client_results_in(events)):
            return False
        messages = turn_messages(events, self.tool_result_max_chars)
        cache = self.turns_kept
        chars = [message_chars(m) for m in messages]
        ratio = self.estimator.chars_per_token
        if (
            cache.put((user_id, run_id), messages, chars, ratio, _cost(chars, ratio), newest)
            is None
        ):
            return False
        key = (user_id, thread_id)
        if newest > cache.hint(key):  # the next read need not fetch this turn's text
            cache.set_hint(key, newest)
        return True

    async def messages(
        self,
        user_id: str,
        thread_id: str,
        run_id: str,
        *,
        instructions: str,
        input: str,
        tools: Sequence[dict[str, Any]],
        with_history: bool = True,
        answered: dict[str, dict[str, Any]] | None = None,
    ) -> list[ChatMessage]:
        """What a run's first model call is sent: system prompt, history within the budget, input.

        ``answered``: the client results the run carries (by ``call_id``); with them
        and no ``input``, the conversation ends with those results, no user message.
        """
        head: list[ChatMessage] = (
            [{"role": "system", "content": instructions}] if instructions else []
        )
        current: list[ChatMessage] = (
            [] if answered and not input else [{"role": "user", "content": input}]
        )
        history: list[ChatMessage] = []
        if with_history:
            estimator = self.estimator
            fixed = estimator.messages_tokens([*head, *current])
            if tools:
                fixed += estimator.tokens(len(orjson.dumps(list(tools))))
            history = await self.history(
                user_id, thread_id, run_id, budget=self.context_tokens - fixed, answered=answered
            )
        return [*head, *history, *current]

    async def open_client_calls(self, user_id: str, thread_id: str) -> dict[str, dict[str, Any]]:
        """The calls the thread's latest run handed to its caller, by ``call_id``: its
        ``tool_executing`` events. Only those may be answered by the next run."""
        before, latest = NEWEST, None
        events: list[dict[str, Any]] = []
        while True:
            rows = await turn_events_before(self.store, user_id, thread_id, before, _FIRST_PAGE, "")
            for _, _, _, body in rows:
                event = orjson.loads(body)
                latest = latest or event.get("run_id")
                if event.get("run_id") != latest:
                    continue
                events.append(event)
                if event.get("type") == "agent_started" and event.get("depth") == 0:
                    return _handed_calls(events)
            if len(rows) < _FIRST_PAGE:
                return {}
            before = rows[-1][0]


def _handed_calls(events: Sequence[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The ``tool_executing`` of each call a run (its turn events, any order) handed over."""
    root = next(e.get("execution_id") for e in events if e.get("type") == "agent_started")
    handed = {
        e.get("call_id")
        for e in events
        if e.get("type") == "tool_completed" and e.get("execution_id") == root and handed_over(e)
    }
    return {
        str(e["call_id"]): e
        for e in events
        if e.get("type") == "tool_executing" and e.get("call_id") in handed
    }
