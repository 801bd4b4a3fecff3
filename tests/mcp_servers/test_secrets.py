"""Per-user secrets: write-only, encrypted at rest, given only to their owner's sessions."""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
from pathlib import Path
from typing import Any

import pytest
from mcp_support import echo_registry, new_caller, stdio_command
from sqlalchemy import select
from websockets.asyncio.client import connect

from tenet.settings import Settings
from tenet.store.secrets import SecretBox
from tenet.store.tables import UserSecret
from tenet.testing import running_server

KEY = "test-secret-key-0123456789abcdef"


def settings(tmp_path: Path, **kw: Any) -> Settings:
    kw.setdefault("secret_key", KEY)
    return Settings(database_url=f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite'}", **kw)


async def test_secrets_round_trip_by_name_only(tmp_path: Path) -> None:
    value = "s3cr3t-" + secrets.token_hex(8)
    async with running_server(settings(tmp_path)) as srv:
        alice = await new_caller(srv)
        bob = await new_caller(srv)
        assert (await alice.set_secret("github_token", value)).status_code == 204
        assert (await alice.set_secret("github_token", value + "x")).status_code == 204
        listed = await alice.http.get("/v1/me/secrets")
        assert listed.status_code == 200
        assert [s["name"] for s in listed.json()["data"]] == ["github_token"]
        assert value not in listed.text
        assert (await bob.http.get("/v1/me/secrets")).json()["data"] == []
        assert (await bob.http.delete("/v1/me/secrets/github_token")).status_code == 404
        assert (await alice.http.delete("/v1/me/secrets/github_token")).status_code == 204
        assert (await alice.http.delete("/v1/me/secrets/github_token")).status_code == 404
        assert (await alice.http.get("/v1/me/secrets")).json()["data"] == []
        await alice.aclose()
        await bob.aclose()


@pytest.mark.parametrize(
    ("name", "body"),
    [
        ("bad name!", {"value": "v"}),
        ("x" * 65, {"value": "v"}),
        ("ok", {"value": ""}),
        ("ok", {"value": 12345678}),
        ("ok", {}),
        ("ok", {"value": "v" * 8193}),
    ],
)
async def test_bad_secrets_are_refused_without_echo(
    tmp_path: Path, name: str, body: dict[str, Any]
) -> None:
    async with running_server(settings(tmp_path)) as srv:
        alice = await new_caller(srv)
        r = await alice.http.put(f"/v1/me/secrets/{name}", json=body)
        await alice.aclose()
    assert r.status_code == 422, r.text
    assert r.json()["error"]["code"] == "invalid"
    assert "12345678" not in r.text


async def test_without_a_key_secrets_are_refused_clearly(tmp_path: Path) -> None:
    async with running_server(settings(tmp_path, secret_key=None)) as srv:
        alice = await new_caller(srv)
        r = await alice.set_secret("token", "value")
        listed = await alice.http.get("/v1/me/secrets")
        await alice.aclose()
    assert r.status_code == 503
    assert r.json()["error"]["code"] == "secrets_disabled"
    assert "TENET_SECRET_KEY" in r.json()["error"]["message"]
    assert listed.json() == {"data": [], "enabled": False}


async def test_secrets_are_encrypted_at_rest_and_bound_to_their_owner(tmp_path: Path) -> None:
    value = "plain-" + secrets.token_hex(8)
    async with running_server(settings(tmp_path)) as srv:
        alice = await new_caller(srv)
        bob = await new_caller(srv)
        await alice.set_secret("token", value)
        store = srv.service.store
        async with store.read() as s:
            row = (await s.execute(select(UserSecret))).scalar_one()
        assert value.encode() not in bytes(row.sealed)
        # The sealed value copied to another user (or read with another key) does not open.
        async with store.write() as s:
            s.add(
                UserSecret(
                    user_id=bob.user_id, name="token", sealed=row.sealed, updated_at=row.updated_at
                )
            )
        box = srv.service.secrets
        assert await box.get(alice.user_id, "token") == value
        assert await box.get(bob.user_id, "token") is None
        assert await SecretBox(store, "another key").get(alice.user_id, "token") is None
        await alice.aclose()
        await bob.aclose()


async def test_no_response_event_frame_or_log_line_holds_a_secret(
    tmp_path: Path, echo_http: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Values go into MCP sessions only: grep every log record, frame and response for them."""
    caplog.set_level(logging.DEBUG)
    values = {}
    seen: list[str] = []
    registry = echo_registry(echo_http, stdio_command())
    async with running_server(settings(tmp_path), registry) as srv:
        users = [await new_caller(srv) for _ in range(3)]
        for user in users:
            values[user.user_id] = "tok-" + secrets.token_hex(12)
            r = await user.set_secret("echo_token", values[user.user_id])
            seen.append(r.text)
        frames: list[str] = []

        async def listen(user: Any, ready: asyncio.Event) -> None:
            async with connect(
                srv.ws_url, additional_headers={"Authorization": f"Bearer {user.token}"}
            ) as ws:
                frames.append(str(await ws.recv()))
                await ws.send(json.dumps({"type": "subscribe", "thread_id": user.thread_id}))
                ready.set()
                try:
                    while True:
                        frames.append(str(await asyncio.wait_for(ws.recv(), 3)))
                except (TimeoutError, Exception):
                    return

        for user in users:
            await user.start("use web__remember value=warmup")  # makes the thread
        listeners = []
        for user in users:
            ready = asyncio.Event()
            listeners.append(asyncio.create_task(listen(user, ready)))
            await ready.wait()
        for user in users:
            for tool in ("web__recall", "proc__recall", "web__refuse", "proc__refuse"):
                done = await user.call(tool)
                seen.append(json.dumps(done))
            for tool in ("web__careless", "proc__careless"):
                careless = await user.call(tool)
                assert careless["ok"] is True
                assert careless["results"]["result"].endswith(" ***"), careless
                seen.append(json.dumps(careless))
            refused = await user.call("web__refuse")
            assert refused["ok"] is False and refused["error"]["code"] == "mcp_tool_error"
            assert "***" in refused["error"]["message"]
            r = await user.http.get(f"/v1/threads/{user.thread_id}/events")
            seen.append(r.text)
            seen.append((await user.http.get("/v1/me/secrets")).text)
            seen.append((await user.http.get("/v1/agents")).text)
        await asyncio.gather(*listeners)
        for user in users:
            await user.aclose()
    text = "\n".join(seen + frames + [r.getMessage() for r in caplog.records] + [caplog.text])
    assert len(frames) > 10
    for value in values.values():
        assert value not in text
