"""Browser fixtures: Playwright (sync API) driving Debian's Chromium.

Never `playwright install`: the browser is Debian's `chromium` package (make test-setup).

Sync Playwright and pytest-asyncio: while a sync Playwright is alive, its event loop stays
marked as *running* in the main thread between calls (by design, see playwright's
_impl/_greenlets.py), so any later `async def` test, async fixture or asyncio.run() in that
thread fails with "Cannot run the event loop while another loop is running". Hence:
  * tests that use the `browser`/`page` fixtures are moved to the end of the run, so the
    session-scoped browser starts only after every other test has run;
  * browser tests must be plain `def` tests with sync fixtures (run a live server with
    uvicorn in a thread, not as an async fixture); an `async def` one is a collection error.
"""

import inspect
import os

import pytest

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


BROWSER_FIXTURES = {"browser", "page"}


def _uses_browser(item):
    return bool(BROWSER_FIXTURES & set(getattr(item, "fixturenames", ())))


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config, items):
    for item in items:
        if not _uses_browser(item):
            continue
        item.add_marker(pytest.mark.browser)
        func = getattr(item, "obj", None)
        if inspect.iscoroutinefunction(func) or inspect.isasyncgenfunction(func):
            raise pytest.UsageError(
                f"{item.nodeid}: browser tests must be plain `def` tests (sync Playwright "
                "keeps its loop marked running; see tests/browser/conftest.py)"
            )
    # stable partition: every browser test after every other test
    items[:] = [i for i in items if not _uses_browser(i)] + [i for i in items if _uses_browser(i)]


@pytest.fixture(scope="session")
def browser():
    if not os.access(CHROMIUM, os.X_OK):
        pytest.skip(f"{CHROMIUM} not found: run `make test-setup` (installs Debian's chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True, timeout=30_000
        )
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def console_errors():
    """Console messages of type error and uncaught page errors, as strings."""
    return []


@pytest.fixture
def page(browser, console_errors):
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    context.set_default_timeout(10_000)
    page = context.new_page()
    page.on("console", lambda m: m.type == "error" and console_errors.append(f"console: {m.text}"))
    page.on("pageerror", lambda e: console_errors.append(f"pageerror: {e}"))
    page.console_errors = console_errors
    try:
        yield page
    finally:
        context.close()
