"""How fast the page keeps up: page load, and datagrams/s whose counters the page shows exactly.

Sends paced bursts on loopback to a `server` worker (reply none: one `received` event per
datagram) for a fixed time at each rate, then measures how long the page's counter takes to
match the API's. Prints a table. Run: `.venv/bin/python bench/page_rate.py` (after
`make test-setup`). Traffic: loopback only; every loop is bounded in count and time.
"""

import socket
import sys
import tempfile
import time
from pathlib import Path

import httpx
from playwright.sync_api import sync_playwright

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from tests.browser.conftest import CHROMIUM, CHROMIUM_ARGS  # noqa: E402
from live import start_server, stop_and_check  # noqa: E402

RATES = (1_000, 10_000, 50_000)
SECONDS = 2.0


def send_paced(address: tuple[str, int], rate: int, seconds: float) -> int:
    """Send `rate` datagrams/s for `seconds`, in 1 ms slices; returns how many were sent."""
    sent, start = 0, time.perf_counter()
    total = int(rate * seconds)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
        while sent < total and time.perf_counter() - start < seconds * 3:
            due = min(total, int((time.perf_counter() - start) * rate) + 1)
            while sent < due:
                sender.sendto(b"x" * 64, address)
                sent += 1
            time.sleep(0.0005)
    return sent


def main() -> None:
    server = start_server(Path(tempfile.mkdtemp(prefix="udplab-")))
    rows = []
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1280, "height": 800})
            started = time.perf_counter()
            page.goto(f"{server.base}/?token={server.token}")
            page.wait_for_selector("#conn-status.live")
            load_ms = (time.perf_counter() - started) * 1000
            api = httpx.Client(base_url=server.base, headers=server.bearer, timeout=5)
            for rate in RATES:
                name = f"rate-{rate}"
                local = api.post("/api/workers", json={
                    "kind": "server", "name": name, "port": 0, "reply": "none"}).json()["local"]
                page.wait_for_selector(f"#worker-{name}")
                t0 = time.perf_counter()
                sent = send_paced(tuple(local), rate, SECONDS)
                send_s = time.perf_counter() - t0
                received, lag_ms = -1, None
                deadline = time.perf_counter() + 10
                while time.perf_counter() < deadline:
                    received = api.get(f"/api/workers/{name}").json()["counters"]["received"]
                    shown = page.locator(f"#worker-{name} [data-counter=received]").inner_text()
                    if shown == str(received) and received >= sent * 0.5:
                        lag_ms = (time.perf_counter() - t0 - send_s) * 1000
                        break
                    time.sleep(0.01)
                rows.append((rate, sent, sent / send_s, received, lag_ms))
                api.delete(f"/api/workers/{name}")
            browser.close()
    finally:
        stop_and_check(server)
    print(f"page load (goto to live snapshot): {load_ms:.0f} ms")
    print(f"{'target/s':>9} {'sent':>7} {'sent/s':>8} {'received':>9} {'page exact after':>17}")
    for rate, sent, achieved, received, lag in rows:
        lag_text = f"{lag:.0f} ms" if lag is not None else "not within 10 s"
        print(f"{rate:>9} {sent:>7} {achieved:>8.0f} {received:>9} {lag_text:>17}")


if __name__ == "__main__":
    main()
