"""A run that waits for a person: what it asked, and how it resumes by replay.

When a flow needs a person (a tool call that requires approval, ``ctx.ask``), the
run does not wait in memory: it stores its requests and what it has received so
far, and its execution ends (:class:`RunPaused` unwinds the flow). The run then
holds no task and no execution slot. Once every request is answered (or timed
out), the run is queued again and executed from the start of its flow, on any
process, with the results it already received *replayed* in order: each await of
the flow (a model call, a tool call, a delegation, an approval, an answer) returns
what it returned before, without running again, and the events it made then are
not made again. The first await past the record is the one that paused, and it
now gets its answer.

The rule a custom flow must follow: **between awaits, be deterministic**. Given
the same results, it must make the same calls in the same order (same tool,
same arguments, same question). Side effects belong in tools (each runs once;
its result is replayed), not in the flow's own code between awaits, which runs
again on every resume. A flow that does not make the same call when replayed
ends with ``agent_error`` code ``nondeterministic``; nothing is run twice.

The state stored with a pause (``runs.resume_state``) is JSON: the record of
awaits, how many events the flow made since the last one (made again on replay,
so not stored again), the pause's number, the run's own execution id, the time it
has executed so far (``TENET_RUN_TIMEOUT_S`` counts execution, not waiting) and
its usage.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from .errors import Nondeterministic
from .text import repair_value


class RunPaused(BaseException):
    """The run waits for a person: its execution ends here, its state is stored.

    A ``BaseException``, so that a flow's or tool's ``except Exception`` does not
    swallow it.
    """


@dataclass(frozen=True, slots=True)
class Resolved:
    """An answered request of the pause the run resumes from."""

    id: str
    kind: str
    body: dict[str, Any]
    answer: dict[str, Any]


def key_of(value: Any) -> Any:
    """A value as it reads back from the stored JSON (what a replay compares and returns).

    Text is repaired first (:mod:`tenet.text`), as every stored value is, and any
    value JSON cannot carry is written as its ``str``.
    """
    return orjson.loads(orjson.dumps(repair_value(value), default=str))


def nondeterministic(what: str) -> Nondeterministic:
    return Nondeterministic(
        f"the flow did not repeat its earlier calls when resumed ({what}); a flow that waits "
        "for a person must make the same calls in the same order between awaits",
    )


class Journal:
    """One run's record of its awaits' results and, when resumed, their replay."""

    def __init__(
        self, state: dict[str, Any] | None = None, answers: list[Resolved] | None = None
    ) -> None:
        state = state or {}
        self.entries: list[dict[str, Any]] = list(state.get("entries") or ())
        self._replay = len(self.entries)
        self.cursor = 0
        self._tail = int(state.get("tail") or 0)
        #: The pauses so far (a new request belongs to pause ``round + 1``).
        self.round = int(state.get("round") or 0)
        #: The run's own execution id, kept across resumes (its events stay one execution).
        self.execution_id: str | None = state.get("execution_id")
        #: Seconds the run executed before this resume.
        self.elapsed = float(state.get("elapsed") or 0.0)
        self.usage: dict[str, int] = dict(state.get("usage") or {})
        #: The answers of the pause resumed from, not yet taken by the flow.
        self.answers = list(answers or ())
        self._produced = 0
        self._mark = 0
        #: Requests made by this execution that wait for a person (a pause being made).
        self.pending: list[dict[str, Any]] = []

    @property
    def resumed(self) -> bool:
        return bool(self._replay or self._tail or self.round)

    def suppress(self) -> bool:
        """Whether the flow's next event was made before the pause (so is not made again)."""
        self._produced += 1
        if self.cursor < self._replay:
            return True
        if self._tail > 0:
            self._tail -= 1
            return True
        return False

    def replayed(self, kind: str, key: Any) -> dict[str, Any] | None:
        """The recorded result of the flow's next await, if it is being replayed."""
        if self.cursor >= self._replay:
            return None
        entry = self.entries[self.cursor]
        if entry.get("k") != kind or entry.get("key") != key_of(key):
            raise nondeterministic(f"expected {entry.get('k')} {entry.get('key')!r}")
        self.cursor += 1
        return entry

    def record(self, kind: str, key: Any, **result: Any) -> None:
        """Keep an await's result (replayed on resume).

        Kept as is: it is serialized only if the run pauses (:meth:`state`), so a run
        that never waits for a person pays one list append per await.
        """
        self.entries.append({"k": kind, "key": key, **result})
        self._mark = self._produced

    def take(self, kind: str, match: Any) -> Resolved | None:
        """The answer to the request the flow now makes again, if it was answered."""
        for i, found in enumerate(self.answers):
            if found.kind == kind and match(found):
                return self.answers.pop(i)
        return None

    def check_new_request(self) -> None:
        """A new request while answers wait to be taken: the flow went another way."""
        if self.answers or self.cursor < self._replay:
            raise nondeterministic("it asked something it had not asked before")

    def check_finished(self) -> None:
        """The flow ended: every recorded await and every answer must have been reached."""
        if self.cursor < self._replay or self.answers:
            raise nondeterministic("it ended before reaching the call it waited on")

    def state(self, *, execution_id: str, elapsed: float, usage: dict[str, int]) -> dict[str, Any]:
        """What the run resumes from after this pause."""
        return {
            "entries": key_of(self.entries),
            "tail": self._produced - self._mark,
            "round": self.round + 1,
            "execution_id": execution_id,
            "elapsed": round(elapsed, 3),
            "usage": usage,
        }
