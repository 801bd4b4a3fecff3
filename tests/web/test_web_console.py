"""The web console at ``/``, driven in headless Chromium against a real server.

Each test reads like the promise it checks: a user signs in and watches a run live; two
users in two browser contexts never see each other's threads or events; a socket the
server drops mid-run is resumed with no event lost or repeated; text that looks like
markup stays text.
"""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest
from web_support import BackgroundServer, Console

pytest.importorskip("playwright.sync_api", reason="Playwright for Python is not installed")

from playwright.sync_api import expect

TERMINAL = "[data-status=completed], [data-status=failed], [data-status=cancelled]"


def send(console: Console, text: str, agent: str = "assistant") -> None:
    page = console.page
    page.get_by_label("Agent").select_option(agent)
    box = page.get_by_label("Message")
    box.fill(text)
    box.press("Enter")


def wait_run_done(console: Console, index: int = -1, timeout: float = 15_000) -> Any:
    runs = console.page.locator("#timeline article.run")
    run = runs.nth(index) if index >= 0 else runs.last
    expect(run).to_have_attribute(
        "data-status", re.compile("completed|failed|cancelled"), timeout=timeout
    )
    return run


def rendered_seqs(console: Console) -> list[int]:
    return console.page.eval_on_selector_all(
        "#timeline [data-seq]", "els => els.map(e => Number(e.dataset.seq))"
    )


def current_thread_id(console: Console) -> str:
    return console.page.locator("#timeline .thread-view").get_attribute("data-thread-id") or ""


def api(server: BackgroundServer, token: str, path: str) -> Any:
    r = httpx.get(server.url + path, headers={"Authorization": f"Bearer {token}"}, timeout=10)
    r.raise_for_status()
    return r.json()


def stored_events(
    server: BackgroundServer, console: Console, thread_id: str
) -> list[dict[str, Any]]:
    return api(server, console.token, f"/v1/threads/{thread_id}/events?after=0&limit=1000")


def test_sign_in_run_the_assistant_see_the_tool_call_and_the_answer(
    open_console: Any, web_server: BackgroundServer, artifacts: Any
) -> None:
    alice = open_console("alice")
    page = alice.page
    expect(page.locator("#conn-status")).to_have_text("Connected")
    expect(page.locator("#whoami")).to_have_text("Signed in as alice")
    expect(page.locator("#agent-description")).to_contain_text("calculator")

    send(alice, "what is 6 * 7?")
    run = wait_run_done(alice)
    expect(run).to_have_attribute("data-status", "completed")
    expect(run.locator(".user-input")).to_contain_text("what is 6 * 7?")
    expect(run.locator(".ev.started")).to_contain_text("assistant started")
    expect(run.locator(".ev.thinking").first).to_contain_text("Thinking")

    tool = run.locator(".ev.tool details")
    expect(tool.locator("summary")).to_contain_text("calculator")
    expect(tool.locator(".tool-part").first).to_be_hidden()  # folded until asked
    tool.locator("summary").click()
    expect(tool.locator(".tool-part").first).to_contain_text('"expression": "6 * 7"')
    expect(tool.locator(".tool-part.result")).to_contain_text("42")

    expect(run.locator(".ev.answer .answer-text")).to_have_text("The answer is 42.")
    expect(run.locator(".ev.done")).to_contain_text(re.compile(r"Completed in [\d.]+ (ms|s)"))
    expect(run.locator("button.cancel")).to_be_hidden()

    # The new thread is listed (titled by its first input) and selected.
    thread_id = current_thread_id(alice)
    listed = page.locator("#threads button.thread")
    expect(listed).to_have_count(1)
    expect(listed.first).to_have_attribute("data-thread-id", thread_id)
    expect(listed.first).to_have_attribute("aria-current", "true")
    expect(listed.first.locator(".thread-title")).to_have_text("what is 6 * 7?")

    events = stored_events(web_server, alice, thread_id)
    assert rendered_seqs(alice) == [e["seq"] for e in events]
    page.screenshot(path=str(artifacts / "web-console.png"), full_page=True)
    assert alice.errors == []


