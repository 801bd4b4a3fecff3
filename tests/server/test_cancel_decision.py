"""Cancel versus end, decided once, on one process and every backend (see cancel_sweep)."""

from __future__ import annotations

from server_support import new_user

from cancel_sweep import sweep
from tenet.settings import Settings
from tenet.testing import running_server

#: Rounds: every moment of a run's life, over WebSocket and HTTP, several times over.
ROUNDS = 64


async def test_a_cancel_is_accepted_only_when_the_run_then_ends_cancelled(
    database_url: str,
) -> None:
    async with running_server(Settings(database_url=database_url)) as srv:
        user = await new_user(srv)
        outcomes = await sweep(srv.url, srv.ws_url, user.token, rounds=ROUNDS)
    # Both outcomes happened: the sweep crossed the moment where the end wins.
    assert outcomes.get("ws:cancelled") and outcomes.get("ws:completed"), outcomes
    assert outcomes.get("http:cancelled") and outcomes.get("http:completed"), outcomes
