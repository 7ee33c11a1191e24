"""The right-hand column's panels at 1280x720 (issue 15's benchmark found them squashed), and
the Machines panel of a class-sized fleet: compact rows in a box that scrolls, redrawn only
when what a row says changes.

The fleet here is 12 `udplab agent` processes on loopback with one nats-server on a free
loopback port (as bench/fleet.py runs 40): the page's layout is what is tested, not the LAN
(tests/browser/test_page_fleet.py and tests/fleet run agents in namespaces on a bridge).
Datagrams go only to 127.0.0.1.
"""

import importlib.util
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from dashboard import free_udp_port, open_dashboard
from live import start_server, stop_and_check
from playwright.sync_api import expect

_spec = importlib.util.spec_from_file_location(
    "fleet_fixtures", Path(__file__).resolve().parents[1] / "fleet" / "conftest.py")
fleet_fixtures = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(fleet_fixtures)  # the fleet helpers of tests/fleet, not a copy

REPO = Path(__file__).resolve().parents[2]
MACHINES = [f"m{i:02d}" for i in range(1, 13)]
# The panels below the stage, in the column that scrolls (by their accessible names).
COLUMN = ["Traffic chart", "Virtual LAN", "This machine", "Binding explorer",
          "Socket options", "Who was fooled?"]
MIN_PANEL = 60  # px: a heading and at least a line of content
SEEN = re.compile(r'<span id="seen-[^"]*"[^>]*>[^<]*</span>')
ROW_MAX = 34  # px: one machine's row is one line of text


def panels_keep_their_height(page, names: list[str]) -> None:
    """Each panel: its heading is visible when scrolled to, its box is at least MIN_PANEL
    tall, and its content fits its box (nothing squashed into a strip that scrolls)."""
    page.set_viewport_size({"width": 1280, "height": 720})
    for name in names:
        panel = page.get_by_role("region", name=name, exact=True)
        panel.scroll_into_view_if_needed()
        expect(panel.locator("h2").first).to_be_visible()
        box = panel.evaluate("""p => { const h = p.querySelector("h2").getBoundingClientRect();
            const b = p.getBoundingClientRect();
            return {height: b.height, scroll: p.scrollHeight, client: p.clientHeight,
                    headInside: h.top >= b.top - 1 && h.bottom <= b.bottom + 1}; }""")
        assert box["height"] >= MIN_PANEL, (name, box)
        assert box["scroll"] <= box["client"] + 1, (name, "content cut off", box)
        assert box["headInside"], (name, "heading cut off", box)


def test_the_columns_panels_keep_their_heading_and_content(page, live):
    """Without a fleet too (`make run`): the column scrolls, its panels keep their height."""
    page.set_viewport_size({"width": 1280, "height": 720})
    open_dashboard(page, live)
    panels_keep_their_height(page, COLUMN)
    column = page.locator(".right").evaluate("c => ({s: c.scrollHeight, c: c.clientHeight})")
    assert column["s"] > column["c"], column  # it is the column that scrolls, not a panel


@pytest.fixture(scope="module")
def class_fleet(tmp_path_factory):
    """nats-server on loopback, a dashboard joined to it, and an agent per MACHINES."""
    directory = tmp_path_factory.mktemp("class-fleet")
    server = fleet_fixtures.make_fleet(directory, "127.0.0.1", MACHINES).start()
    dashboard, agents = None, []
    try:
        dashboard = start_server(
            tmp_path_factory.mktemp("dashboard"),
            args=("--max-token-failures", "0", "--nats", server.url,
                  "--creds", str(server.dir / "dashboard.creds")))
        env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1"}
        for name in MACHINES:  # all at once: each takes a while to import on a busy machine
            out, err = directory / f"{name}.out", directory / f"{name}.err"
            with out.open("wb") as o, err.open("wb") as e:
                proc = subprocess.Popen(
                    [sys.executable, "-m", "webapp", "agent", "--nats", server.url,
                     "--name", name, "--creds", str(directory / f"{name}.creds")],
                    cwd=REPO, env=env, stdin=subprocess.DEVNULL, stdout=o, stderr=e)
            agents.append(fleet_fixtures.AgentProcess(name, "", proc, out, err))
        deadline = time.monotonic() + 45
        with dashboard.client() as api:
            while True:
                up = {m["name"] for m in api.get("/api/machines").json()["machines"]
                      if m["state"] == "up"}
                if up >= set(MACHINES):
                    break
                dead = [a.name for a in agents if a.proc.poll() is not None]
                assert not dead and time.monotonic() < deadline, (
                    f"agents not up: {sorted(set(MACHINES) - up)}; ended: {dead}; "
                    f"{agents[0].stderr()[-1000:]}")
                time.sleep(0.3)
        yield dashboard
    finally:
        for agent in agents:
            agent.stop()
        if dashboard is not None:
            stop_and_check(dashboard)
        server.stop()


