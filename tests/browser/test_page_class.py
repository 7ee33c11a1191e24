"""The teacher's page and a read-only viewer's in Chromium while a worker is busy (issue 17):
the viewer gets the flushes merged, one message per `viewer_flush_interval`, half a flush after
the teacher; both pages list the same rows in the same order, the newest first, and both cards
end on the API's exact counter. Datagrams go to 127.0.0.1 only; bounded."""

import socket
import time

from playwright.sync_api import expect
from test_page_recipes import viewer_token

# datagrams, 150 a second (~2 s): every flush has rows, and every row is listed (a worker's
# rows of datagrams are listed up to Settings.page_rows_per_second)
ROWS = 300
EVERY = 1 / 150
ROWS_JS = "() => Array.from(document.querySelectorAll('#log-rows td.msg'), td => td.textContent)"


def test_the_viewer_lists_the_teachers_rows_in_the_same_order(browser, page, live):
    context = browser.new_context(viewport={"width": 1280, "height": 720})
    context.set_default_timeout(10_000)
    viewer = context.new_page()
    errors: list[str] = []
    viewer.on("console", lambda m: m.type == "error" and errors.append(m.text))
    try:
        page.goto(f"{live.base}/?token={live.token}")
        viewer.goto(f"{live.base}/?view={viewer_token(live)}")
        for each in (page, viewer):
            expect(each.locator("#conn-status")).to_have_text("live")
        with live.client() as api:
            worker = api.start(kind="server", name="taught", port=0, reply="none")
            for each in (page, viewer):
                expect(each.locator("#worker-taught")).to_be_visible()
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
                for n in range(ROWS):
                    sender.sendto(b"class row %03d" % n, tuple(worker["local"]))
                    time.sleep(EVERY)
            counted = -1
            for _ in range(50):  # until the server has read all the kernel kept
                now = api.get("/api/workers/taught").json()["counters"]["received"]
                if now == counted:
                    break
                counted = now
                page.wait_for_timeout(100)
            assert counted == ROWS
            for each in (page, viewer):
                expect(each.locator("#worker-taught [data-counter=received]")) \
                    .to_have_text(str(ROWS))
                expect(each.locator("#log-rows td.msg", has_text=f"class row {ROWS - 1}")) \
                    .to_have_count(1)
            shown = {name: [t for t in each.evaluate(ROWS_JS) if "class row" in t]
                     for name, each in (("teacher", page), ("viewer", viewer))}
            api.stop_started()
    finally:
        context.close()
    # the log keeps the newest 200: the same ones on both pages, newest first
    assert shown["viewer"] == shown["teacher"]
    numbers = [int(t.rsplit("class row ", 1)[1][:3]) for t in shown["teacher"]]
    assert numbers == list(range(ROWS - 1, ROWS - 1 - len(numbers), -1)), numbers[:10]
    assert len(numbers) == 200
    assert errors == [] and page.console_errors == []
