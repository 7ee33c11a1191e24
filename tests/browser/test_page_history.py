"""Issue 14, defects 2 and 3 in a real Chromium: every form of the History pages submitted
by clicking (browser navigations, not fetch from the test) ends where it should, never on a
refusal; the read-only viewer is offered none of those buttons.

Before the fix every one of them ended on "Refused: the request comes from origin 'null'":
under `Referrer-Policy: no-referrer` Chromium sends a page's own form posts with Origin null."""

import re
import time

from own_server import own  # noqa: F401 (a fixture)
from playwright.sync_api import expect
from test_page_recipes import assert_clean, viewer_token, watch

REFUSED = re.compile("Refused|read-only viewer link|needs its token")




def exchange(http, name: str) -> int:
    """A server and a client that got its reply; the client's history id."""
    server = http.start(kind="server", name=f"{name}-server", port=0)
    http.start(kind="client", name=name, port=server["local"][1])
    deadline = time.monotonic() + 5  # bounded: the reply comes in milliseconds
    while time.monotonic() < deadline:
        history = http.get("/api/history", params={"q": name}).json()
        found = [w for s in history["sessions"] for w in s["workers"]
                 if w["worker"] == name and w["state"] == "finished"]
        if found:
            http.delete(f"/api/workers/{name}-server")
            return found[-1]["id"]
        time.sleep(0.05)
    raise AssertionError(f"{name} never reached the history in 5 s")


def not_refused(page) -> None:
    expect(page.locator("body")).not_to_contain_text(REFUSED)


def test_every_history_form_works_from_the_browser(page, own, tmp_path):
    reports = watch(page)
    page.goto(f"{own.base}/?token={own.token}")
    expect(page.locator("#conn-status")).to_have_text("live")
    with own.client() as http:
        first = exchange(http, "hist-one")
        second = exchange(http, "hist-two")
        export = tmp_path / "hist-one.jsonl"
        export.write_bytes(http.get(f"/api/history/{first}/export.jsonl").content)

        # Run again, from the list: a navigation to the dashboard and the new worker's card
        page.goto(f"{own.base}/history")
        page.locator(f"#history-{first}").get_by_role("button", name="Run again").click()
        page.wait_for_url(re.compile(r"/#worker-"))
        not_refused(page)
        started = page.url.rsplit("#worker-", 1)[1]
        expect(page.locator(f"#worker-{started}")).to_be_visible()

        # Delete, from the list
        page.goto(f"{own.base}/history")
        page.locator(f"#history-{second}").get_by_role("button", name="Delete", exact=True).click()
        expect(page.locator("main .ok")).to_have_text("Deleted.")
        not_refused(page)
        expect(page.locator(f"#history-{second}")).to_have_count(0)

        # Import a file: a multipart form post
        page.locator("#history-import input[type=file]").set_input_files(str(export))
        page.locator("#history-import").get_by_role("button", name="Import", exact=True).click()
        expect(page.locator("main .ok")).to_have_text("Imported as a new session.")
        not_refused(page)

        # Delete session: the imported one
        imported = page.locator(".history-session", has_text="imported from hist-one.jsonl")
        expect(imported).to_have_count(1)
        imported.get_by_role("button", name="Delete session").click()
        expect(page.locator("main .ok")).to_have_text("Deleted.")
        not_refused(page)
        expect(page.locator(".history-session",
                            has_text="imported from hist-one.jsonl")).to_have_count(0)

        # The worker page: Run again, then Delete
        page.goto(f"{own.base}/history/{first}")
        page.get_by_role("button", name="Run again").click()
        page.wait_for_url(re.compile(r"/#worker-"))
        not_refused(page)
        page.goto(f"{own.base}/history/{first}")
        page.get_by_role("button", name="Delete", exact=True).click()
        expect(page.locator("main .ok")).to_have_text("Deleted.")
        not_refused(page)
        for worker in http.get("/api/workers").json()["workers"]:
            http.delete(f"/api/workers/{worker['id']}")
    assert_clean(page, reports)


def test_a_refusal_page_is_styled_and_leads_back(page, own):
    """A form posted from another origin (a blank page: Origin null) is still refused, on a
    page with the dashboard's look and a way back."""
    page.goto(f"{own.base}/?token={own.token}")
    expect(page.locator("#conn-status")).to_have_text("live")
    page.goto("about:blank")
    page.set_content(f'<form method="post" action="{own.base}/workers/clear">'
                     '<button type="submit">Clear</button></form>')
    page.get_by_role("button", name="Clear").click()
    page.wait_for_url(f"{own.base}/workers/clear")
    expect(page.locator(".refusal .error")).to_be_visible()
    assert page.evaluate("getComputedStyle(document.querySelector('.panel')).borderStyle") \
        != "none", "the refusal page has no style"
    page.get_by_role("link", name="Back to the dashboard").click()
    page.wait_for_url(f"{own.base}/")
    expect(page.locator("#conn-status")).to_have_text("live")


def test_the_viewer_is_offered_no_history_button(browser, own):
    context = browser.new_context(viewport={"width": 1280, "height": 720})
    context.set_default_timeout(10_000)
    viewer = context.new_page()
    errors: list[str] = []
    viewer.on("console", lambda m: m.type == "error" and errors.append(m.text))
    viewer.console_errors = errors
    posts: list[str] = []
    viewer.on("request", lambda r: r.method != "GET" and posts.append(f"{r.method} {r.url}"))
    try:
        with own.client() as http:
            first = exchange(http, "hist-viewed")
            reports = watch(viewer)
            viewer.goto(f"{own.base}/?view={viewer_token(own)}")
            expect(viewer.locator("#conn-status")).to_have_text("live")
            # the dashboard: cards shown, but no control on them
            card = viewer.locator("#worker-hist-viewed")
            expect(card).to_be_visible()
            assert visible_controls(viewer, "main") == []
            for path in ("/history", f"/history/{first}"):
                viewer.goto(f"{own.base}{path}")
                expect(viewer.locator(".viewer-badge")).to_have_text("read-only view")
                expect(viewer.locator("main")).to_contain_text("hist-viewed")
                assert visible_controls(viewer, "main") == [], path
            # searching is reading: the viewer keeps it
            viewer.goto(f"{own.base}/history")
            expect(viewer.locator("#history-search")).to_be_visible()
        assert posts == []
        assert_clean(viewer, reports)
    finally:
        context.close()


def visible_controls(page, root: str) -> list[str]:
    """Visible buttons, and forms or links that would change something (POST, or a page
    whose only purpose is a form), under `root`."""
    return page.evaluate("""(root) => [...document.querySelector(root).querySelectorAll(
            'button, form[method=post], a.options-link, input[type=file]')]
        .filter((e) => e.checkVisibility() && !e.closest('#history-search'))
        .map((e) => e.outerHTML.slice(0, 80))""", root)
