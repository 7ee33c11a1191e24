"""Issue 6 in a real Chromium: every recipe played from the Recipes panel, step by step with
the N key and the Next step button, the read-only viewer link watching the teacher live,
presentation mode and its keyboard shortcuts. No console errors, no CSP violations.

Screenshots of the main views are written to a temporary directory; with
UDPLAB_SCREENSHOTS=1 they go to docs/ (docs/screenshot-recipe.png, -present.png,
-viewer.png) for the README.
"""

import json
import os
import re
from pathlib import Path

import pytest
from dashboard import focus_page, mark_recipe_panel, new_run, start_recipe
from live import start_server, stop_and_check
from playwright.sync_api import expect

from webapp.engine import lab as lab_module
from webapp.engine.recipes import RECIPES_DIR

NAMES = [path.stem for path in sorted(RECIPES_DIR.glob("*.json"))]
# a fleet recipe needs agents on other machines: tests/fleet/test_fleet_recipe.py plays it
ONE_MACHINE = [name for name in NAMES
               if not json.loads((RECIPES_DIR / f"{name}.json").read_text()).get("fleet")]
DOCS = Path(__file__).resolve().parents[2] / "docs"
VIEW_LINE = re.compile(r"http://127\.0\.0\.1:\d+/\?view=(\S+)")
ALL_MATCHED = "All steps matched the book."
RECIPE_WAIT = 15_000  # ms; the longest loopback recipe (server down) takes about 3 s
LAB_WAIT = 45_000  # ms: building the namespaces, then four scenarios
MIN_PRESENT_PX = 16  # the smallest type in presentation mode: a laptop's normal text size

# Registered before any page script runs: every CSP violation the page causes, as text.
CSP_LISTENER = """
window.__cspViolations = [];
document.addEventListener("securitypolicyviolation", (e) => {
  window.__cspViolations.push(`${e.violatedDirective} blocked ${e.blockedURI || "inline"}`);
});
"""

# Every visible element with text of its own, and its computed font size (px).
TEXT_SIZES = """
() => {
  const out = [];
  for (const el of document.body.querySelectorAll("*")) {
    const own = [...el.childNodes].some((n) => n.nodeType === 3 && n.textContent.trim());
    if (!own || !el.checkVisibility({ visibilityProperty: true })) continue;
    if (el.closest("svg")) continue;  // SVG text scales with its viewBox, not its font-size
    const rect = el.getBoundingClientRect();
    if (rect.width === 0 || rect.height === 0) continue;
    const name = el.tagName.toLowerCase() + (el.id ? "#" + el.id : "")
      + (el.className && typeof el.className === "string"
         ? "." + el.className.trim().split(/\\s+/).join(".") : "");
    out.push([name, el.textContent.trim().slice(0, 30), parseFloat(getComputedStyle(el).fontSize)]);
  }
  return out;
}
"""


def recipe_file(name: str) -> dict:
    return json.loads((RECIPES_DIR / f"{name}.json").read_text())


def viewer_token(server) -> str:
    match = VIEW_LINE.search(server.output())
    assert match, f"udplab printed no ?view= link:\n{server.output()[:2000]}"
    return match.group(1)


def watch(page) -> list[str]:
    """Start collecting CSP reports (console and securitypolicyviolation); before goto."""
    reports: list[str] = []
    page.add_init_script(CSP_LISTENER)
    page.on("console", lambda m: "Content Security Policy" in m.text
            and reports.append(f"console: {m.text}"))
    return reports


def assert_clean(page, csp_reports: list[str]) -> None:
    """No console errors, no CSP violation reported by the console or the page."""
    violations = page.evaluate("window.__cspViolations || []")
    assert csp_reports == [] and violations == [], (csp_reports, violations)
    assert page.console_errors == []


def shoot(target, name: str, tmp_path: Path) -> Path:
    """A PNG of a page or an element: into docs/ with UDPLAB_SCREENSHOTS=1, else tmp_path."""
    path = (DOCS if os.environ.get("UDPLAB_SCREENSHOTS") == "1" else tmp_path) / name
    target.screenshot(path=str(path))
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    return path


def open_dashboard(page, server) -> list[str]:
    """Log in as the teacher and wait for the live connection; the CSP reports list."""
    reports = watch(page)
    page.goto(f"{server.base}/?token={server.token}")
    assert page.url == f"{server.base}/"
    expect(page.locator("#conn-status")).to_have_text("live")
    return reports