def test_history_is_replayed_and_sign_out_forgets_the_token(
    open_console: Any, web_server: BackgroundServer
) -> None:
    bob = open_console("bob")
    page = bob.page
    send(bob, "what is 2 + 3?")
    wait_run_done(bob)
    first = current_thread_id(bob)
    page.get_by_role("button", name="New thread").click()
    send(bob, "what is 10 - 4?")
    wait_run_done(bob)
    second = current_thread_id(bob)
    assert second != first

    # Newest first, as GET /v1/threads lists them.
    ids = page.eval_on_selector_all(
        "#threads button.thread", "els => els.map(e => e.dataset.threadId)"
    )
    assert ids == [t["id"] for t in api(web_server, bob.token, "/v1/threads")] == [second, first]

    # A reload keeps the session (sessionStorage); picking the old thread replays it (after=0).
    page.reload()
    expect(page.locator("#conn-status")).to_have_text("Connected")
    page.locator(f"#threads button[data-thread-id='{first}']").click()
    run = wait_run_done(bob)
    expect(run.locator(".user-input")).to_contain_text("what is 2 + 3?")
    expect(run.locator(".answer-text")).to_have_text("The answer is 5.")
    assert rendered_seqs(bob) == [e["seq"] for e in stored_events(web_server, bob, first)]

    # Sign out clears the token: a reload shows the sign-in form.
    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_label("API token")).to_be_visible()
    assert page.evaluate("sessionStorage.getItem('tenet.token')") is None
    page.reload()
    expect(page.get_by_label("API token")).to_be_visible()
    expect(page.locator("#console")).to_be_hidden()
    assert bob.errors == []


def test_two_users_never_see_each_others_threads_or_events(
    open_console: Any, web_server: BackgroundServer
) -> None:
    carol = open_console("carol")
    dave = open_console("dave")
    send(carol, "carol-canary what is 3 * 3?")
    send(dave, "dave-canary what is 4 * 4?")
    wait_run_done(carol)
    wait_run_done(dave)
    carol_thread = current_thread_id(carol)
    dave_thread = current_thread_id(dave)

    for me, other, other_thread in ((carol, "dave", dave_thread), (dave, "carol", carol_thread)):
        html = me.page.content()
        assert f"{other}-canary" not in html
        assert other_thread not in html
        listed = me.page.eval_on_selector_all(
            "#threads button.thread", "els => els.map(e => e.dataset.threadId)"
        )
        assert listed == [t["id"] for t in api(web_server, me.token, "/v1/threads")]
        assert other_thread not in listed

    # Dave asks for Carol's thread by its id: not found, nothing rendered.
    dave.page.evaluate(f"location.hash = '#thread={carol_thread}'")
    expect(dave.page.locator(".thread-view .notice")).to_have_text(
        "This thread does not exist, or is not yours."
    )
    assert rendered_seqs(dave) == []
    assert "carol-canary" not in dave.page.content()
    # ... and Carol's own page is untouched.
    expect(carol.page.locator(".answer-text")).to_have_text("The answer is 9.")
    assert carol.errors == []
    assert [e for e in dave.errors if "404" not in e] == []


def test_the_page_resumes_after_the_server_drops_the_socket_mid_run(
    open_console: Any, web_server: BackgroundServer
) -> None:
    erin = open_console("erin")
    page = erin.page
    page.evaluate(
        """() => {
        window.__states = [];
        const el = document.getElementById('conn-status');
        new MutationObserver(() => window.__states.push(el.dataset.state))
          .observe(el, {attributes: true, attributeFilter: ['data-state']});
    }"""
    )

    # Drop once while the run waits for its model (just after its tool call) ...
    send(erin, "latency_ms=300 events=60", agent="benchmark")
    thread_id = page.locator("#timeline .thread-view").get_attribute("data-thread-id") or ""
    assert web_server.drop_sockets_at(erin.user_id, thread_id, seq=3).result(20) == 1
    wait_run_done(erin)
    # ... and once in the middle of a long stream of answer deltas, in the same thread.
    expect(page.locator("#conn-status")).to_have_text("Connected")
    send(erin, "latency_ms=100 events=300", agent="benchmark")
    assert web_server.drop_sockets_at(erin.user_id, thread_id, seq=60 + 100).result(20) == 1
    wait_run_done(erin, index=1)

    # The indicator may still say "reconnecting" for a moment after the run's last
    # event was rendered from the replay: wait for it before reading its history.
    expect(page.locator("#conn-status")).to_have_text("Connected")
    states = page.evaluate("window.__states")
    assert states.count("reconnecting") >= 2 and states[-1] == "connected"

    events = stored_events(web_server, erin, thread_id)
    seqs = rendered_seqs(erin)
    assert len(seqs) == len(set(seqs)), "an event was rendered twice"
    assert seqs == [e["seq"] for e in events] == list(range(1, 361))
    answers = page.locator(".answer-text").all_text_contents()
    assert answers == ["".join(f"w{i} " for i in range(55)), "".join(f"w{i} " for i in range(295))]
    for run in page.locator("article.run").all():
        expect(run).to_have_attribute("data-status", "completed")
    assert erin.errors == []


