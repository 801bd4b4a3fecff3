"""Threads for synchronous tools: a global pool, and a bound per user.

A tool written as a plain (non-async) function runs on a thread, so that it
cannot stall the event loop. Python cannot stop a thread: when such a call
times out, the run gets ``tool_completed`` (ok false, code ``timeout``) at once,
but the function goes on running on its thread until it returns by itself, and
the thread is busy until then. With one shared pool, a user whose tools hang
would hold every thread and every other user's synchronous tools would time
out waiting for one.

So the pool is sized by ``TENET_TOOL_THREADS`` and each user may hold at most
``TENET_TOOL_THREADS_PER_USER`` of its threads at once, counting the threads
still held by calls that already timed out. A user whose tools hang waits for
their own threads (and their own calls time out); other users keep theirs. The
cost of a hung synchronous tool is therefore one of its user's threads (and the
memory it holds) until the function returns; a tool that never returns keeps
it until the process stops. Write tools that can block for long as ``async``
functions (they are cancelled on timeout), or give them their own timeouts.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

log = logging.getLogger("tenet.tools")

T = TypeVar("T")


class ToolThreads:
    """The threads synchronous tools run on; see the module docstring.

    Infrastructure keyed by user: it holds no user data, only how many threads
    each user holds now (an entry exists only while a user holds one).
    """

    def __init__(self, size: int, per_user: int) -> None:
        self.size = size
        self.per_user = per_user
        self._executor = ThreadPoolExecutor(max_workers=size, thread_name_prefix="tenet-tool")
        self._held: dict[str, int] = {}
        self._waiters: dict[str, list[asyncio.Future[None]]] = {}

    def held(self, user_id: str) -> int:
        """Threads ``user_id`` holds now (calls running, timed out or not)."""
        return self._held.get(user_id, 0)

    async def run(self, user_id: str, fn: Callable[[], T]) -> T:
        """Call ``fn`` on a pool thread as ``user_id``, waiting for one of the user's threads.

        Cancelling the await (a timeout) does not stop ``fn``: its thread stays held,
        and counted against the user, until ``fn`` returns.
        """
        loop = asyncio.get_running_loop()
        await self._acquire(user_id, loop)
        context = contextvars.copy_context()
        try:
            future: Future[T] = self._executor.submit(context.run, fn)
        except BaseException:
            self._release(user_id)
            raise

        def done(_future: Future[T]) -> None:
            try:
                loop.call_soon_threadsafe(self._release, user_id)
            except RuntimeError:  # the loop is closed: nothing is left to count for
                pass

        future.add_done_callback(done)
        return await asyncio.wrap_future(future, loop=loop)

    async def _acquire(self, user_id: str, loop: asyncio.AbstractEventLoop) -> None:
        while self._held.get(user_id, 0) >= self.per_user:
            waiter = loop.create_future()
            waiters = self._waiters.setdefault(user_id, [])
            waiters.append(waiter)
            try:
                await waiter
            finally:
                if waiter in waiters:
                    waiters.remove(waiter)
                if not waiters and self._waiters.get(user_id) is waiters:
                    del self._waiters[user_id]
        self._held[user_id] = self._held.get(user_id, 0) + 1

    def _release(self, user_id: str) -> None:
        held = self._held.get(user_id, 0) - 1
        if held > 0:
            self._held[user_id] = held
        else:
            self._held.pop(user_id, None)
        for waiter in self._waiters.get(user_id, ()):  # each checks again for a free thread
            if not waiter.done():
                waiter.set_result(None)

    def close(self) -> None:
        """Stop taking calls; threads still running finish on their own (never waited for)."""
        self._executor.shutdown(wait=False, cancel_futures=True)
