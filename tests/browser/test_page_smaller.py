"""Issue 14, "smaller things seen", in a real Chromium: the S key, and what must not be cut
or broken into pieces (checked by the boxes the browser lays out, at the issue's sizes)."""

import pytest
from dashboard import open_dashboard, unique
from own_server import own  # noqa: F401 (a fixture)
from playwright.sync_api import expect

SIZES = {"projector": (1280, 720), "wide": (1920, 1080), "phone": (390, 844)}

# Every text node's lines: how many distinct line boxes its characters fall on.
LINES = """(el) => {
  const range = document.createRange();
  range.selectNodeContents(el);
  const tops = new Set([...range.getClientRects()].map((r) => Math.round(r.top)));
  return tops.size;
}"""

# An element's text box against its own box: the part cut off on the right, in px.
CUT = """(el) => {
  const range = document.createRange();
  range.selectNodeContents(el);
  const text = range.getBoundingClientRect(), box = el.getBoundingClientRect();
  const card = el.closest('.card').getBoundingClientRect();
  return Math.max(0, Math.round(text.right - Math.min(box.right, card.right)));
}"""


def test_s_pauses_the_newest_server(page, own):
    open_dashboard(page, own)
    with own.client() as api:
        old = api.start(kind="server", name=unique("s-old"), port=0)
        new = api.start(kind="server", name=unique("s-new"), port=0)
        try:
            old_card, new_card = (page.locator(f"#worker-{w['id']}") for w in (old, new))
            expect(new_card.locator(".state")).to_have_text("running")
            page.locator("body").click(position={"x": 5, "y": 5})  # focus off any field
            page.keyboard.press("s")
            expect(new_card.locator(".state")).to_have_text("paused")
            expect(old_card.locator(".state")).to_have_text("running")
            page.keyboard.press("s")
            expect(new_card.locator(".state")).to_have_text("running")
            expect(old_card.locator(".state")).to_have_text("running")
        finally:
            api.stop_started()
    assert page.console_errors == []


@pytest.mark.parametrize("size", list(SIZES))
def test_server_card_streams_and_counters_are_whole(page, own, size):
    page.set_viewport_size(dict(zip(("width", "height"), SIZES[size])))
    open_dashboard(page, own)
    with own.client() as api:
        server = api.start(kind="server", name=unique("whole"), port=0, reply="echo",
                           rcvbuf=4 * 1024 * 1024)
        try:
            stream = api.start(kind="stream", name=unique("whole-stream"),
                               port=server["local"][1], count=3000, rate=20_000)
            flood = api.start(kind="client", name=unique("whole-flood"),
                              port=server["local"][1], count=1_000_000, interval=0)
            card = page.locator(f"#worker-{server['id']}")
            expect(page.locator(f"#worker-{stream['id']} .state")).to_have_text("finished")
            expect(card.locator("table.streams tbody tr")).to_have_count(1)
            # enough traffic for counters of six digits or more
            received = card.locator("[data-counter=received]")
            for _ in range(100):  # bounded: about 10 s
                if len(received.text_content()) >= 6:
                    break
                page.wait_for_timeout(100)
            api.delete(f"/api/workers/{flood['id']}")
            page.wait_for_timeout(300)
            card.scroll_into_view_if_needed()
            broken = [(c.text_content(), c.evaluate(LINES))
                      for c in card.locator("table.streams th, table.streams td").all()]
            assert all(lines == 1 for _, lines in broken), broken
            cut = [(d.get_attribute("data-counter"), d.text_content(), d.evaluate(CUT))
                   for d in card.locator("dd[data-counter]").all()]
            assert all(px == 0 for *_, px in cut), cut
        finally:
            api.stop_started()
    assert page.console_errors == []


def test_a_long_worker_name_stays_in_its_log_column(page, own):
    open_dashboard(page, own)
    name = unique("a-long-worker-name-for-the-log-columns")  # 47 of the 48 allowed
    assert len(name) <= 48
    with own.client() as api:
        api.start(kind="server", name=name, port=0)
        try:
            row = page.locator("#log-rows tr.ev", has=page.locator("td.w", has_text=name)).first
            expect(row).to_be_visible()
            # one line, cut with an ellipsis at its column's edge; the title has it whole
            cell = row.evaluate("""(tr) => {
                const w = tr.querySelector('.w'), style = getComputedStyle(w);
                return {overlap: w.getBoundingClientRect().right
                                 - tr.querySelector('.type').getBoundingClientRect().left,
                        clips: style.overflowX === 'hidden' && style.textOverflow === 'ellipsis'
                               && style.whiteSpace === 'nowrap',
                        lines: Math.round(w.getBoundingClientRect().height
                                          / tr.querySelector('.t').getBoundingClientRect().height),
                        title: w.title}; }""")
            assert cell["overlap"] <= 0, f"the name runs {cell['overlap']:.0f} px into the event column"
            assert cell["clips"] and cell["lines"] == 1, cell
            assert cell["title"] == name, cell
        finally:
            api.stop_started()
    assert page.console_errors == []


# Each visible select: the width its chosen text needs (text, padding, the arrow) and has.
SELECTS = """() => [...document.querySelectorAll('select')].filter((s) => s.checkVisibility())
  .flatMap((s) => {
    const style = getComputedStyle(s);
    const pen = document.createElement('canvas').getContext('2d');
    pen.font = `${style.fontWeight} ${style.fontSize} ${style.fontFamily}`;
    return [...s.options].map((o) => [s.closest('form').id + ' ' + s.name, o.text,
      Math.ceil(pen.measureText(o.text).width + parseFloat(style.paddingLeft)
                + parseFloat(style.paddingRight) + 20), s.clientWidth]);
  })"""


@pytest.mark.parametrize("size", list(SIZES))
def test_select_boxes_show_their_whole_choice(page, live, size):
    page.set_viewport_size(dict(zip(("width", "height"), SIZES[size])))
    open_dashboard(page, live)
    for panel in ("#spoofer-panel", "#stream-panel", "#mtu-panel", "#broadcast-panel",
                  "#listener-panel"):
        page.locator(f"{panel} > summary").click()
    selects = page.evaluate(SELECTS)
    assert {name for name, *_ in selects} >= {"server-form reply", "client-form mode"}
    # The worker forms' choices (the recipe picker is the stage's, sized by its layout)
    cut = [s for s in selects if s[2] > s[3] and not s[0].startswith("recipe-form")]
    assert cut == [], cut
