"""Helpers for the browser tests: a free port, unique names, opening the dashboard, pressing
a button as a person does, a busy worker's card, starting a recipe."""

import socket
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

from playwright.sync_api import expect

HOLD_MS = 120  # how long a person's press holds the mouse button down


def free_udp_port() -> int:
    """A loopback UDP port nobody uses right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def unique(prefix: str) -> str:
    """A worker name no other test uses on the shared server."""
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def open_dashboard(page, live) -> None:
    """Log in with the token and wait for the live snapshot; say why if it never comes."""
    page.goto(f"{live.base}/?token={live.token}")
    try:
        expect(page.locator("#conn-status")).to_have_text("live")
    except AssertionError as exc:
        raise AssertionError(f"{exc}\nconsole: {page.console_errors}\n"
                             f"server log (tail): {live.log()[-2000:]}\n"
                             f"access log (tail): {live.output()[-2000:]}") from None


def press_at(page, box: dict, hold_ms: int = HOLD_MS) -> None:
    """The pointer on the box's centre, down, `hold_ms`, up."""
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.mouse.down()
    if hold_ms:
        page.wait_for_timeout(hold_ms)
    page.mouse.up()


def press(page, locator) -> dict:
    """A person's click: pointer on the element's centre, down, 120 ms, up; its box."""
    locator.scroll_into_view_if_needed()
    box = locator.bounding_box()
    assert box is not None, "the button is not on screen"
    press_at(page, box)
    return box


def wait_busy(page, card, counter: str, timeout: float = 5.0) -> None:
    """Until the card's counter has changed at least twice on screen: the card is updating."""
    cell = card.locator(f"[data-counter={counter}]")
    seen, deadline = set(), time.monotonic() + timeout
    while len(seen) < 3:
        seen.add(cell.text_content())
        assert time.monotonic() < deadline, f"{counter} never moved: {seen}"
        page.wait_for_timeout(50)


@contextmanager
def flooding(page, api, prefix: str) -> Iterator[tuple[str, object]]:
    """A server and a client sending it a million requests back to back: the client's name
    and card; every worker `api` started is stopped afterwards."""
    server = api.start(kind="server", name=unique(f"{prefix}-target"), port=0)
    try:
        name = unique(f"{prefix}-flood")
        api.start(name=name, kind="client", port=server["local"][1], count=1_000_000,
                  interval=0)
        yield name, page.locator(f"#worker-{name}")
    finally:
        api.stop_started()


def mark_recipe_panel(page) -> None:
    """Mark the shown run: the next run's steps arrive as a new #recipe-run element."""
    page.evaluate("document.getElementById('recipe-run').dataset.old = 'yes'")


def new_run(page):
    return page.locator("#recipe-run:not([data-old])")


def focus_page(page) -> None:
    """Move the focus off any form field, as a teacher clicking on the page would."""
    page.locator("header.top h1").click()


def start_recipe(page, recipe: str, button: str = "Step by step"):
    """Pick `recipe` in the Recipes panel and press `button`; the run it starts."""
    mark_recipe_panel(page)
    form = page.locator("#recipe-form")
    form.locator("select[name=name]").select_option(recipe)
    form.get_by_role("button", name=button).click()
    return new_run(page)