def test_markup_in_input_and_results_renders_as_text(
    open_console: Any, web_server: BackgroundServer
) -> None:
    mallory = open_console("mallory")
    page = mallory.page
    payload = '<img src=x onerror="window.__xss=1"><script>window.__xss=2</script>'
    send(mallory, payload, agent="benchmark")
    run = wait_run_done(mallory)
    expect(run.locator(".user-input p")).to_have_text(payload)
    run.locator(".ev.tool summary").click()
    expect(run.locator(".tool-part.result pre")).to_contain_text("<img src=x")
    expect(page.locator("#threads .thread-title").first).to_have_text(payload)
    assert page.locator("#timeline img, #timeline script, #threads img").count() == 0
    assert page.evaluate("window.__xss") is None
    assert mallory.errors == []


def test_cancel_a_running_run(open_console: Any) -> None:
    frank = open_console("frank")
    page = frank.page
    send(frank, "latency_ms=20000 events=10", agent="benchmark")
    run = page.locator("article.run").last
    expect(run).to_have_attribute("data-status", "running")
    run.get_by_role("button", name="Cancel").click()
    expect(run).to_have_attribute("data-status", "cancelled")
    expect(run.locator(".ev.cancelled")).to_contain_text("Cancelled")
    expect(run.get_by_role("button", name="Cancel")).to_be_hidden()
    assert frank.errors == []


def test_a_revoked_token_signs_the_page_out(
    open_console: Any, web_server: BackgroundServer
) -> None:
    grace = open_console("grace")
    r = httpx.delete(
        web_server.url + "/v1/tokens/current", headers={"Authorization": f"Bearer {grace.token}"}
    )
    assert r.status_code == 204
    expect(grace.page.locator("#signin-error")).to_contain_text("no longer accepted")
    expect(grace.page.get_by_label("API token")).to_be_visible()
    assert grace.page.evaluate("sessionStorage.getItem('tenet.token')") is None


def test_a_wrong_token_is_refused(browser: Any, web_server: BackgroundServer) -> None:
    context = browser.new_context()
    try:
        page = context.new_page()
        page.goto(web_server.url + "/")
        page.get_by_label("API token").fill("not-a-token")
        page.get_by_label("API token").press("Enter")
        expect(page.locator("#signin-error")).to_have_text("That token was not accepted.")
        expect(page.locator("#console")).to_be_hidden()
    finally:
        context.close()


def test_usable_on_a_narrow_screen_and_by_keyboard(
    open_console: Any, web_server: BackgroundServer, artifacts: Any
) -> None:
    heidi = open_console("heidi", viewport={"width": 375, "height": 740})
    page = heidi.page
    # The agents are listed (the page cannot send before it knows them).
    expect(page.get_by_label("Agent")).to_have_value("assistant")
    # Keyboard only: Tab reaches the message box, Enter sends.
    page.get_by_label("Message").focus()
    page.keyboard.type("what is 12 / 4?")
    page.keyboard.press("Enter")
    run = wait_run_done(heidi)
    expect(run.locator(".answer-text")).to_have_text("The answer is 3.")
    width = page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
    assert width[0] <= width[1], f"the page scrolls sideways: {width}"
    for name in ("Send", "New thread", "Sign out"):
        box = page.get_by_role("button", name=name).bounding_box()
        assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= 375
    # A focused control shows a focus ring.
    page.get_by_role("button", name="New thread").focus()
    page.keyboard.press("Shift+Tab")
    page.keyboard.press("Tab")
    outline = page.evaluate("getComputedStyle(document.activeElement).outlineStyle")
    assert outline not in ("", "none")
    page.screenshot(path=str(artifacts / "web-console-narrow.png"), full_page=True)
    assert heidi.errors == []


