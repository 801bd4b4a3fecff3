"""The web console answers a run waiting for a person, in headless Chromium.

A run paused on an approval or a question shows the request in its timeline with the
arguments; the user approves (arguments as asked, or edited: JSON checked before anything
is sent), denies with a note, or answers the question; the run then goes on to its end.
The page is rebuilt from stored events, so a pending request is still answerable after a
reload, and an answered one shows how it was answered.
"""

from __future__ import annotations

from typing import Any

import pytest
from test_web_console import api, current_thread_id, send, wait_run_done
from web_support import BackgroundServer, Console

pytest.importorskip("playwright.sync_api", reason="Playwright for Python is not installed")

from playwright.sync_api import expect


def waiting_runs(server: BackgroundServer, console: Console) -> list[str]:
    return [r["id"] for r in api(server, console.token, "/v1/runs?status=requires_action")]


def reload(console: Console) -> None:
    """Reload the page: the token is kept for the tab, the thread comes from the address."""
    console.page.reload()
    console.page.wait_for_selector("#conn-status[data-state=connected]")


def test_approve_the_assistants_forget_call(
    open_console: Any, web_server: BackgroundServer
) -> None:
    alice = open_console("alice-approves")
    page = alice.page
    send(alice, "forget my notes")
    run = page.locator("#timeline article.run").last
    request = run.locator(".ev.approval")
    expect(request).to_have_attribute("data-state", "pending")
    expect(request.locator(".label")).to_have_text("Approval needed: forget")
    expect(request.locator(".approval-params")).to_have_text("{}")
    expect(run).to_have_attribute("data-status", "requires_action")
    run_id = run.get_attribute("data-run-id")
    assert waiting_runs(web_server, alice) == [run_id]

    request.get_by_role("button", name="Approve").click()
    expect(wait_run_done(alice)).to_have_attribute("data-status", "completed")
    expect(request).to_have_attribute("data-state", "approved")
    expect(request.locator(".request-outcome")).to_have_text("✓ Approved by you")
    expect(request.get_by_role("button", name="Approve")).to_have_count(0)
    expect(run.locator(".ev.tool .tool-state")).to_contain_text("Forgot 0 notes")
    assert waiting_runs(web_server, alice) == []
    assert alice.errors == []


def test_bad_json_is_not_sent_and_deny_tells_the_model_why(
    open_console: Any, web_server: BackgroundServer
) -> None:
    bob = open_console("bob-denies")
    page = bob.page
    send(bob, "delete all notes")
    request = page.locator("#timeline .ev.approval").last
    expect(request).to_have_attribute("data-state", "pending")

    request.get_by_label("Arguments (JSON, editable)").fill('{"all": tru')
    request.get_by_role("button", name="Approve").click()
    expect(request.locator(".request-error")).to_contain_text("not valid JSON")
    request.get_by_label("Arguments (JSON, editable)").fill("[1, 2]")
    request.get_by_role("button", name="Approve").click()
    expect(request.locator(".request-error")).to_contain_text("must be a JSON object")
    # Nothing went out: the run still waits on the server.
    assert len(waiting_runs(web_server, bob)) == 1
    expect(request).to_have_attribute("data-state", "pending")

    # Edited arguments the tool refuses are the server's error, and the call stays pending.
    request.get_by_label("Arguments (JSON, editable)").fill('{"everything": true}')
    request.get_by_role("button", name="Approve").click()
    expect(request.locator(".request-error")).to_contain_text("Not accepted")
    expect(request).to_have_attribute("data-state", "pending")
    assert len(waiting_runs(web_server, bob)) == 1

    request.get_by_label("Note").fill("keep them for now")
    request.get_by_role("button", name="Deny").click()
    run = wait_run_done(bob)
    expect(run).to_have_attribute("data-status", "completed")
    expect(request).to_have_attribute("data-state", "denied")
    expect(request.locator(".request-outcome")).to_have_text(
        "✗ Denied (you) · note: keep them for now"
    )
    expect(run.locator(".ev.tool .tool-state")).to_contain_text("declined")
    assert waiting_runs(web_server, bob) == []
    assert bob.errors == []


def test_a_question_and_an_edited_approval_survive_reloads(
    open_console: Any, web_server: BackgroundServer
) -> None:
    carol = open_console("carol-reloads")
    page = carol.page
    send(carol, "see you at noon", agent="courier")
    question = page.locator("#timeline .ev.question").last
    expect(question.locator(".request-text")).to_have_text("Who is the note for?")
    thread_id = current_thread_id(carol)

    reload(carol)
    question = page.locator("#timeline .ev.question").last
    expect(question).to_have_attribute("data-state", "pending")
    question.get_by_label("Your answer").fill("dave")
    question.get_by_role("button", name="Send answer").click()
    expect(question).to_have_attribute("data-state", "answered")
    expect(question.locator(".request-outcome")).to_have_text('✓ Answered: "dave"')

    request = page.locator("#timeline .ev.approval").last
    expect(request.locator(".label")).to_have_text("Approval needed: send_note")
    expect(request.locator(".approval-params")).to_contain_text('"to": "dave"')
    reload(carol)
    assert current_thread_id(carol) == thread_id
    request = page.locator("#timeline .ev.approval").last
    expect(request).to_have_attribute("data-state", "pending")
    request.get_by_label("Arguments (JSON, editable)").fill('{"to": "erin", "text": "at one"}')
    request.get_by_role("button", name="Approve").click()
    run = wait_run_done(carol)
    expect(run).to_have_attribute("data-status", "completed")
    expect(run.locator(".ev.answer")).to_contain_text("sent to erin: at one")

    reload(carol)
    run = wait_run_done(carol)
    expect(run.locator(".ev.question")).to_have_attribute("data-state", "answered")
    request = run.locator(".ev.approval")
    expect(request).to_have_attribute("data-state", "approved")
    expect(request.locator(".request-outcome")).to_contain_text('"to":"erin"')
    expect(run.locator("textarea")).to_have_count(0)
    assert carol.errors == []