@pytest.fixture
def own_server(tmp_path):
    """A udplab of this test's own: its Clear and S keys touch no other test's workers."""
    server = start_server(tmp_path / "udplab")
    yield server
    stop_and_check(server)


@pytest.fixture
def lab_torn_down(live):
    """The session server is left without a lab, whatever the test did."""
    yield
    with live.client() as api:
        response = api.delete("/api/lab")
        assert response.status_code == 200, response.text
        assert api.get("/api/lab").json()["built"] is False


# --- every recipe through the page -----------------------------------------------------------

@pytest.mark.parametrize("name", ONE_MACHINE)
def test_every_recipe_plays_from_the_panel(page, live, name, tmp_path, request):
    recipe = recipe_file(name)
    if recipe.get("lab"):
        assert lab_module.can_build(), "the lab recipe must run (root): " + lab_module.NEEDS_ADMIN
        request.getfixturevalue("lab_torn_down")
    reports = open_dashboard(page, live)
    form = page.locator("#recipe-form")
    options = form.locator("select[name=name] option")
    expect(options).to_have_count(len(NAMES))
    expect(options.filter(has_text=re.compile(f"^{re.escape(recipe['title'])}$"))).to_have_count(1)
    run = start_recipe(page, name, "Play")
    status = run.locator(".recipe-status")
    expect(status).to_contain_text(ALL_MATCHED,
                                   timeout=LAB_WAIT if recipe.get("lab") else RECIPE_WAIT)
    expect(status).to_have_attribute("data-done", "yes")
    expect(run.locator("h3")).to_contain_text(recipe["title"])
    steps = run.locator("ol.recipe-steps > li")
    expect(steps).to_have_count(len(recipe["steps"]))
    for number, step in enumerate(recipe["steps"]):
        item = steps.nth(number)
        expect(item).to_have_class(re.compile(r"\boutcome-good\b"))
        expect(item.locator(".verdict")).to_have_text("✓")
        expect(item.locator(".say")).to_have_text(step["say"])
        if step.get("expect"):
            expect(item.locator(".book code")).to_have_text(step["expect"])
        expect(item.locator(".here code")).not_to_have_text("")
    expect(run.locator("#recipe-next")).to_have_count(0)
    if name == "01-listing-2-1":
        shoot(page.locator("#recipes"), "screenshot-recipe.png", tmp_path)
    assert_clean(page, reports)


def test_step_by_step_with_the_n_key_and_the_next_button(page, live):
    name = "01-listing-2-1"
    recipe = recipe_file(name)
    total = len(recipe["steps"])
    reports = open_dashboard(page, live)
    run = start_recipe(page, name)
    status = run.locator(".recipe-status")
    expect(status).to_contain_text(f"Step 1 of {total} done.")
    expect(run.locator("h3")).to_contain_text(recipe["title"])
    expect(run.locator("ol.recipe-steps > li")).to_have_count(1)
    expect(page.locator("#recipe-next")).to_be_visible()

    for number in range(2, total + 1):  # bounded: one action per remaining step
        if number % 2 == 0:
            focus_page(page)
            page.keyboard.press("n")
        else:
            page.get_by_role("button", name="Next step").click()
        if number < total:
            expect(status).to_contain_text(f"Step {number} of {total} done.")
        expect(run.locator("ol.recipe-steps > li")).to_have_count(number)
        expect(run.locator("ol.recipe-steps > li").nth(number - 1)).to_have_class(
            re.compile(r"\boutcome-good\b"))

    expect(status).to_contain_text(ALL_MATCHED)
    expect(page.locator("#recipe-next")).to_have_count(0)
    expect(run.locator(".verdict")).to_have_text(["✓"] * total)
    assert_clean(page, reports)


# --- the read-only viewer link ---------------------------------------------------------------

