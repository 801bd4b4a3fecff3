"""The soak's own bookkeeping: a run request's late answer is never taken for another's.

Under load a ``run`` can be answered after the soak user stopped waiting for it
(its socket's earlier frames, a replay paced by a slow reader, come first). The
user must then still count that run and keep following its thread: if it took
the late ``run_accepted`` for the answer to its next request, or retired the
thread meanwhile, the run's last event would be reported lost, its thread would
show a gap and the run would stay unfinished, though the server delivered
everything it was asked to. The socket here is scripted so that the order of
frames is exactly that one, every time.
"""

from __future__ import annotations

import asyncio
import random
from typing import Any

import orjson

from tenet.bench.soak import SoakTotals, SoakUser, ThreadLog


class _FirstChoices(random.Random):
    """Always the first option: a benchmark run, on a thread the user follows."""

    def random(self) -> float:
        return 0.0


class _ScriptedSocket:
    """Records what the user sends; the test hands it the server's frames itself."""

    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []

    async def send(self, text: str) -> None:
        self.sent.append(orjson.loads(text))

    def runs(self) -> list[dict[str, Any]]:
        return [f for f in self.sent if f.get("type") == "run"]


def _answer(user: SoakUser, request: dict[str, Any], run_id: str, thread_id: str) -> None:
    frame = {"type": "run_accepted", "run_id": run_id, "thread_id": thread_id}
    frame["ref"] = request["ref"]
    user._on_frame(frame, orjson.dumps(frame).decode())


async def test_a_late_run_answer_counts_its_own_run_and_keeps_its_thread_followed() -> None:
    socket = _ScriptedSocket()
    user = SoakUser("ws://127.0.0.1:9/v1/ws", "token", _FirstChoices(), SoakTotals())
    user.ws = socket
    user.answer_timeout_s = 0.05  # the request below is never answered in time
    threads = [f"thr_{i}" for i in range(7)]  # one more than a user keeps following
    for thread_id in threads:
        user.threads[thread_id] = ThreadLog()
    user.active = list(threads)
    user.followed = {threads[0]}

    await user.start_run()  # not answered in time
    late = socket.runs()[0]
    assert late["thread_id"] == threads[0]
    await user._retire()  # the user trims the threads it follows
    unsubscribed = {f["thread_id"] for f in socket.sent if f.get("type") == "unsubscribe"}
    assert threads[0] not in unsubscribed  # a run may be starting there

    second = asyncio.create_task(user.start_run())
    for _ in range(1000):  # until the second request is on the wire
        if len(socket.runs()) == 2:
            break
        await asyncio.sleep(0)
    assert len(socket.runs()) == 2
    _answer(user, late, "run_late", threads[0])  # the first answer, late
    _answer(user, socket.runs()[1], "run_second", threads[0])
    await second

    assert user.open_runs == {"run_late", "run_second"}
    assert user.run_thread == {"run_late": threads[0], "run_second": threads[0]}
    assert user.totals.runs_started == 2
    assert threads[0] in user.active and threads[0] in user.followed


def test_a_run_whose_answer_died_with_its_socket_is_counted_once_it_ends() -> None:
    # A 4008 drops what was queued, a run_accepted included; the run's end, resumed from
    # the store, is how the user learns of it: it counts as started, once.
    user = SoakUser("ws://127.0.0.1:9/v1/ws", "token", _FirstChoices(), SoakTotals())
    user.threads["thr_0"] = ThreadLog(last_seq=4)
    end = {"type": "agent_completed", "run_id": "run_x", "thread_id": "thr_0", "seq": 5}
    end["depth"] = 0
    user._on_frame(end, orjson.dumps(end).decode())
    _answer(user, {"ref": "run:0"}, "run_x", "thr_0")  # a copy of the answer, however late
    assert user.totals.runs_started == 1
    assert sum(user.totals.outcomes.values()) == 1
    assert not user.open_runs


def test_a_gap_is_traced_with_the_socket_and_the_events_around_it() -> None:
    # What a faulty soak reports of a thread: which socket skipped which seq, in order.
    user = SoakUser("ws://127.0.0.1:9/v1/ws", "token", _FirstChoices(), SoakTotals())
    accepted = {"type": "run_accepted", "run_id": "run_b", "thread_id": "thr_0", "ref": "run:0"}
    user._on_frame(accepted, orjson.dumps(accepted).decode(), 1)
    for seq in (2, 3, 4):
        event = {"type": "text", "run_id": "run_b", "thread_id": "thr_0", "seq": seq}
        user._on_frame(event, orjson.dumps(event).decode(), 1)
    end = {"type": "agent_completed", "run_id": "run_b", "thread_id": "thr_0", "seq": 5}
    end["depth"] = 0
    user._on_frame(end, orjson.dumps(end).decode(), 2)
    trace = [entry[1:] for entry in user.threads["thr_0"].trace]
    assert trace == [
        [1, "run_accepted", "run_b", "run:0"],
        [1, "gap", 0, 2],
        [1, "events", 2, 4],
        [2, "agent_completed", 5, "run_b", 0],
    ]
    assert user.totals.gaps == 1 and user.threads["thr_0"].faults == 1
