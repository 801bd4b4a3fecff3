"""schemathesis against ``/openapi.json`` of a real server, with all its checks.

Every operation (except the streams, which never end, and revoking the token
the test uses) gets generated requests, valid and invalid, as an authenticated
user; every response must pass every check schemathesis has.
"""

from __future__ import annotations

from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from reliability_support import create_user_sync, threaded_server
from schemathesis.checks import CHECKS, load_all_checks

from tenet import Settings


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Any:
    db = tmp_path_factory.mktemp("schema") / "tenet.db"
    settings = Settings(
        database_url=f"sqlite+aiosqlite:///{db}", user_rate=0, secret_key="schemathesis-key"
    )
    with threaded_server(settings) as server:
        _user_id, token = create_user_sync(server, "schemathesis")
        yield server, token


def operations(schema: Any) -> list[Any]:
    ops = []
    for result in schema.get_all_operations():
        op = result.ok()
        if op.path.endswith("/stream") or op.path == "/v1/tokens/current":
            continue
        ops.append(op)
    return ops


def test_openapi_schema_holds_for_every_operation(api: Any) -> None:
    server, token = api
    schema = schemathesis.openapi.from_url(server.url + "/openapi.json")
    headers = {"Authorization": f"Bearer {token}"}
    load_all_checks()
    checks = list(CHECKS.get_all())
    assert len(checks) > 10, [c.__name__ for c in checks]
    failures: list[str] = []
    ops = operations(schema)
    assert len(ops) >= 10

    for op in ops:

        @given(case=op.as_strategy())
        @settings(
            max_examples=30,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def check(case: Any) -> None:
            case.call_and_validate(base_url=server.url, headers=headers, checks=checks)

        try:
            check()
        except (Exception, BaseExceptionGroup) as exc:
            failures.append(f"{op.method.upper()} {op.path}: {str(exc)[:1500]}")
    assert not failures, "\n\n".join(failures)