def test_viewer_link_watches_live_and_can_start_nothing(browser, live, tmp_path):
    context = browser.new_context(viewport={"width": 1280, "height": 720})
    context.set_default_timeout(10_000)
    viewer = context.new_page()
    errors: list[str] = []
    viewer.on("console", lambda m: m.type == "error" and errors.append(m.text))
    viewer.on("pageerror", lambda e: errors.append(str(e)))
    viewer.console_errors = errors
    posts: list[str] = []
    viewer.on("request", lambda r: r.method != "GET" and posts.append(f"{r.method} {r.url}"))
    try:
        reports = watch(viewer)
        viewer.goto(f"{live.base}/?view={viewer_token(live)}")
        assert viewer.url == f"{live.base}/", "the viewer token must leave the address bar"
        cookies = {c["name"] for c in context.cookies()}
        assert f"udplab_view_{live.port}" in cookies and f"udplab_{live.port}" not in cookies
        expect(viewer.locator("#conn-status")).to_have_text("live")
        expect(viewer.locator(".viewer-badge")).to_have_text("read-only view")
        expect(viewer.locator("body")).to_have_class(re.compile(r"\bviewer\b"))

        # nothing to start anything with
        expect(viewer.locator("#server-form")).to_be_hidden()
        expect(viewer.locator("#client-form")).to_be_hidden()
        expect(viewer.locator("#recipe-form")).to_have_count(0)
        expect(viewer.get_by_role("button", name="Start server")).to_be_hidden()
        expect(viewer.get_by_role("button", name="Play")).to_have_count(0)
        visible_forms = viewer.evaluate(
            "[...document.forms].filter((f) => f.checkVisibility()).map((f) => f.id || f.action)")
        assert visible_forms == []

        # the teacher starts a server and a client: the viewer sees them arrive
        with live.client() as teacher:
            server = teacher.start(kind="server", name="teacher-server", port=0)
            port = server["local"][1]
            card = viewer.locator("#worker-teacher-server")
            expect(card.locator(".state")).to_have_text("running")
            expect(viewer.locator("#log-rows")).to_contain_text(
                f"Listening at ('127.0.0.1', {port})")
            expect(card.get_by_role("button", name="Stop")).to_be_hidden()
            expect(card.get_by_role("button", name="Pause")).to_be_hidden()
            teacher.start(kind="client", name="teacher-client", port=port)
            expect(viewer.locator("#log-rows .ev-reply").first).to_contain_text(
                f"The server ('127.0.0.1', {port}) replied 'Your data was")
            expect(card.locator("[data-counter=replied]")).to_have_text("1")
            expect(viewer.locator("#worker-teacher-client .state")).to_have_text("finished")
            shoot(viewer, "screenshot-viewer.png", tmp_path)
            teacher.stop_started()
            expect(card.locator(".state")).to_have_text("stopped")
            teacher.post("/workers/teacher-server/remove")
            teacher.post("/workers/teacher-client/remove")
        assert posts == []
        assert_clean(viewer, reports)
    finally:
        context.close()


def test_viewer_keys_send_nothing(browser, live):
    """P is the viewer's own business; N, S and C must not send requests the server refuses
    (they would only fill the console with 403s)."""
    context = browser.new_context(viewport={"width": 1280, "height": 720})
    context.set_default_timeout(10_000)
    viewer = context.new_page()
    errors: list[str] = []
    viewer.on("console", lambda m: m.type == "error" and errors.append(m.text))
    posts: list[str] = []
    viewer.on("request", lambda r: r.method != "GET" and posts.append(f"{r.method} {r.url}"))
    try:
        viewer.goto(f"{live.base}/?view={viewer_token(live)}")
        expect(viewer.locator("#conn-status")).to_have_text("live")
        with live.client() as teacher:
            teacher.start(kind="server", name="viewer-keys-server", port=0)
            card = viewer.locator("#worker-viewer-keys-server")
            expect(card.locator(".state")).to_have_text("running")
            run = teacher.post("/api/recipes/01-listing-2-1", json={"step": True}).json()
            expect(viewer.locator("#recipe-run .recipe-status")).to_contain_text(
                f"Step 1 of {run['total']} done.")
            expect(viewer.get_by_role("button", name="Next step")).to_be_hidden()
            try:
                for key in "snc":
                    viewer.keyboard.press(key)
                viewer.wait_for_timeout(500)
                assert posts == [], "the viewer's keys sent requests"
                assert errors == []
                expect(viewer.locator("#recipe-run .recipe-status")).to_contain_text(
                    f"Step 1 of {run['total']} done.")
                assert teacher.get("/api/workers/viewer-keys-server").json()["state"] == "running"
                viewer.keyboard.press("p")
                expect(viewer.locator("body")).to_have_class(re.compile(r"\bpresent\b"))
            finally:
                for _ in range(run["total"]):  # bounded: finish the run, stopping its workers
                    if teacher.post(f"/api/recipes/runs/{run['id']}/next").json()["done"]:
                        break
                teacher.stop_started()
    finally:
        context.close()


# --- presentation mode -----------------------------------------------------------------------

