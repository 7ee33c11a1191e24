"""Makes the README's screenshots: a real UDP Lab playing the book's recipes step by step,
seen at 1280×720 (a projector), 1920×1080 and on a phone (390×844), and in presentation mode.

Run it with `.venv/bin/python docs/screenshot.py [directory]` after `make test-setup`; the
pictures go to docs/ unless a directory is given.
"""

import sys
import tempfile
from pathlib import Path

from playwright.sync_api import expect, sync_playwright

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from tests.browser.conftest import CHROMIUM, CHROMIUM_ARGS  # noqa: E402
from live import start_server, stop_and_check  # noqa: E402

SIZES = {"screenshot.png": (1280, 720), "screenshot-1920.png": (1920, 1080),
         "screenshot-phone.png": (390, 844)}


def stage(page, server, recipe: str, steps: int) -> None:
    """Open the dashboard and play `steps` steps of `recipe` from the page, as a teacher."""
    page.goto(f"{server.base}/?token={server.token}")
    expect(page.locator("#conn-status")).to_have_text("live")
    form = page.locator("#recipe-form")
    form.locator("select[name=name]").select_option(recipe)
    form.get_by_role("button", name="Step by step").click()
    status = page.locator("#recipe-run .recipe-status")
    expect(status).to_contain_text("Step 1 of")
    for number in range(2, steps + 1):
        page.get_by_role("button", name="Next step").click()
        expect(status).to_contain_text(f"Step {number} of")
    page.wait_for_timeout(2500)  # the chart's points and the client's backoff


def main() -> None:
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "docs"
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        for name, (width, height) in SIZES.items():
            # a udplab of its own per picture: each starts from an empty page
            server = start_server(Path(tempfile.mkdtemp(prefix="udplab-")))
            try:
                page = browser.new_page(viewport={"width": width, "height": height})
                stage(page, server, "04-loss-and-backoff", 4)
                if width < 600:  # a phone: the page stacks; show the ladder and the log
                    page.locator(".ladder-panel").scroll_into_view_if_needed()
                    page.evaluate("document.querySelector('.ladder-panel').scrollIntoView()")
                    page.wait_for_timeout(300)  # rows off screen until now are laid out
                page.screenshot(path=str(out / name))
                if name == "screenshot.png":
                    page.locator("#present-toggle").click()
                    page.wait_for_timeout(300)
                    page.screenshot(path=str(out / "screenshot-present.png"))
                page.close()
            finally:
                stop_and_check(server)
        browser.close()


if __name__ == "__main__":
    main()
