"""Issue 14, defect 1 in a real Chromium: Stop pressed as a person presses it (the mouse held
≈120 ms while the page updates) stops a busy worker the first time, and no control moves
under the pointer while a worker runs.

Before the fix the card was re-drawn under the pointer every flush: press and release landed
on different elements and the click never happened."""

import pytest
from dashboard import flooding, open_dashboard, press, press_at, unique, wait_busy
from own_server import own  # noqa: F401 (a fixture)
from playwright.sync_api import expect

ROUNDS = 5

BUSY = {
    # what the issue measured: 0 stops in 8, 0 in 4, 0 in 5 and 4 in 6
    "flooding-client": dict(kind="client", count=1_000_000, interval=0),
    "fast-stream": dict(kind="stream", count=10_000_000, size=64, rate=50_000),
    "client-20-per-second": dict(kind="client", count=1_000_000, interval=0.05),
    "book-client-1-per-second": dict(kind="client", count=1_000, interval=1.0),
}


@pytest.mark.parametrize("busy", list(BUSY))
def test_one_press_stops_a_busy_worker(page, own, busy):
    open_dashboard(page, own)
    stopped = 0
    with own.client() as api:
        server = api.start(kind="server", name=unique("stop-target"), port=0)
        try:
            for _ in range(ROUNDS):
                name = unique(busy)
                api.start(name=name, port=server["local"][1], **BUSY[busy])
                card = page.locator(f"#worker-{name}")
                expect(card.locator(".state")).to_have_text("running")
                if busy != "book-client-1-per-second":  # one per second: no need to wait
                    wait_busy(page, card, "sent")
                stop = card.get_by_role("button", name="Stop")
                events = card.get_by_role("link", name="events (JSON)")
                stop.scroll_into_view_if_needed()
                before = (stop.bounding_box(), events.bounding_box())
                press(page, stop)
                # one press, no retry: the worker must end by itself now
                try:
                    expect(card.locator(".state")).to_have_text("stopped", timeout=5_000)
                except AssertionError:
                    state = api.get(f"/api/workers/{name}").json()["state"]
                    raise AssertionError(f"round {stopped + 1}: {name} is {state} after one "
                                         f"press; console: {page.console_errors}") from None
                stopped += 1
                # the controls are where they were: a second click lands on the same Stop
                after = (stop.bounding_box(), events.bounding_box())
                assert after == before, (before, after)
                expect(stop).to_be_disabled()
        finally:
            api.stop_started()
    assert stopped == ROUNDS
    assert page.console_errors == []


def test_double_click_on_stop_opens_nothing(page, own):
    """The second click of a double click lands where Stop was: nothing else is there."""
    open_dashboard(page, own)
    with own.client() as api, flooding(page, api, "dbl") as (_, card):
        wait_busy(page, card, "sent")
        url = page.url
        box = press(page, card.get_by_role("button", name="Stop"))
        page.wait_for_timeout(300)  # the card now says stopped
        press_at(page, box, hold_ms=0)
        expect(card.locator(".state")).to_have_text("stopped")
        page.wait_for_timeout(300)
        assert page.url == url  # not on the raw JSON of the events
        expect(card).to_be_visible()  # not removed either
    assert page.console_errors == []


def test_a_card_keeps_its_elements_while_it_updates(page, own):
    """Morphed, not replaced: the Stop button and the card are the same nodes after updates."""
    open_dashboard(page, own)
    with own.client() as api, flooding(page, api, "keep") as (name, card):
        expect(card.locator(".state")).to_have_text("running")
        page.evaluate("""(id) => { window.keptCard = document.getElementById(id);
            window.keptStop = window.keptCard.querySelector('button.stop'); }""",
                      f"worker-{name}")
        wait_busy(page, card, "sent")
        kept = page.evaluate("""(id) => window.keptCard === document.getElementById(id)
            && window.keptStop === window.keptCard.querySelector('button.stop')
            && window.keptStop.isConnected""", f"worker-{name}")
        assert kept, "the card or its Stop button was replaced while the worker ran"
    assert page.console_errors == []


def test_no_stop_button_moves_while_a_client_runs(page, own):
    """A client's card fills in its backoff timeline as it sends: the cards below it (the
    next row of the grid) must not move down under the pointer meanwhile."""
    page.set_viewport_size({"width": 1280, "height": 720})
    open_dashboard(page, own)
    with own.client() as api:
        server = api.start(kind="server", name="first", port=0)
        api.start(kind="client", name="sender", port=server["local"][1], count=8,
                  interval=0.2)
        for name in ("third", "fourth", "fifth"):  # the rows below
            api.start(kind="server", name=name, port=0)
        stops = page.locator(".card button.stop")
        expect(stops).to_have_count(5)
        expect(page.locator("#worker-sender [data-counter=sent]")).to_have_text("1")
        before = [b.bounding_box() for b in stops.all()]
        expect(page.locator("#worker-sender .state")).to_have_text("finished")
        after = [b.bounding_box() for b in stops.all()]
        assert page.locator("#worker-sender .backoff li").count() == 8
        assert after == before, "a Stop button moved while the client ran"
        api.stop_started()
    assert page.console_errors == []
