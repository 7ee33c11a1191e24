"""Fixtures for the history tests: a udplab process with its own --data-dir, an exchange of
datagrams on loopback to record, and tshark to read pcapng files back."""

import shutil
from pathlib import Path

import pytest

from history_helpers import start_with_data
from live import LiveServer, stop_and_check


@pytest.fixture
def data_dir(tmp_path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def hist(tmp_path, data_dir) -> LiveServer:
    """A udplab process of this test's own, with its history in `data_dir`."""
    server = start_with_data(tmp_path / "udplab", data_dir)
    yield server
    if server.proc.poll() is None:
        stop_and_check(server)
    else:
        server.terminate()


@pytest.fixture(scope="session")
def tshark() -> str:
    """Debian's tshark (make test-setup installs it)."""
    path = shutil.which("tshark")
    if path is None:
        pytest.skip("tshark is not installed: run make test-setup (apt-get install tshark)")
    return path