def start_traffic(dashboard, port: int, machines: list[str]) -> None:
    """A server here on 127.0.0.1 and a client on each of `machines` sending to it."""
    with dashboard.client() as api:
        started = api.post("/api/workers", json={"kind": "server", "host": "127.0.0.1",
                                                 "port": port})
        assert started.status_code == 201, started.text
        for name in machines:
            started = api.post("/api/workers", json={
                "machine": name, "kind": "client", "host": "127.0.0.1", "port": port,
                "count": 150, "interval": 0.1})  # 15 s at most
            assert started.status_code == 201, started.text


def test_a_class_of_machines_fits_a_bounded_panel(page, class_fleet):
    page.set_viewport_size({"width": 1280, "height": 720})
    open_dashboard(page, class_fleet)
    rows = page.locator("#machines tbody tr[data-machine]")
    expect(rows).to_have_count(len(MACHINES) + 1)  # and this dashboard
    heights = rows.evaluate_all("rows => rows.map(r => r.getBoundingClientRect().height)")
    assert max(heights) <= ROW_MAX, heights
    # an agent on this machine has all its addresses: the row shows two and "+N more",
    # the cell's title has every one
    cell = page.locator("#machines tr[data-machine='m01'] td.addresses")
    shown = cell.locator("code").count()
    assert 1 <= shown <= 2, cell.inner_html()
    if cell.locator(".more").count():
        assert len(cell.get_attribute("title").split()) > shown
    box = page.locator("#machines .machines-scroll").evaluate(
        "b => ({h: b.getBoundingClientRect().height, s: b.scrollHeight})")
    assert box["h"] <= 0.6 * 720, box  # bounded: it scrolls past that
    panels_keep_their_height(page, ["Machines"] + COLUMN[2:])
    assert page.console_errors == []


def test_the_log_keeps_a_worker_name_on_one_line(page, class_fleet):
    page.set_viewport_size({"width": 1280, "height": 720})
    open_dashboard(page, class_fleet)
    start_traffic(class_fleet, free_udp_port(), MACHINES[8:10])
    cell = page.locator("#log-rows td.w", has_text="m09 · client-").first
    expect(cell).to_be_visible(timeout=15_000)
    # one evaluation: rows come and go (the log keeps the newest), so read one cell at once
    sizes = cell.evaluate("""c => ({name: c.textContent, title: c.title,
        w: c.getBoundingClientRect().height,
        t: c.parentElement.querySelector(".t").getBoundingClientRect().height,
        clipped: c.scrollWidth > c.clientWidth})""")
    assert sizes["name"].startswith("m09 · client-") and sizes["title"] == sizes["name"], sizes
    assert sizes["w"] <= sizes["t"] + 1, sizes  # one line, as tall as the time's cell
    assert not sizes["clipped"], sizes  # "m09 · client-1" fits whole at 1280 px


def test_the_machines_panel_is_not_resent_with_each_batch(page, class_fleet):
    frames: list[str] = []

    def watch(ws):
        if "/ws/page" in ws.url:
            ws.on("framereceived", lambda payload: frames.append(payload))

    page.on("websocket", watch)
    page.set_viewport_size({"width": 1280, "height": 720})
    open_dashboard(page, class_fleet)
    start_traffic(class_fleet, free_udp_port(), MACHINES[:6])
    page.wait_for_timeout(4_000)  # the hellos' new worker counts redraw the panel once
    first = len(frames)
    page.wait_for_timeout(9_000)
    window = [f for f in frames[first:] if isinstance(f, str)]
    # A panel sent again with the same rows (but for "last seen") is a needless redraw. (The
    # rows may change: agents here report this machine's addresses, and other programs on
    # it add and remove interfaces; that is a redraw a person needs.)
    rows, needless = None, 0
    for index, frame in enumerate(frames):
        start = frame.find('<div id="machines"') if isinstance(frame, str) else -1
        if start < 0:
            continue
        table = SEEN.sub("", frame[start:frame.index("</table>", start)])
        needless += index >= first and table == rows
        rows = table
    seen = sum('id="seen-m01"' in f for f in window)
    assert len(window) > 20, len(window)  # batches flowed all along
    assert needless == 0, f"the Machines panel was sent {needless} times unchanged in 9 s"
    assert seen >= 2, f"'last seen' was updated {seen} times in 9 s"
    text = page.locator("#seen-m01").inner_text()
    assert len(text) == 8 and text.count(":") == 2, text
    assert page.console_errors == []
