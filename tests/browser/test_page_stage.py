"""Issue 14, the stage: what the class must see is on screen. In a real Chromium at
1280×720 (a projector; normal and presentation mode) and 1920×1080, after each step of a
step-by-step recipe, the newest step, the Next button, the newest ladder arrow, the newest
event row and the newest card are inside the window and inside every box that scrolls
them, without scrolling the page. On a phone (390×844) the page stacks and the log's
message column stays readable. The ladder names its lanes in full; the chart's x axis is in
seconds; the keyboard reaches Start server in two keys. No console error, no CSP violation.
"""

import re

import pytest
from dashboard import focus_page, start_recipe
from playwright.sync_api import expect
from test_page_recipes import (
    assert_clean,
    open_dashboard,
    own_server,  # noqa: F401  (a fixture: a udplab of this test's own)
    recipe_file,
)

RECIPE = "04-loss-and-backoff"  # drops, timeouts and retries: the ladder and log fill up
MIN_MESSAGE_PX = 200  # the log's message column on a phone: a sentence, not a letter

# Where an element is, and which boxes hide part of it: the window and every ancestor
# that clips (a scroll box shows only its scrolled part; Playwright's boxes ignore that).
WHERE = """
(el) => {
  const r = el.getBoundingClientRect();
  const boxes = [["window", 0, 0, window.innerWidth, window.innerHeight]];
  for (let p = el.parentElement; p && p !== document.documentElement; p = p.parentElement) {
    const s = getComputedStyle(p);
    if (s.overflowX !== "visible" || s.overflowY !== "visible") {
      const q = p.getBoundingClientRect();
      boxes.push([p.className || p.tagName, q.left, q.top, q.right, q.bottom]);
    }
  }
  const hidden = boxes.filter(([, l, t, rr, b]) =>
    r.top < t - 1 || r.bottom > b + 1 || r.left < l - 1 || r.right > rr + 1);
  return {rect: [r.left, r.top, r.right, r.bottom].map(Math.round), hidden,
          height: r.height, width: r.width, connected: el.isConnected};
}
"""


def on_screen(page, locator, what: str) -> None:
    """`locator` is drawn whole inside the window and inside every box that clips it."""
    expect(locator).to_be_visible()
    for _ in range(20):  # bounded: the ladder is redrawn with each batch, 20 times a second
        where = locator.evaluate(WHERE)
        if where.pop("connected"):
            break
        page.wait_for_timeout(50)
    assert where["height"] > 0 and where["width"] > 0, (what, where)
    assert where["hidden"] == [], f"{what} is off screen: {where}"


def page_does_not_scroll(page) -> None:
    sizes = page.evaluate("""() => ({scrollY: window.scrollY, height: innerHeight,
      scrollHeight: document.scrollingElement.scrollHeight,
      width: innerWidth, scrollWidth: document.scrollingElement.scrollWidth})""")
    assert sizes["scrollY"] == 0, sizes
    assert sizes["scrollHeight"] <= sizes["height"], sizes
    assert sizes["scrollWidth"] <= sizes["width"], sizes


def stage_on_screen(page, run, number: int, total: int) -> None:
    """Everything the class watches after step `number` is on screen."""
    steps = run.locator("ol.recipe-steps > li")
    expect(steps).to_have_count(number)
    on_screen(page, steps.nth(number - 1), f"step {number}")
    if number < total:
        on_screen(page, page.locator("#recipe-next"), "the Next step button")
    else:
        on_screen(page, run.locator(".recipe-status"), "the recipe's verdict")
    on_screen(page, page.locator("#log-rows tr.ev").first, "the newest event row")
    on_screen(page, page.locator("#workers > .card").last.locator("header"), "the newest card")
    if page.locator(".ladder a.item").count():
        on_screen(page, page.locator(".ladder a.item").last, "the newest ladder arrow")
    page_does_not_scroll(page)


@pytest.mark.parametrize(("width", "height", "present"), [
    (1280, 720, False), (1280, 720, True), (1920, 1080, False)],
    ids=["1280x720", "1280x720-present", "1920x1080"])
def test_each_step_of_a_recipe_stays_on_screen(page, own_server, width, height, present):  # noqa: F811
    page.set_viewport_size({"width": width, "height": height})
    reports = open_dashboard(page, own_server)
    if present:
        focus_page(page)
        page.keyboard.press("p")
        expect(page.locator("body")).to_have_class(re.compile(r"\bpresent\b"))
    total = len(recipe_file(RECIPE)["steps"])
    run = start_recipe(page, RECIPE)
    status = run.locator(".recipe-status")
    expect(status).to_contain_text(f"Step 1 of {total} done.")
    for number in range(1, total + 1):  # bounded: one Next per step
        if number > 1:
            if number % 2 and not present:
                page.get_by_role("button", name="Next step").click()
            else:
                focus_page(page)
                page.keyboard.press("n")
            if number < total:
                expect(status).to_contain_text(f"Step {number} of {total} done.")
            else:
                expect(status).to_have_attribute("data-done", "yes")
        page.wait_for_timeout(400)  # the step's datagrams reach the ladder and the log
        stage_on_screen(page, run, number, total)
    # the recipe's datagrams were drawn: the check above ran on real arrows
    expect(page.locator(".ladder a.item")).not_to_have_count(0)
    # the forms stay usable beside the stage, also while presenting: start and stop a server
    on_screen(page, page.locator("#server-start"), "Start server")
    form = page.locator("#server-form")
    form.locator("input[name=port]").fill("0")
    form.locator("input[name=name]").fill("stage-server")
    page.locator("#server-start").click()
    card = page.locator("#worker-stage-server")
    expect(card.locator(".state")).to_have_text("running")
    on_screen(page, card.locator("header"), "the card just started")
    card.get_by_role("button", name="Stop").click()
    expect(card.locator(".state")).to_have_text("stopped")
    page_does_not_scroll(page)
    assert_clean(page, reports)


def test_new_cards_do_not_push_the_ladder_and_log_away(page, own_server):  # noqa: F811
    """Eight workers later the ladder and the log are where they were; the newest card is
    first."""
    page.set_viewport_size({"width": 1280, "height": 720})
    reports = open_dashboard(page, own_server)
    before = page.evaluate("""() => ['.ladder-panel', '.log-panel'].map(
        (s) => Math.round(document.querySelector(s).getBoundingClientRect().top))""")
    with own_server.client() as api:
        for number in range(8):  # bounded
            api.start(kind="server", name=f"stage-{number}", port=0)
        expect(page.locator("#workers > .card")).to_have_count(8)
        after = page.evaluate("""() => ['.ladder-panel', '.log-panel'].map(
            (s) => Math.round(document.querySelector(s).getBoundingClientRect().top))""")
        assert after == before
        on_screen(page, page.locator("#worker-stage-7 header"), "the newest card")
        tops = page.evaluate("""() => ['stage-7', 'stage-0'].map(
            (w) => document.getElementById('worker-' + w).getBoundingClientRect().top)""")
        assert tops[0] < tops[1], "the newest card comes first"
        page_does_not_scroll(page)
        api.stop_started()
    assert_clean(page, reports)


def test_a_phone_stacks_and_the_log_stays_readable(page, own_server):  # noqa: F811
    page.set_viewport_size({"width": 390, "height": 844})
    reports = open_dashboard(page, own_server)
    with own_server.client() as api:
        server = api.start(kind="server", name="phone-server", port=0)
        api.start(kind="client", name="phone-client", port=server["local"][1],
                  message="a sentence long enough to need a readable column")
        expect(page.locator("#log-rows .ev-reply")).not_to_have_count(0)
        page.locator(".log-panel").scroll_into_view_if_needed()
        row = page.locator("#log-rows .ev-reply").first
        row.scroll_into_view_if_needed()
        message = row.locator(".msg")
        expect(message).to_contain_text("Your data was")
        box = message.bounding_box()
        assert box["width"] >= MIN_MESSAGE_PX, box
        on_screen(page, message, "the reply's message")
        # the page stacks: nothing wider than the phone
        widths = page.evaluate("[innerWidth, document.scrollingElement.scrollWidth]")
        assert widths[1] <= widths[0], widths
        # the stage comes under the forms, each box as wide as the screen allows
        for selector in ("#server-form", ".recipes-panel", ".ladder-panel", ".log-panel"):
            assert page.locator(selector).bounding_box()["width"] >= 390 - 40, selector
        api.stop_started()
    assert_clean(page, reports)