def present_state(page) -> dict:
    return page.evaluate("""() => ({
      present: document.body.classList.contains("present"),
      pressed: document.getElementById("present-toggle").getAttribute("aria-pressed"),
      bodyPx: parseFloat(getComputedStyle(document.body).fontSize),
      stored: localStorage.getItem("udplab-present"),
    })""")


def test_p_toggles_presentation_mode_and_it_survives_a_reload(page, live):
    page.set_viewport_size({"width": 1280, "height": 720})
    reports = open_dashboard(page, live)
    assert present_state(page)["present"] is False
    assert present_state(page)["pressed"] == "false"

    page.keyboard.press("p")
    state = present_state(page)
    assert state["present"] is True and state["pressed"] == "true" and state["stored"] == "1"
    assert state["bodyPx"] >= 20, state
    # the teacher can still start and stop workers while presenting (issue 14)
    expect(page.locator("#server-form").get_by_role("button", name="Start server")).to_be_visible()

    page.reload()
    expect(page.locator("#conn-status")).to_have_text("live")
    state = present_state(page)
    assert state["present"] is True and state["pressed"] == "true", state

    page.keyboard.press("P")  # Shift+P too
    state = present_state(page)
    assert state["present"] is False and state["pressed"] == "false" and state["stored"] == "0"
    assert state["bodyPx"] < 20
    page.reload()
    expect(page.locator("#conn-status")).to_have_text("live")
    assert present_state(page)["present"] is False

    page.locator("#present-toggle").click()
    assert present_state(page)["present"] is True
    page.locator("#present-toggle").click()
    assert present_state(page)["present"] is False
    assert_clean(page, reports)


def test_present_in_the_url_turns_it_on(page, live):
    page.set_viewport_size({"width": 1280, "height": 720})
    reports = open_dashboard(page, live)
    page.goto(f"{live.base}/?present")
    expect(page.locator("#conn-status")).to_have_text("live")
    state = present_state(page)
    assert state["present"] is True and state["pressed"] == "true", state
    assert state["bodyPx"] >= 20
    assert_clean(page, reports)


def test_presentation_header_is_white_on_black(page, live):
    page.set_viewport_size({"width": 1280, "height": 720})
    open_dashboard(page, live)
    page.keyboard.press("p")
    header = page.evaluate("""() => {
      const top = getComputedStyle(document.querySelector("header.top"));
      const h1 = getComputedStyle(document.querySelector("header.top h1"));
      return [top.backgroundColor, top.color, h1.color];
    }""")
    assert header == ["rgb(0, 0, 0)", "rgb(255, 255, 255)", "rgb(255, 255, 255)"]


def test_presentation_page_is_black_on_white(page, live):
    """The high-contrast colours reach the page itself: black text on a white background."""
    page.set_viewport_size({"width": 1280, "height": 720})
    open_dashboard(page, live)
    page.keyboard.press("p")
    colours = page.evaluate("""() => {
      const canvas = [document.documentElement, document.body]
        .map((e) => getComputedStyle(e).backgroundColor)
        .find((c) => c !== "rgba(0, 0, 0, 0)");
      return {text: getComputedStyle(document.body).color, canvas,
              step: getComputedStyle(document.querySelector("#recipes h2")).color};
    }""")
    assert colours == {"text": "rgb(0, 0, 0)", "canvas": "rgb(255, 255, 255)",
                       "step": "rgb(0, 0, 0)"}


def test_presentation_text_is_large_everywhere(page, live, tmp_path):
    """At 1280×720 every visible text is readable from the back of a room, not only the body
    text: the book/here labels, counters' names, states, help, the log (≥ 16 px each)."""
    page.set_viewport_size({"width": 1280, "height": 720})
    open_dashboard(page, live)
    with live.client() as api:
        api.post("/api/recipes/01-listing-2-1", json={"wait": True})
        expect(page.locator("#recipe-run .recipe-status")).to_contain_text(ALL_MATCHED)
        server = api.start(kind="server", name="present-server", port=0)
        api.start(kind="client", name="present-client", port=server["local"][1])
        expect(page.locator("#worker-present-server [data-counter=replied]")).to_have_text("1")
        page.keyboard.press("p")
        expect(page.locator("body")).to_have_class(re.compile(r"\bpresent\b"))
        page.locator("#recipes").scroll_into_view_if_needed()
        shoot(page, "screenshot-present.png", tmp_path)
        small = sorted({(name, text, px) for name, text, px in page.evaluate(TEXT_SIZES)
                        if px < MIN_PRESENT_PX}, key=lambda s: s[2])
        api.stop_started()
        for worker in ("present-server", "present-client"):
            api.post(f"/workers/{worker}/remove")
    listing = "\n".join(f"  {px:5.1f}px {name} {text!r}" for name, text, px in small)
    assert small == [], f"text below {MIN_PRESENT_PX} px in presentation mode:\n{listing}"


