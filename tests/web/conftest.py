"""Fixtures of the web console tests: a real server in a background thread, headless Chromium.

See ``web_support.py`` for the server thread. The browser is Debian's ``/usr/bin/chromium``
driven by Playwright for Python; the tests skip, saying why, where either is missing.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from web_support import ARTIFACTS, CHROMIUM, CHROMIUM_ARGS, BackgroundServer, Console

from tenet.settings import Settings


def _why_skip() -> str | None:
    if importlib.util.find_spec("playwright") is None:
        return "Playwright for Python is not installed (pip install -e '.[dev]')"
    if not Path(CHROMIUM).exists():
        return f"{CHROMIUM} is missing (apt-get install chromium; .ci/run installs it)"
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    reason = _why_skip()
    if reason is None:
        return
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.skip(reason=reason))


@pytest.fixture(scope="session")
def web_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BackgroundServer]:
    if _why_skip():
        pytest.skip(_why_skip() or "")
    db = tmp_path_factory.mktemp("web") / "tenet.db"
    server = BackgroundServer(
        Settings(
            database_url=f"sqlite+aiosqlite:///{db}",
            admin_token="web-admin-token",
            secret_key="web-secret-key-0123456789",
        )
    )
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    # Module scope, not session: while the sync Playwright API is active its event loop
    # counts as running in this thread, which would break every pytest-asyncio test after it.
    if _why_skip():
        pytest.skip(_why_skip() or "")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def open_console(browser: Any, web_server: BackgroundServer) -> Iterator[Callable[..., Console]]:
    """``open_console("alice")``: a new user, a new browser context, signed in and connected."""
    contexts: list[Any] = []

    def open_(name: str, *, viewport: dict[str, int] | None = None) -> Console:
        user_id, token = web_server.new_user(name)
        context = browser.new_context(viewport=viewport or {"width": 1280, "height": 860})
        contexts.append(context)
        page = context.new_page()
        page.set_default_timeout(10_000)
        console = Console(page=page, user_id=user_id, token=token)
        page.on("pageerror", lambda exc: console.errors.append(f"pageerror: {exc}"))
        page.on(
            "console",
            lambda msg: (
                console.errors.append(f"console: {msg.text}") if msg.type == "error" else None
            ),
        )
        page.goto(web_server.url + "/")
        page.get_by_label("API token").fill(token)
        page.get_by_role("button", name="Sign in").click()
        page.wait_for_selector("#conn-status[data-state=connected]")
        return console

    yield open_
    for context in contexts:
        context.close()


@pytest.fixture(scope="session")
def artifacts() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS
