"""The dashboard in a real Chromium: log in with the token, start the book's server and
client from the forms, watch the reply arrive live over the WebSocket."""

import re
import socket
import time

from dashboard import free_udp_port, open_dashboard, unique
from playwright.sync_api import expect

REPLY = re.compile(r"The server \('127\.0\.0\.1', \d+\) replied 'Your data was \d+ bytes long'")



def test_token_login_sets_cookie_and_hides_token(page, live):
    page.goto(f"{live.base}/?token={live.token}")
    assert page.url == f"{live.base}/"
    cookies = {c["name"]: c for c in page.context.cookies()}
    cookie = cookies[f"udplab_{live.port}"]
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    expect(page.locator("#conn-status")).to_have_text("live")
    assert page.console_errors == []


def test_server_and_client_from_the_forms(page, live):
    port = free_udp_port()
    page.goto(f"{live.base}/?token={live.token}")
    expect(page.locator("#conn-status")).to_have_text("live")

    server = page.locator("#server-form")
    server.locator("input[name=port]").fill(str(port))
    server.locator("input[name=name]").fill("book-server")
    server.get_by_role("button", name="Start server").click()
    expect(page.locator("#server-result")).to_contain_text(
        f"Started server book-server on 127.0.0.1:{port}")
    card = page.locator("#worker-book-server")
    expect(card.locator(".state")).to_have_text("running")
    expect(page.locator("#log-rows")).to_contain_text(f"Listening at ('127.0.0.1', {port})")

    client = page.locator("#client-form")
    client.locator("input[name=port]").fill(str(port))
    client.locator("input[name=name]").fill("book-client")
    client.get_by_role("button", name="Start client").click()
    expect(page.locator("#log-rows .ev-reply").first).to_contain_text(REPLY)
    expect(page.locator("#log-rows")).to_contain_text("The OS assigned me the address")
    expect(card.locator("[data-counter=received]")).to_have_text("1")
    expect(card.locator("[data-counter=replied]")).to_have_text("1")
    expect(page.locator("#worker-book-client .state")).to_have_text("finished")

    card.get_by_role("button", name="Stop").click()
    expect(card.locator(".state")).to_have_text("stopped")
    assert page.console_errors == []


def test_form_error_shows_next_to_the_form(page, live):
    page.goto(f"{live.base}/?token={live.token}")
    expect(page.locator("#conn-status")).to_have_text("live")
    server = page.locator("#server-form")
    server.locator("input[name=port]").fill("no-such-service")
    server.get_by_role("button", name="Start server").click()
    expect(page.locator("#server-result .error")).to_contain_text(
        "Unknown service name 'no-such-service'")


def test_counters_stay_exact_under_a_burst(page, live):
    """A burst far faster than the page lists rows: the card's counter still ends exact."""
    page.goto(f"{live.base}/?token={live.token}")
    expect(page.locator("#conn-status")).to_have_text("live")
    with live.client() as api:
        worker = api.start(kind="server", name="burst", port=0, reply="none",
                           rcvbuf=4 * 1024 * 1024)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
            for number in range(3000):
                sender.sendto(b"burst %d" % number, tuple(worker["local"]))
        card = page.locator("#worker-burst")
        expect(page.locator("#log-note")).to_contain_text("too fast to list")
        # the API's count once the server has read everything the kernel kept
        received = -1
        for _ in range(50):
            now = api.get("/api/workers/burst").json()["counters"]["received"]
            if now == received:
                break
            received = now
            page.wait_for_timeout(100)
        assert received > 500
        expect(card.locator("[data-counter=received]")).to_have_text(str(received))
        assert page.locator("#log-rows tr.ev").count() <= 200
        api.stop_started()
    assert page.console_errors == []


