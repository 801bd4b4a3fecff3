"""The web console with a JWT pasted at sign-in (``TENET_AUTH=both``), in headless Chromium."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import jwt
import pytest
from web_support import BackgroundServer

pytest.importorskip("playwright.sync_api", reason="Playwright for Python is not installed")

from playwright.sync_api import expect

from tenet.settings import Settings

SECRET = "the-web-console-test-secret-of-32-chars+"


@pytest.fixture(scope="module")
def jwt_web_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BackgroundServer]:
    db = tmp_path_factory.mktemp("web-jwt") / "tenet.db"
    server = BackgroundServer(
        Settings(
            database_url=f"sqlite+aiosqlite:///{db}",
            admin_token="web-admin-token",
            auth="both",
            auth_jwt_secret=SECRET,
        )
    )
    server.start()
    try:
        yield server
    finally:
        server.stop()


def test_pasting_a_jwt_signs_in_and_runs_an_agent(
    browser: Any, jwt_web_server: BackgroundServer
) -> None:
    token = jwt.encode(
        {"sub": "idp|ada", "iss": "https://idp.example", "name": "Ada", "exp": 4102444800},
        SECRET,
        algorithm="HS256",
    )
    context = browser.new_context()
    try:
        page = context.new_page()
        page.set_default_timeout(10_000)
        page.goto(jwt_web_server.url + "/")
        page.get_by_label("API token").fill(token)
        page.get_by_role("button", name="Sign in").click()
        expect(page.locator("#conn-status")).to_have_text("Connected")
        expect(page.locator("#whoami")).to_have_text("Signed in as Ada")
        page.get_by_label("Agent").select_option("assistant")
        box = page.get_by_label("Message")
        box.fill("what is 6 * 7?")
        box.press("Enter")
        run = page.locator("#timeline article.run").last
        expect(run).to_have_attribute("data-status", "completed", timeout=15_000)
        expect(run.locator(".ev.answer .answer-text")).to_have_text("The answer is 42.")
    finally:
        context.close()
