"""The users and deployments the mission-critical tests drive (real server, real sockets).

A deployment's users sign in the way its server is set up: with tenet tokens
(``TENET_AUTH=tokens``), or as subjects of a stand-in identity provider with JWTs
(``TENET_AUTH=jwt``). Every JWT user carries the same display name, so a name
shared by many subjects is seen never to merge them. Half of the users open their
sockets with the ``auth`` frame, the other half with the ``Authorization`` header.
"""

from __future__ import annotations

import asyncio
import secrets
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson
import pytest
from websockets.asyncio.client import ClientConnection, connect

from tenet.audit.checks import is_terminal
from tenet.testing_idp import LocalIdentityProvider

#: Marks a test to run once per way of signing in; it then takes the ``auth`` argument.
BOTH_AUTH = pytest.mark.parametrize("auth", ["tokens", "jwt"])
#: The display name every JWT user of a deployment has.
SHARED_NAME = "Same Name"


@dataclass
class User:
    """One user of the system under test, with everything its socket received."""

    name: str
    user_id: str
    token: str
    url: str
    frames: list[dict[str, Any]] = field(default_factory=list)
    #: Sign a socket in with the ``auth`` frame instead of the header.
    auth_frame: bool = False

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    @property
    def events(self) -> list[dict[str, Any]]:
        return [f for f in self.frames if "seq" in f]

    async def socket(self) -> ClientConnection:
        ws = await connect(
            "ws" + self.url[4:] + "/v1/ws",
            additional_headers=None if self.auth_frame else self.headers,
            max_size=2**24,
        )
        if self.auth_frame:
            await ws.send(orjson.dumps({"type": "auth", "token": self.token}).decode())
        ready = await self.recv(ws)
        assert ready["type"] == "ready" and ready["user_id"] == self.user_id
        return ws

    async def recv(self, ws: ClientConnection, timeout: float = 60) -> dict[str, Any]:
        frame = orjson.loads(await asyncio.wait_for(ws.recv(), timeout))
        self.frames.append(frame)
        return frame

    async def run(
        self, ws: ClientConnection, agent: str, input: str, thread_id: str | None = None
    ) -> str:
        """Send a run frame and read until its terminal event; returns the run id."""
        frame: dict[str, Any] = {"type": "run", "agent": agent, "input": input}
        if thread_id:
            frame["thread_id"] = thread_id
        await ws.send(orjson.dumps(frame).decode())
        run_id = None
        while True:
            f = await self.recv(ws)
            assert f.get("type") != "error", f
            if f.get("type") == "run_accepted":
                run_id = f["run_id"]
            elif run_id and f.get("run_id") == run_id and is_terminal(f):
                return run_id

    async def stored(self, thread_id: str) -> list[dict[str, Any]]:
        """Every stored event of the thread, page by page."""
        events: list[dict[str, Any]] = []
        async with httpx.AsyncClient(base_url=self.url, headers=self.headers) as http:
            while True:
                after = events[-1]["seq"] if events else 0
                r = await http.get(f"/v1/threads/{thread_id}/events", params={"after": after})
                assert r.status_code == 200, r.text
                events.extend(r.json())
                if len(r.json()) < 1000:
                    return events


@dataclass
class Deployment:
    server: Any
    #: The identity provider whose subjects the users are (``TENET_AUTH=jwt``), else None.
    idp: LocalIdentityProvider | None = None

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def service(self) -> Any:
        return self.server.service

    async def users(self, n: int, prefix: str = "u") -> list[User]:
        tag = secrets.token_hex(3)

        async def one(i: int) -> User:
            name = f"{prefix}-{tag}-{i}"
            if self.idp is None:
                user_id, token = await self.server.create_user(name)
            else:
                user_id, token = await self._jwt_user(name)
            return User(f"{prefix}{i}", user_id, token, self.url, auth_frame=i % 2 == 1)

        return list(await asyncio.gather(*(one(i) for i in range(n))))

    def sign_jwt(self, subject: str) -> str:
        """A JWT of the deployment's provider for ``subject`` (all with one display name)."""
        assert self.idp is not None
        return self.idp.token(subject, ttl_s=3600, name=SHARED_NAME)

    async def _jwt_user(self, subject: str) -> tuple[str, str]:
        """The user ``subject``'s first JWT makes; checks it is that subject's own."""
        assert self.idp is not None
        token = self.sign_jwt(subject)
        async with httpx.AsyncClient(base_url=self.url, timeout=30) as http:
            r = await http.get("/v1/me", headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 200, r.text
        me = r.json()
        assert (me["issuer"], me["subject"], me["name"]) == (self.idp.issuer, subject, SHARED_NAME)
        return me["user_id"], token
