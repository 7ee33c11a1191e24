"""Fixtures for the web tests: a udplab process of a test's own, and a Bearer client that
stops the workers it started. The shared `live` server is in tests/conftest.py."""

import pytest

from live import LiveServer, start_server, stop_and_check


@pytest.fixture
def fresh(tmp_path) -> LiveServer:
    """A udplab process of this test's own (fresh app, fresh log)."""
    server = start_server(tmp_path / "udplab")
    yield server
    if server.proc.poll() is None:
        stop_and_check(server)
    else:
        server.terminate()  # the test already stopped it (and checked how); close the files


@pytest.fixture
def api(live):
    """A Bearer-authenticated sync client for the session server; stops the workers it made."""
    with live.client() as http:
        yield http
        http.stop_started()
