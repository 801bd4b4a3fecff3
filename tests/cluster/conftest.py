"""The cluster tests need Postgres and Redis (``.ci/run`` provides both)."""

from __future__ import annotations

import os
import shutil

import pytest

pytestmark = []


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    reason = None
    if not os.environ.get("TENET_TEST_POSTGRES_URL"):
        reason = "set TENET_TEST_POSTGRES_URL to run the cluster tests"
    elif not os.environ.get("TENET_TEST_REDIS_URL") or shutil.which("redis-server") is None:
        reason = "set TENET_TEST_REDIS_URL (and install redis-server) to run the cluster tests"
    if reason:
        for item in items:
            if "tests/cluster/" in str(item.fspath):
                item.add_marker(pytest.mark.skip(reason=reason))
