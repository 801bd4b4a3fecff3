"""Hostile input, fuzzed: several users' frames and calls in random order against a real server.

A hypothesis state machine drives three users, each with a canary secret in its
threads, messages and notes. Steps send valid frames, malformed ones, oversized
ones, foreign ids, spoofed identity fields, unicode and NUL, and floods, over
WebSocket and HTTP. After every step: no 500, nothing of another user's
(canary, user id) in any frame or body, every socket that should be open is
open, and ``/healthz`` is ok. The budget is fixed and the run derandomized, so
CI is fast and deterministic.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule
from reliability_support import create_user_sync, threaded_server
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from tenet import Settings
from tenet.testing import ServerHandle

USERS = 3
MAX_SOCKETS = 2
FRAME_LIMIT = 4096


@dataclass
class FuzzUser:
    user_id: str
    token: str
    canary: str
    threads: list[str] = field(default_factory=list)
    runs: list[str] = field(default_factory=list)
    sockets: list[ClientConnection] = field(default_factory=list)

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


@pytest.fixture(scope="module")
def fuzz_server(tmp_path_factory: pytest.TempPathFactory) -> Any:
    db = tmp_path_factory.mktemp("fuzz") / "tenet.db"
    s = Settings(
        database_url=f"sqlite+aiosqlite:///{db}",
        ws_max_frame_bytes=FRAME_LIMIT,
        max_body_bytes=8192,
        max_input_chars=2000,
        ws_max_connections=MAX_SOCKETS + 1,
        user_rate=200.0,
        user_burst=400,
    )
    with threaded_server(s) as server:
        users = []
        for i in range(USERS):
            user_id, token = create_user_sync(server, f"fuzz-{i}")
            user = FuzzUser(user_id, token, canary=f"CANARY{i}x{secrets.token_hex(6)}")
            with httpx.Client(base_url=server.url, headers=user.headers, timeout=10) as c:
                r = c.post("/v1/threads", json={"metadata": {"secret": user.canary}})
                user.threads.append(r.json()["id"])
                r = c.post(
                    f"/v1/threads/{user.threads[0]}/runs",
                    json={"agent": "assistant", "input": f"remember {user.canary}"},
                )
                user.runs.append(r.json()["id"])
            users.append(user)
        yield server, users


text_values = st.one_of(
    st.text(max_size=40),
    st.sampled_from(
        ["\x00", "\u202e", "💥" * 10, "a\x00b", "\U0001d54f" * 50, "\ud7ff", "%00", "../.."]
    ),
)
json_values = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.floats(allow_nan=False, allow_infinity=False),
        text_values,
    ),
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=10,
)
frame_types = st.sampled_from(
    ["run", "subscribe", "unsubscribe", "cancel", "ping", "auth", "bogus", None, 7]
)


def make_fuzz_machine(server: ServerHandle, users: list[FuzzUser]) -> type:
    others = {
        u.user_id: [v.canary for v in users if v is not u]
        + [v.user_id for v in users if v is not u]
        for u in users
    }

    class HostileInput(RuleBasedStateMachine):
        def __init__(self) -> None:
            super().__init__()
            self.pings = 0
            self.http = {
                u.user_id: httpx.Client(base_url=server.url, headers=u.headers, timeout=10)
                for u in users
            }

        def teardown(self) -> None:
            for u in users:
                for ws in u.sockets:
                    ws.close()
                u.sockets.clear()
            for c in self.http.values():
                c.close()

        # Checks ----------------------------------------------------------------------------

        def check_text(self, user: FuzzUser, text: str, where: str) -> None:
            for secret in others[user.user_id]:
                assert secret not in text, f"{where}: another user's data reached {user.user_id}"

        def check_response(self, user: FuzzUser, r: httpx.Response) -> None:
            assert r.status_code != 500, r.text
            assert r.status_code < 500 or r.status_code == 503, r.text
            self.check_text(user, r.text, "http")
            if (
                r.headers.get("content-type", "").startswith("application/json")
                and r.status_code >= 400
            ):
                assert set(r.json()) == {"error"}

        def sync(self, user: FuzzUser, ws: ClientConnection) -> list[dict[str, Any]]:
            """Every frame up to the answer of a ping sent now (frames are answered in order)."""
            self.pings += 1
            ref = f"sync-{self.pings}"
            ws.send(json.dumps({"type": "ping", "ref": ref}))
            frames = []
            while True:
                raw = ws.recv(timeout=10)
                text = raw if isinstance(raw, str) else raw.decode()
                self.check_text(user, text, "websocket")
                frame = json.loads(text)
                if "user_id" in frame:
                    assert frame["user_id"] == user.user_id
                if frame.get("ref") == ref:
                    if frame["type"] == "error":  # rate limited: the socket is still alive
                        assert frame["code"] == "rate_limited", frame
                    return frames
                frames.append(frame)

        # Rules -----------------------------------------------------------------------------

        @precondition(lambda self: any(len(u.sockets) < MAX_SOCKETS for u in users))
        @rule(i=st.integers(0, USERS - 1))
        def open_socket(self, i: int) -> None:
            user = users[i]
            if len(user.sockets) >= MAX_SOCKETS:
                return
            ws = connect(server.ws_url, additional_headers=user.headers, open_timeout=5)
            frame = json.loads(ws.recv(timeout=5))
            assert frame["type"] == "ready" and frame["user_id"] == user.user_id
            user.sockets.append(ws)

        @precondition(lambda self: any(u.sockets for u in users))
        @rule(i=st.integers(0, USERS - 1))
        def close_socket(self, i: int) -> None:
            if users[i].sockets:
                users[i].sockets.pop().close()

        @rule(
            i=st.integers(0, USERS - 1),
            kind=frame_types,
            body=st.dictionaries(
                st.sampled_from(
                    [
                        "agent",
                        "input",
                        "thread_id",
                        "run_id",
                        "after",
                        "ref",
                        "user_id",
                        "token",
                        "metadata",
                    ]
                ),
                json_values,
                max_size=5,
            ),
        )
        def send_random_frame(self, i: int, kind: Any, body: dict[str, Any]) -> None:
            user = users[i]
            if not user.sockets:
                return
            frame = {**body, "type": kind}
            if frame.get("agent") is not None and not isinstance(frame.get("agent"), str):
                frame["agent"] = "assistant"
            user.sockets[0].send(json.dumps(frame))
            self.sync(user, user.sockets[0])

        @rule(
            i=st.integers(0, USERS - 1),
            j=st.integers(0, USERS - 1),
            action=st.sampled_from(["subscribe", "cancel", "run", "unsubscribe"]),
        )
        def foreign_ids_and_spoofed_identity(self, i: int, j: int, action: str) -> None:
            user, victim = users[i], users[j]
            if not user.sockets or user is victim:
                return
            frame: dict[str, Any] = {
                "type": action,
                "ref": "f",
                "user_id": victim.user_id,
                "token": victim.token[:10],
                "thread_id": victim.threads[0],
                "run_id": victim.runs[0],
                "agent": "assistant",
                "input": "recall everything",
            }
            user.sockets[0].send(json.dumps(frame))
            frames = self.sync(user, user.sockets[0])
            answer = next(f for f in frames if f.get("ref") == "f")
            assert answer["type"] == "error" and answer["code"] == "not_found", answer
            r = self.http[user.user_id].get(f"/v1/threads/{victim.threads[0]}/events")
            assert r.status_code == 404
            self.check_response(user, r)

        @rule(
            i=st.integers(0, USERS - 1),
            raw=st.one_of(
                st.binary(max_size=64),
                st.text(max_size=64),
                st.just("x" * (FRAME_LIMIT + 10)),
                st.just('{"type": "ping", "pad": "' + "\x00" * 10 + '"}'),
                st.just("[1, 2]"),
                st.just('{"type": "run", "agent": "assistant", "input": "' + "é" * 3000 + '"}'),
            ),
        )
        def malformed_and_oversized(self, i: int, raw: Any) -> None:
            user = users[i]
            if not user.sockets:
                return
            ws = user.sockets[0]
            ws.send(raw)
            if len(raw if isinstance(raw, bytes) else raw.encode()) > FRAME_LIMIT:
                # The transport refuses it from its header: that socket closes with 1009.
                with pytest.raises(ConnectionClosed) as closed:
                    self.sync(user, ws)
                assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009
                user.sockets.remove(ws)
                return
            self.sync(user, ws)

        @rule(i=st.integers(0, USERS - 1))
        def flood(self, i: int) -> None:
            user = users[i]
            if user.sockets:
                for n in range(50):
                    user.sockets[0].send(json.dumps({"type": "ping", "ref": str(n)}))
                self.sync(user, user.sockets[0])
            for _ in range(10):
                self.check_response(user, self.http[user.user_id].get("/v1/threads"))

        @rule(
            i=st.integers(0, USERS - 1),
            j=st.integers(0, USERS - 1),
            method=st.sampled_from(["GET", "POST", "DELETE", "PUT", "PATCH"]),
            path=st.sampled_from(
                [
                    "/v1/threads/{t}",
                    "/v1/threads/{t}/events",
                    "/v1/threads/{t}/messages",
                    "/v1/runs/{r}",
                    "/v1/runs/{r}/cancel",
                    "/v1/threads/{t}/runs",
                    "/v1/threads",
                    "/v1/me",
                    "/v1/agents",
                    "/v1/users",
                    "/metrics",
                    "/v1/threads/{x}",
                    "/v1/threads?limit={x}&before={x}",
                    "/v1/threads/{t}/events?after={x}",
                ]
            ),
            x=text_values,
            body=json_values,
        )
        def http_call(self, i: int, j: int, method: str, path: str, x: str, body: Any) -> None:
            user, owner = users[i], users[j]
            url = path.format(t=owner.threads[0], r=owner.runs[0], x=x.replace("/", "%2F"))
            if method == "DELETE" and "{t}" in path:
                return  # deleting the canary threads would end the checks
            try:
                r = self.http[user.user_id].request(method, url, json=body)
            except httpx.InvalidURL:
                return
            self.check_response(user, r)
            if owner is not user and ("{t}" in path or "{r}" in path) and method in ("GET",):
                assert r.status_code in (404, 405, 422, 429), (url, r.status_code)

        # Invariants --------------------------------------------------------------------------

        @invariant()
        def server_healthy_and_sockets_open(self) -> None:
            assert httpx.get(server.url + "/healthz", timeout=5).status_code == 200
            for user in users:
                for ws in user.sockets:
                    try:
                        self.sync(user, ws)
                    except ConnectionClosed as exc:  # pragma: no cover - the failure itself
                        raise AssertionError(f"a socket that should be open closed: {exc}") from exc

    return HostileInput


def test_hostile_input_never_breaks_isolation_or_the_server(fuzz_server: Any) -> None:
    server, users = fuzz_server
    machine = make_fuzz_machine(server, users)
    machine.TestCase.settings = settings(
        max_examples=10,
        stateful_step_count=12,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    machine.TestCase().runTest()
