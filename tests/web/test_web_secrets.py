"""The console's secrets page: set and delete one's secrets; a value is never shown."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

pytest.importorskip("playwright.sync_api", reason="Playwright for Python is not installed")
from playwright.sync_api import expect


def test_set_and_delete_a_secret_whose_value_is_never_shown(
    open_console: Any, web_server: Any
) -> None:
    alice = open_console("alice-secrets")
    page = alice.page
    page.get_by_role("button", name="Secrets").click()
    dialog = page.locator("#secrets-dialog")
    expect(dialog).to_be_visible()
    expect(dialog.locator("#secrets-list")).to_contain_text("No secrets yet.")
    value = "ghp_console_value_123456"
    dialog.get_by_label("Name").fill("github_token")
    dialog.get_by_label("Value").fill(value)
    dialog.get_by_role("button", name="Save").click()
    expect(dialog.locator("#secrets-list")).to_contain_text("github_token")
    expect(dialog.get_by_label("Value")).to_have_value("")
    assert value not in page.content()
    listed = httpx.get(
        web_server.url + "/v1/me/secrets", headers={"Authorization": f"Bearer {alice.token}"}
    ).json()
    assert [s["name"] for s in listed["data"]] == ["github_token"]

    dialog.locator("#secrets-list button", has_text="Delete").click()
    expect(dialog.locator("#secrets-list")).to_contain_text("No secrets yet.")
    dialog.get_by_role("button", name="Close").click()
    expect(dialog).to_be_hidden()
    assert not alice.errors, alice.errors
