"""Helpers for the browser tests: a free port, unique names, opening the dashboard."""

import socket
import uuid

from playwright.sync_api import expect


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