def test_the_log_keeps_its_newest_rows_in_order_under_its_header(page, live):
    """Each message's rows are one batch under the header: past the 200 kept, the oldest go,
    across batches, and the rows stay newest first, none missing (150 datagrams/s: under a
    worker's row budget, so every one is listed)."""
    page.goto(f"{live.base}/?token={live.token}")
    expect(page.locator("#conn-status")).to_have_text("live")
    name = unique("keep")
    with live.client() as api:
        worker = api.start(kind="server", name=name, port=0, reply="none")
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
            for number in range(260):
                sender.sendto(b"kept %d" % number, tuple(worker["local"]))
                time.sleep(1 / 150)
        rows = page.locator("#log-rows tr.ev-received", has_text=f"{name}")
        expect(rows.first).to_contain_text("'kept 259'")
        api.stop_started()
    expect(page.locator("#log-rows tr.ev")).to_have_count(200)
    # textContent: rows scrolled far out of view are not rendered (content-visibility)
    texts = page.locator("#log-rows tr.ev").evaluate_all("rows => rows.map(r => r.textContent)")
    shown = [int(n) for n in re.findall(r"'kept (\d+)'", " ".join(t for t in texts if name in t))]
    assert shown == list(range(259, 259 - len(shown), -1)) and len(shown) > 150, shown
    assert page.locator("#log-rows tbody").count() > 5  # batches, not one long body
    table = page.get_by_role("table", name="Events, newest first")
    expect(table.get_by_role("row").first.get_by_role("columnheader")).to_have_count(4)
    assert page.console_errors == []


def test_api_docs_page_renders_under_the_csp(page, live):
    page.goto(f"{live.base}/?token={live.token}")
    page.goto(f"{live.base}/docs")
    expect(page.locator("#swagger-ui")).to_contain_text("/api/workers")
    assert page.console_errors == []


def test_ladder_chart_and_backoff_timeline(page, live):
    """The ladder draws the exchange, a click shows the datagram's bytes, the client card
    shows its waits, and the traffic chart collects points."""
    page.goto(f"{live.base}/?token={live.token}")
    expect(page.locator("#conn-status")).to_have_text("live")
    with live.client() as api:
        server = api.start(kind="server", name="ladder-server", port=0, drop_rate=0.5, seed=7)
        api.start(kind="client", name="ladder-client", port=server["local"][1],
                  mode="connected", message="ladder please")
        arrow = page.locator(".ladder a.item", has_text="ladder please").first
        expect(arrow).to_be_visible()
        expect(page.locator(".ladder .mark", has_text="pretended to drop").first).to_be_visible()
        arrow.click()
        expect(page.locator("#datagram")).to_contain_text("ladder please")
        expect(page.locator("#datagram .hex")).to_contain_text("6c 61 64 64 65 72")  # "ladder"
        timeline = page.locator("#worker-ladder-client .backoff li")
        expect(timeline.first).to_contain_text("0.1 s")
        expect(page.locator("#worker-ladder-client .backoff")).to_contain_text("✓ reply")
        expect(page.locator("#rate-chart canvas")).to_have_count(1)
        # (wait_for_function would need eval, which the page's CSP rightly forbids)
        expect(page.locator("#rate-chart")).to_have_attribute(
            "data-points", re.compile(r"^([2-9]|\d\d+)$"), timeout=5000)
        api.stop_started()
    assert page.console_errors == []


def test_the_event_log_stays_a_table_with_aligned_columns(page, live):
    """The log's rows are laid out as grids (cheap to add 20 times a second), yet screen
    readers get a table with named columns and every column lines up with its header."""
    open_dashboard(page, live)
    with live.client() as api:
        worker = api.start(kind="server", name=unique("grid"), host="127.0.0.1", port=0)
        table = page.get_by_role("table", name="Events, newest first")
        expect(table.get_by_role("columnheader")).to_have_text(["time", "worker", "event",
                                                                "message"])
        row = table.get_by_role("row").filter(has_text=f"Listening at ('127.0.0.1', "
                                                       f"{worker['local'][1]})").first
        expect(row.get_by_role("cell")).to_have_count(4)
        headers = [box["x"] for box in (h.bounding_box() for h in
                                        table.get_by_role("columnheader").all())]
        cells = [box["x"] for box in (c.bounding_box() for c in row.get_by_role("cell").all())]
        assert headers == cells and headers == sorted(headers), (headers, cells)
        api.stop_started()
    assert page.console_errors == []