def test_ladder_names_lanes_in_full_and_marks_a_drop_once(page, own_server):  # noqa: F811
    page.set_viewport_size({"width": 1280, "height": 720})
    reports = open_dashboard(page, own_server)
    server_name = "a-rather-long-server-name-for-the-ladder"
    client_name = "promiscuous-fooled-3-client-with-a-long-name"
    with own_server.client() as api:
        server = api.start(kind="server", name=server_name, port=0, drop_rate=0.5, seed=7)
        port = server["local"][1]
        api.start(kind="client", name=client_name, port=port, mode="connected",
                  message="ladder please", count=3, interval=0)
        mark = page.locator(".ladder .mark", has_text="pretended to drop").first
        expect(mark).to_be_visible()
        assert mark.text_content().count("✕") == 1, mark.text_content()
        lanes = page.locator(".lanes th")
        expect(lanes.filter(has_text=server_name)).to_have_count(1)
        expect(lanes.filter(has_text=client_name)).to_have_count(1)
        bound = f"{server['local'][0]}:{port}"
        expect(lanes.filter(has_text=server_name)).to_contain_text(bound)
        for lane in range(lanes.count()):  # whole names, wrapped: never cut with "…"
            assert "…" not in lanes.nth(lane).text_content()
            on_screen(page, lanes.nth(lane).locator(".who"), "a lane's name")
        # the lanes use the panel's width
        panel = page.locator(".ladder-scroll").bounding_box()
        svg = page.locator("svg.ladder").bounding_box()
        assert svg["width"] >= panel["width"] - 20, (svg, panel)
        # a label sits above its arrow, clear of the arrowheads
        arrow = page.locator(".ladder a.item", has_text="ladder please").first
        # (glyph boxes, without the halo: the label's lowest point above the arrowhead's top)
        bottom, head_top = arrow.evaluate("""(a) => {
          const text = a.querySelector("text").getBBox();
          const line = a.querySelector("line").y1.baseVal.value;
          const head = document.querySelector("#head").markerHeight.baseVal.value;
          return [text.y + text.height, line - head / 2]; }""")
        assert bottom <= head_top, (bottom, head_top)
        api.stop_started()
    assert_clean(page, reports)


def test_chart_x_axis_is_in_seconds(page, own_server):  # noqa: F811
    reports = open_dashboard(page, own_server)
    chart = page.locator("#rate-chart")
    expect(chart).to_have_attribute("data-points", re.compile(r"[1-9]"), timeout=5_000)
    legend = chart.locator(".u-legend .u-series").first
    expect(legend).to_contain_text("seconds")
    plot = chart.locator(".u-over")
    plot.scroll_into_view_if_needed()
    box = plot.bounding_box()
    for fraction in (0.3, 0.6, 0.9):  # the legend shows the x value under the pointer
        page.mouse.move(box["x"] + box["width"] * fraction, box["y"] + box["height"] / 2)
    expect(legend).to_contain_text(re.compile(r"\d+\.\d s"))
    assert_clean(page, reports)


def test_keyboard_reaches_start_server_in_two_keys(page, own_server):  # noqa: F811
    reports = open_dashboard(page, own_server)
    page.keyboard.press("Tab")
    skip = page.locator("a.skip")
    expect(skip).to_be_focused()
    expect(skip).to_be_visible()
    on_screen(page, skip, "the skip link")
    page.keyboard.press("Enter")
    expect(page.locator("#server-start")).to_be_focused()
    # fold-out headers show where the focus is, clearly
    page.locator("#server-form input[name=seed]").click()
    page.keyboard.press("Tab")
    summary = page.locator("#server-form summary")
    expect(summary).to_be_focused()
    outline = summary.evaluate("""(el) => { const s = getComputedStyle(el);
        return [s.outlineStyle, parseFloat(s.outlineWidth)]; }""")
    assert outline[0] != "none" and outline[1] >= 2, outline
    assert_clean(page, reports)
