"""The per-event shortcuts give exactly what the long way gives.

IDs are encoded a block at a time and a millisecond's wire stamp is reused: each
must be indistinguishable from encoding one ID, formatting one stamp. The
isolation guard reads the top-level owner, never a nested one.
"""

from __future__ import annotations

import base64
import logging
import random
from datetime import UTC, datetime

import orjson
import pytest
from prometheus_client import CollectorRegistry, Counter

from tenet.clock import wire_time
from tenet.ids import is_valid, new_id, token_hex
from tenet.server.guard import IsolationGuard


def test_block_encoded_ids_are_the_base64_of_sixteen_random_bytes() -> None:
    seen = set()
    for _ in range(3 * 256 + 7):  # across block boundaries
        value = new_id("evt")
        assert is_valid(value, "evt")
        raw = base64.urlsafe_b64decode(value[4:] + "==")
        assert len(raw) == 16
        assert base64.urlsafe_b64encode(raw).rstrip(b"=").decode() == value[4:]
        seen.add(raw)
    assert len(seen) == 3 * 256 + 7
    assert len(token_hex(8)) == 16 and token_hex(8) != token_hex(8)


def test_wire_stamps_match_datetime_formatting_across_boundaries() -> None:
    rng = random.Random(7)
    base = 1_800_000_000_000_000
    # Runs of stamps within one millisecond, across millisecond and second edges.
    stamps = [base + i * 250 for i in range(20_000)]
    stamps += sorted(rng.randrange(base, base + 10**12) for _ in range(20_000))
    stamps += [base + 999_999, base + 1_000_000, base + 999_999]  # back in time too
    for us in stamps:
        ms = us // 1000
        want = datetime.fromtimestamp(ms // 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S")
        assert wire_time(us) == f"{want}.{ms % 1000:03d}Z"


def _event(user_id: str, **extra: object) -> str:
    data = {
        "type": "tool_executing",
        "event_id": new_id("evt"),
        "seq": 7,
        "user_id": user_id,
        "thread_id": new_id("thr"),
        "run_id": new_id("run"),
        **extra,
    }
    return orjson.dumps(data).decode()


@pytest.fixture
def guard() -> IsolationGuard:
    return IsolationGuard(Counter("violations", "test", registry=CollectorRegistry()))


def test_guard_reads_the_top_level_owner_only(
    guard: IsolationGuard, caplog: pytest.LogCaptureFixture
) -> None:
    me, other = new_id("usr"), new_id("usr")
    caplog.set_level(logging.CRITICAL, logger="tenet.isolation")
    assert guard.allows(me, _event(me, parameters={"user_id": other}), channel="t")
    assert not guard.allows(me, _event(other, parameters={"user_id": me}), channel="t")
    # An inner user_id first: only the top-level one counts.
    odd = orjson.dumps({"parameters": {"user_id": me}, "user_id": other}).decode()
    assert not guard.allows(me, odd, channel="t")
    fine = orjson.dumps({"parameters": {"user_id": other}, "user_id": me}).decode()
    assert guard.allows(me, fine, channel="t")
    assert not guard.allows(me, "not json", channel="t")
    assert guard.blocked == 3
