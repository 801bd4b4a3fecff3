"""A served process's start-up heap, kept out of Python's full collections.

Once started, a ``tenet serve`` process holds about 150,000 objects (its
libraries, the app, the agents, the settings) and keeps them for its whole
life. CPython's cyclic collector walks every tracked object on each full
(generation 2) collection, and under load it makes one every ten seconds or
so: measured on a 2-core machine during ``tenet bench --hostile``, each took
70-106 ms, with the event loop, and so every user, stopped meanwhile. That was
most of the spread between the bench's baseline rounds (104 ms of p99).

:func:`freeze_startup_heap` collects once, then moves every object still alive
into the collector's permanent generation (``gc.freeze``, see the Python
documentation of the ``gc`` module), so that a full collection walks only
what was made since: 4-6 ms each in the same measure. A frozen object is never
collected, which is right for what lives as long as the process; garbage that
exists at that moment is collected first, so nothing of it is kept.
``tenet_gc_frozen_objects`` (``/metrics``) shows how many objects are frozen.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["freeze_startup_heap", "frozen_objects", "startup_heap_frozen"]


def freeze_startup_heap() -> int:
    """Collect, then freeze what is alive; returns how many objects are frozen in all.

    Call it once the process has started serving (everything made at start
    exists), not in a process that starts and stops many servers (tests): each
    call keeps what is alive then for the rest of the process.
    """
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()


def frozen_objects() -> int:
    """How many objects are in the collector's permanent generation."""
    return gc.get_freeze_count()


@contextmanager
def startup_heap_frozen() -> Iterator[None]:
    """What is alive now frozen for the block's length, then collected normally again.

    For a benchmark that runs a service in its own process to measure a server's
    work: inside the block, its collections cost what ``tenet serve``'s cost.
    """
    freeze_startup_heap()
    try:
        yield
    finally:
        gc.unfreeze()
