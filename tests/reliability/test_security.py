"""Security hygiene on a real server: tokens never logged or stored, no leaks, CORS, headers."""

from __future__ import annotations

import asyncio
import json
import secrets
import sqlite3
from pathlib import Path

import httpx
from reliability_support import serve_process
from server_support import close_code, http, new_user, recv, send
from websockets.asyncio.client import connect

from tenet import Settings
from tenet.testing import running_server

ROOT = Path(__file__).resolve().parents[2]


async def test_tokens_never_appear_in_logs_nor_in_the_database(tmp_path: Path) -> None:
    """A real ``tenet serve`` at DEBUG (libraries print headers and frames there)."""
    admin = secrets.token_urlsafe(16)
    db = tmp_path / "tenet.db"
    log = tmp_path / "serve.log"
    env = {
        "TENET_DATABASE_URL": f"sqlite+aiosqlite:///{db}",
        "TENET_ADMIN_TOKEN": admin,
        "TENET_LOG_LEVEL": "DEBUG",
    }
    async with serve_process(env, log) as proc:
        async with httpx.AsyncClient(base_url=proc.url) as c:
            r = await c.post(
                "/v1/users", json={"name": "alice"}, headers={"Authorization": f"Bearer {admin}"}
            )
            token = r.json()["token"]
            auth = {"Authorization": f"Bearer {token}"}
            assert (await c.get("/v1/me", headers=auth)).status_code == 200
            extra = (await c.post("/v1/tokens", headers=auth)).json()["token"]
            wrong = token[:-4] + "AAAA"
            for bad in (wrong, extra + "x", "Bearer " + token):
                r = await c.get("/v1/me", headers={"Authorization": f"Bearer {bad}"})
                assert r.status_code == 401
                assert token not in r.text and extra not in r.text
            r = await c.get("/metrics", headers={"Authorization": f"Bearer {wrong}"})
            assert r.status_code == 401
        ws_url = proc.ws_url
        async with connect(ws_url, additional_headers=auth) as ws:  # header
            assert json.loads(await ws.recv())["type"] == "ready"
            await send(ws, {"type": "auth", "token": extra})  # after auth: a refresh
            assert (await recv(ws))["type"] == "ready"
        async with connect(ws_url) as ws:  # first frame
            await send(ws, {"type": "auth", "token": extra})
            assert json.loads(await ws.recv())["type"] == "ready"
        async with connect(ws_url) as ws:
            await send(ws, {"type": "auth", "token": wrong})
            assert await close_code(ws) == 4401
        async with httpx.AsyncClient(base_url=proc.url, headers=auth) as c:
            assert (await c.delete("/v1/tokens/current")).status_code == 204
            assert (await c.get("/v1/me")).status_code == 401
        proc.signal()
        await proc.wait_exit()
    logged = log.read_text()
    assert "authorization" in logged.lower(), "DEBUG logging was not on: this proves nothing"
    with sqlite3.connect(db) as conn:
        dump = "\n".join(conn.iterdump())
    for secret in (token, extra, wrong, admin):
        assert secret not in logged
        assert secret not in dump  # stored as a hash only


async def test_a_bug_answers_a_bare_500_without_stack_trace_or_data(make_settings) -> None:
    async with running_server(make_settings()) as server:
        alice = await new_user(server)

        async def broken(*_args: object, **_kwargs: object) -> None:
            raise RuntimeError(f"secret detail of {alice.user_id} at /srv/tenet.py line 7")

        server.service.store.list_threads = broken  # type: ignore[method-assign]
        async with http(server, alice) as c:
            r = await c.get("/v1/threads")
        assert r.status_code == 500
        assert r.json() == {"error": {"code": "internal", "message": "internal error"}}
        for leak in ("secret", "Traceback", alice.user_id, "tenet.py", "RuntimeError"):
            assert leak not in r.text


async def test_cors_is_off_by_default(make_settings) -> None:
    async with running_server(make_settings()) as server, http(server) as c:
        pre = await c.options(
            "/v1/me",
            headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "GET"},
        )
        got = await c.get("/healthz", headers={"Origin": "https://evil.example"})
    for r in (pre, got):
        assert "access-control-allow-origin" not in r.headers


async def test_cors_allows_only_the_configured_origins(make_settings) -> None:
    settings = make_settings(cors_origins="https://app.example, https://admin.example")
    async with running_server(settings) as server:
        alice = await new_user(server)
        async with http(server) as c:
            pre = await c.options(
                "/v1/me",
                headers={
                    "Origin": "https://app.example",
                    "Access-Control-Request-Method": "GET",
                    "Access-Control-Request-Headers": "authorization",
                },
            )
            assert pre.status_code == 200
            assert pre.headers["access-control-allow-origin"] == "https://app.example"
            ok = await c.get("/v1/me", headers={**alice.headers, "Origin": "https://admin.example"})
            assert ok.headers["access-control-allow-origin"] == "https://admin.example"
            other = await c.get("/v1/me", headers={**alice.headers, "Origin": "https://x.example"})
            assert "access-control-allow-origin" not in other.headers
            # Errors carry it too, so a browser app can read them.
            denied = await c.get("/v1/me", headers={"Origin": "https://app.example"})
            assert denied.status_code == 401
            assert denied.headers["access-control-allow-origin"] == "https://app.example"


async def test_the_web_page_has_its_security_headers(make_settings) -> None:
    async with running_server(make_settings()) as server, http(server) as c:
        for path in ("/", "/static/app.js", "/static/style.css"):
            r = await c.get(path)
            assert r.status_code == 200
            csp = r.headers["content-security-policy"]
            assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp
            assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
            assert r.headers["x-content-type-options"] == "nosniff"
            assert r.headers["x-frame-options"] == "DENY"
            assert r.headers["referrer-policy"] == "no-referrer"
        traversal = await c.get("/static/..%2f..%2fsettings.py")
        assert traversal.status_code == 404


def test_admin_token_is_compared_in_constant_time_and_user_tokens_by_hash() -> None:
    source = (ROOT / "src/tenet/server/auth.py").read_text()
    assert "hmac.compare_digest" in source
    store = (ROOT / "src/tenet/store/db.py").read_text()
    assert "def hash_token" in store and "sha256" in store


def test_ci_audits_the_locked_dependencies() -> None:
    ci = (ROOT / ".ci/run").read_text()
    assert "pip-audit" in ci and "requirements.lock" in ci
    lock = (ROOT / "requirements.lock").read_text().splitlines()
    pins = [line for line in lock if line and not line.startswith("#")]
    assert pins and all("==" in line for line in pins)
    assert not any(line.lower().startswith("tenet") for line in pins)


async def test_settings_render_no_secrets(make_settings) -> None:
    s: Settings = make_settings(admin_token="admintokensecret", model_api_key="sk-secret")
    # Settings are never sent: the one place that renders them is OpenAPI, which has none.
    async with running_server(s) as server:
        async with httpx.AsyncClient(base_url=server.url) as c:
            spec = (await c.get("/openapi.json")).text
    assert "admintokensecret" not in spec and "sk-secret" not in spec
    await asyncio.sleep(0)
    assert json.loads(spec)["openapi"]