# --- keyboard shortcuts ----------------------------------------------------------------------

def test_s_pauses_and_resumes_and_c_clears(page, own_server):
    reports = open_dashboard(page, own_server)
    with own_server.client() as api:
        server = api.start(kind="server", name="keys-server", port=0)
        card = page.locator("#worker-keys-server")
        expect(card.locator(".state")).to_have_text("running")

        focus_page(page)
        page.keyboard.press("s")
        expect(card.locator(".state")).to_have_text("paused")
        assert api.get("/api/workers/keys-server").json()["state"] == "paused"
        page.keyboard.press("s")
        expect(card.locator(".state")).to_have_text("running")
        assert api.get("/api/workers/keys-server").json()["state"] == "running"

        api.start(kind="client", name="keys-client", port=server["local"][1])
        expect(page.locator("#worker-keys-client .state")).to_have_text("finished")
        api.stop_started()
        expect(card.locator(".state")).to_have_text("stopped")
        expect(page.locator("#log-rows tr.ev")).not_to_have_count(0)

        page.keyboard.press("c")
        expect(page.locator("#workers .card")).to_have_count(0)
        assert api.get("/api/workers").json()["workers"] == []
        # the log is emptied; only the notes of what C removed may follow it
        page.wait_for_timeout(300)
        rows = page.locator("#log-rows tr.ev")
        assert rows.count() <= 2
        for number in range(rows.count()):
            expect(rows.nth(number)).to_have_class(re.compile(r"\bev-removed\b"))
            expect(rows.nth(number)).to_contain_text(re.compile(r"keys-(server|client) removed"))
    assert_clean(page, reports)


def test_keys_typed_in_a_field_are_not_shortcuts(page, own_server):
    reports = open_dashboard(page, own_server)
    requests: list[str] = []
    page.on("request", lambda r: r.method != "GET" and requests.append(r.url))
    with own_server.client() as api:
        api.start(kind="server", name="typing-server", port=0)
        card = page.locator("#worker-typing-server")
        expect(card.locator(".state")).to_have_text("running")
        rows = page.locator("#log-rows tr.ev").count()
        assert rows > 0

        field = page.locator("#server-form input[name=name]")
        field.click()
        page.keyboard.type("pnsc PNSC")
        expect(field).to_have_value("pnsc PNSC")
        page.locator("#recipe-form select[name=name]").focus()
        for key in "psc":
            page.keyboard.press(key)
        page.wait_for_timeout(300)
        assert present_state(page)["present"] is False
        expect(card.locator(".state")).to_have_text("running")
        expect(page.locator("#log-rows tr.ev")).to_have_count(rows)
        assert requests == []
        assert api.get("/api/workers/typing-server").json()["state"] == "running"
        api.stop_started()
    assert_clean(page, reports)


def test_a_second_play_while_one_plays_says_why(page, own_server):
    # Pressing Play 20 times used to start 7 overlapping runs; now one plays at a time, and
    # the page says so by the form (the 409 used to be dropped: the form swapped nothing).
    reports = open_dashboard(page, own_server)
    form = page.locator("#recipe-form")
    form.locator("select[name=name]").select_option("05-server-down")
    mark_recipe_panel(page)
    play = form.get_by_role("button", name="Play")
    play.click()
    expect(new_run(page)).to_have_count(1)  # the first run is playing
    play.click()
    result = page.locator("#recipe-result")
    expect(result).to_contain_text("A recipe is already running")
    expect(result).to_contain_text("wait for it or stop it")
    status = new_run(page).locator(".recipe-status")
    expect(status).to_contain_text(ALL_MATCHED, timeout=RECIPE_WAIT)
    expect(status).to_have_attribute("data-done", "yes")
    play.click()  # once it has ended, Play plays again and the refusal goes
    expect(result).to_have_text("")
    # Chromium logs the refused (409) request itself as a console error; nothing else.
    page.console_errors[:] = [e for e in page.console_errors if "409" not in e]
    assert_clean(page, reports)