def test_the_page_is_served_with_security_headers(web_server: BackgroundServer) -> None:
    r = httpx.get(web_server.url + "/")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/html")
    csp = r.headers["content-security-policy"]
    assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
    assert r.headers["x-content-type-options"] == "nosniff"
    assert r.headers["referrer-policy"] == "no-referrer"
    assert r.headers["x-frame-options"] == "DENY"
    js = httpx.get(web_server.url + "/static/app.js")
    assert js.status_code == 200 and js.headers["content-type"].startswith("text/javascript")
    assert js.headers["x-content-type-options"] == "nosniff"
    for path in ("/static/missing.js", "/static/..%2Fapp.py", "/static/%2e%2e/web.py"):
        assert httpx.get(web_server.url + path).status_code == 404


def test_errors_are_shown_as_errors(open_console: Any) -> None:
    ivan = open_console("ivan")
    page = ivan.page
    # A tool that fails: the call is marked failed, with its error, and the run goes on.
    send(ivan, "what is 1 / 0?")
    run = wait_run_done(ivan)
    tool = run.locator(".ev.tool")
    expect(tool).to_have_class(re.compile(r"\bfailed\b"))
    expect(tool.locator(".tool-state")).to_contain_text("✗")
    tool.locator("summary").click()
    expect(tool.locator(".tool-part.error")).to_be_visible()
    # An agent that fails: the run is marked failed and the error is shown, as text.
    page.get_by_role("button", name="New thread").click()
    send(ivan, "anything", agent="broken")
    run = wait_run_done(ivan)
    expect(run).to_have_attribute("data-status", "failed")
    expect(run.locator(".ev.error")).to_be_visible()
    expect(run.locator(".ev.error .error-text")).not_to_be_empty()
    assert run.locator(".ev.error b").count() == 0
    assert ivan.errors == []


def test_delegated_agents_are_shown_nested(open_console: Any, web_server: BackgroundServer) -> None:
    judy = open_console("judy")
    send(judy, "tell me about python and sqlite", agent="researcher")
    run = wait_run_done(judy)
    expect(run).to_have_attribute("data-status", "completed")
    delegated = run.locator(".ev.started.delegated")
    expect(delegated).to_have_count(3)
    assert delegated.all_text_contents()[0].startswith("↳ delegated to triage")
    depth = run.locator(".ev.started.delegated").first.evaluate(
        "el => getComputedStyle(el).getPropertyValue('--depth').trim()"
    )
    assert depth == "1"
    thread_id = current_thread_id(judy)
    assert rendered_seqs(judy) == [e["seq"] for e in stored_events(web_server, judy, thread_id)]
    assert judy.errors == []


def test_delete_a_thread(open_console: Any, web_server: BackgroundServer) -> None:
    oscar = open_console("oscar")
    page = oscar.page
    send(oscar, "what is 2 + 2?")
    wait_run_done(oscar)
    kept = current_thread_id(oscar)
    page.get_by_role("button", name="New thread").click()
    expect(page.get_by_role("button", name="Delete thread")).to_be_hidden()
    send(oscar, "latency_ms=20000 events=10", agent="benchmark")
    expect(page.locator("article.run").last).to_have_attribute("data-status", "running")
    doomed = current_thread_id(oscar)
    assert doomed and doomed != kept

    # Declining the confirmation keeps everything.
    page.once("dialog", lambda dialog: dialog.dismiss())
    page.get_by_role("button", name="Delete thread").click()
    expect(page.locator(f"#threads button[data-thread-id='{doomed}']")).to_be_visible()

    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Delete thread").click()
    expect(page.locator(f"#threads button[data-thread-id='{doomed}']")).to_have_count(0)
    expect(page.locator("#thread-title")).to_have_text("New thread")
    r = httpx.get(
        f"{web_server.url}/v1/threads/{doomed}",
        headers={"Authorization": f"Bearer {oscar.token}"},
        timeout=10,
    )
    assert r.status_code == 404
    assert [t["id"] for t in api(web_server, oscar.token, "/v1/threads")] == [kept]
    expect(page.locator(f"#threads button[data-thread-id='{kept}']")).to_be_visible()
    assert oscar.errors == []
