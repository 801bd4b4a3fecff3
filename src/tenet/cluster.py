"""The engine of a cluster: runs claimed from Postgres, signals over Redis.

In cluster mode (``TENET_REDIS_URL`` set, Postgres as the store) every process
is identical. A run is stored as ``queued``; each process's dispatcher claims
runnable runs with ``SELECT ... FOR UPDATE SKIP LOCKED`` (one running run per
thread, the user's limit held cluster-wide, ``TENET_MAX_RUNS`` per process) and
executes them exactly like the embedded engine. The claiming process heartbeats
its runs; a sweeper on every process finds runs whose worker stopped
heartbeating and either requeues them (a run that had not emitted anything yet,
up to ``TENET_RUN_MAX_ATTEMPTS`` claims) or ends them with ``agent_error`` code
``interrupted`` (``run_cancelled`` if it was being cancelled). A cancel sent to
any process reaches the executing one through a Redis signal.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import timedelta
from typing import Any

import orjson

from .context import RunContext
from .engine import Engine, RunHandle, _bare_context
from .errors import NotFound
from .events import RUN_CANCELLED, RunStart, make_event, utc_now
from .runtime import RunRuntime
from .sessions import UserSession
from .store.tables import Run
from .usage import RunUsage

log = logging.getLogger("tenet.cluster")

WAKE = "wake"
CANCEL = "cancel"
#: The cancel reason of a run another process took over (never written to the store).
LOST = "lost"


class ClusterEngine(Engine):
    """An :class:`Engine` whose queue is the ``runs`` table, shared by every process."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._wake = asyncio.Event()
        # Runs claimed before the last heartbeat: only those can have been lost (a run
        # claimed a moment ago may not be in the heartbeat's answer yet).
        self._claimed_before: set[str] = set()
        self._tasks: list[asyncio.Task[None]] = []
        self.claimed = 0

    # Lifecycle --------------------------------------------------------------------------------

    async def start(self) -> None:
        bus: Any = self.writer.bus
        bus.on_signal(WAKE, lambda _payload: self._wake.set())
        bus.on_signal(CANCEL, self._on_cancel_signal)
        self._tasks = [
            asyncio.create_task(self._dispatch(), name="tenet-dispatch"),
            asyncio.create_task(self._heartbeat(), name="tenet-heartbeat"),
            asyncio.create_task(self._sweep(), name="tenet-sweeper"),
        ]
        self._wake.set()

    async def close(self, *, grace_s: float = 0.0) -> None:
        # Claim nothing more, but keep heartbeating while running runs finish or stop,
        # so that no other process takes them over meanwhile.
        self._closing = True
        await asyncio.sleep(0)  # runs claimed just now start, so their cancel is handled
        await super().close(grace_s=grace_s)
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []

    async def _cancelled(self, ctx: RunContext, runtime: RunRuntime, reason: str) -> None:
        """At shutdown, a run that has emitted nothing goes back to the queue for another process.

        A run that has emitted events cannot be restarted (its ``agent_started`` is
        out); it ends with ``run_cancelled`` reason ``shutdown``.
        """
        if reason == LOST:
            return  # another process owns the run now: it writes its end
        if (
            reason == "shutdown"
            and self._closing
            and runtime.emitted == 0
            and await self.store.admin_requeue(ctx.run_id, self.worker_id)
        ):
            log.warning("released run %s to the queue at shutdown", ctx.run_id)
            self.writer.bus.signal(WAKE, ctx.run_id)  # type: ignore[attr-defined]
            return
        await super()._cancelled(ctx, runtime, reason)

    def _run_start(self) -> RunStart | None:
        """None: a claimed run is already stored as ``running`` by its claim."""
        return None

    async def _recover(self) -> None:  # pragma: no cover - the sweeper does this in a cluster
        return None

    # Accepting and cancelling -----------------------------------------------------------------

    def _queue_full(self, session: UserSession) -> bool:
        return False  # the user's runs may be queued on any process: the store counts them

    def _stored_queue_limit(self) -> int | None:
        return self.settings.user_max_queued

    def _accepted(self, run: Run, session: UserSession) -> None:
        self._wake.set()
        self.writer.bus.signal(WAKE, run.id)  # type: ignore[attr-defined]

    def _pump(self) -> None:
        self._wake.set()

    async def cancel(self, user_id: str, run_id: str, *, reason: str = "user") -> Run:
        handle = self._runs.get(run_id)
        if handle is not None and handle.user_id == user_id and self._cancel_task(handle, reason):
            await self.store.update_run(user_id, run_id, status="cancelling")
            return await self.store.get_run(user_id, run_id)
        run = await self.store.get_run(user_id, run_id)  # NotFound when foreign or missing
        if run.status == "queued" and await self.store.admin_claim_settlement(
            user_id, run_id, self.worker_id
        ):
            ctx = _bare_context(user_id, run.thread_id, run_id, run.agent)
            await self.writer.write(
                make_event(
                    ctx,
                    RUN_CANCELLED,
                    {"status": "cancelled", "reason": reason, "usage": RunUsage().as_dict()},
                )
            )
            await self.store.finish_run(user_id, run_id, status="cancelled")
            self.finished["cancelled"] += 1
        elif run.status in ("queued", "running"):
            # Executing elsewhere (or being claimed right now): tell every process.
            await self.store.update_run(user_id, run_id, status="cancelling")
            payload = orjson.dumps({"run_id": run_id, "reason": reason}).decode()
            self.writer.bus.signal(CANCEL, payload)  # type: ignore[attr-defined]
        return await self.store.get_run(user_id, run_id)

    def _on_cancel_signal(self, payload: str) -> None:
        try:
            message = orjson.loads(payload)
            handle = self._runs.get(message["run_id"])
        except (orjson.JSONDecodeError, KeyError, TypeError):
            return
        if handle is not None:
            self._cancel_task(handle, str(message.get("reason") or "user"))

    # Background work --------------------------------------------------------------------------

    async def _dispatch(self) -> None:
        poll = self.settings.cluster_poll_s
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), poll)
            self._wake.clear()
            if self._closing:
                # Stop for good (not just skip a turn): on Python 3.11 a cancel that lands as
                # wait_for's inner wait completes is lost, and close() would wait forever.
                return
            free = self.settings.max_runs - self._running_total
            if free <= 0:
                continue
            try:
                runs = await self.store.claim_runs(
                    self.worker_id, free, self.settings.user_max_runs
                )
            except Exception as exc:
                log.warning("claiming runs failed: %s", exc)
                await asyncio.sleep(poll)
                continue
            if runs is None:  # another process is claiming; try again shortly
                await asyncio.sleep(0.02)
                self._wake.set()
                continue
            for run in runs:
                self._start_claimed(run)
            if len(runs) == free:
                self._wake.set()  # there may be more to claim

    def _start_claimed(self, run: Run) -> None:
        session = self.sessions.get(run.user_id)
        handle = RunHandle(run.id, run.user_id, run.thread_id, run.agent, run.input)
        handle.state = "running"
        self._runs[run.id] = handle
        session.running += 1
        self._running_total += 1
        self.claimed += 1
        self.writer.forget(run.thread_id)  # another process may have written to it last
        handle.task = asyncio.create_task(self._execute(handle, session), name=f"run {run.id}")

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(self.settings.heartbeat_s)
            try:
                held = await self.store.heartbeat(self.worker_id)
            except Exception as exc:
                log.warning("heartbeat failed: %s", exc)
                continue
            self.drop_lost_runs(held)

    def drop_lost_runs(self, held: set[str]) -> int:
        """Stop, without a word, the runs this process executes but no longer holds.

        A run is taken from a process only when the cluster presumed it dead (its
        heartbeats stopped for ``TENET_DEAD_AFTER_BEATS``); if it was merely slow,
        another process now owns the run, and two executions must not go on at once.
        The new owner writes the run's events and end; this one writes nothing more.
        """
        lost = [
            h
            for h in self._runs.values()
            if h.state == "running"
            and h.task is not None
            and h.run_id not in held
            and h.run_id in self._claimed_before
        ]
        for handle in lost:
            log.error("run %s was taken over by another process; stopping it here", handle.run_id)
            self._cancel_task(handle, LOST)
        self._claimed_before = {h.run_id for h in self._runs.values()}
        return len(lost)

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(self.settings.heartbeat_s)
            try:
                await self.sweep_once()
            except Exception as exc:
                log.warning("sweeping dead runs failed: %s", exc)

    async def sweep_once(self) -> int:
        """Requeue or end the runs of workers that stopped heartbeating; returns how many."""
        dead_after = timedelta(seconds=self.settings.heartbeat_s * self.settings.dead_after_beats)
        handled = 0
        for run in await self.store.admin_dead_runs(utc_now() - dead_after):
            if run.id in self._runs:
                continue  # ours, alive
            if (
                run.status == "running"
                and run.attempts < self.settings.run_max_attempts
                and not await self.store.run_has_events(run.id)
                and await self.store.admin_requeue(run.id, run.worker_id)
            ):
                log.warning("requeued run %s of dead worker %s", run.id, run.worker_id)
                self.writer.bus.signal(WAKE, run.id)  # type: ignore[attr-defined]
                handled += 1
                continue
            if await self.store.admin_take_over(run.id, run.worker_id, self.worker_id):
                log.warning("ending run %s of dead worker %s", run.id, run.worker_id)
                with contextlib.suppress(NotFound):
                    await self.settle(
                        run.user_id, run.thread_id, run.id, run.agent, interrupted=run.status
                    )
                handled += 1
        return handled
