"""Makes docs/screenshot.png for the README: a real UDP Lab running the book's listing 2-2.

Run it with `.venv/bin/python docs/screenshot.py` after `make test-setup`.
"""

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


def main() -> None:
    server = start_server(Path(tempfile.mkdtemp(prefix="udplab-")))
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            page.goto(f"{server.base}/?token={server.token}")
            page.wait_for_selector("#conn-status.live")
            api = httpx.Client(base_url=server.base, headers=server.bearer, timeout=30)
            api.post("/api/recipes/04-loss-and-backoff", json={"wait": True})
            api.post("/api/experiments/impostor", json={})
            time.sleep(2.5)
            page.screenshot(path=str(ROOT / "docs" / "screenshot.png"))
            browser.close()
    finally:
        stop_and_check(server)


if __name__ == "__main__":
    main()
