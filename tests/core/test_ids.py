"""Server-made IDs: 128 random bits each, never repeated, in a forked child too."""

from __future__ import annotations

import os

from tenet.ids import is_valid, new_id


def test_ids_are_unique_and_well_formed() -> None:
    ids = [new_id("evt") for _ in range(50_000)]
    assert len(set(ids)) == len(ids)
    assert all(is_valid(i, "evt") for i in ids)
    assert not is_valid(ids[0], "run")


def test_a_forked_child_never_repeats_its_parents_ids() -> None:
    new_id("run")  # the parent holds a block of random bytes
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        os.write(write, ",".join(new_id("run") for _ in range(100)).encode())
        os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    with os.fdopen(read) as pipe:
        child = set(pipe.read().split(","))
    parent = {new_id("run") for _ in range(100)}
    assert len(child) == 100 and not child & parent
