"""A udplab of a test's own, for browser tests whose page must hold only their own cards (the
session's `live` server has the cards of every earlier test) or that delete history."""

import pytest
from live import start_server, stop_and_check


@pytest.fixture
def own(tmp_path):
    """A fresh udplab (its own history database too), stopped and checked afterwards."""
    server = start_server(tmp_path / "udplab", args=("--data-dir", str(tmp_path / "data")))
    yield server
    stop_and_check(server)
