"""Fixtures for the history tests: a udplab process with its own --data-dir, an exchange of
datagrams on loopback to record, and tshark to read pcapng files back."""

import shutil
import subprocess
import time
from pathlib import Path

import pytest

from live import LiveServer, start_server, stop_and_check


def start_with_data(workdir: Path, data_dir: Path, *extra: str) -> LiveServer:
    """A real udplab whose history lives in `data_dir`."""
    return start_server(workdir, args=("--data-dir", str(data_dir), *extra))


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


def exchange(http, *, count: int = 3, message: str = "hello history") -> tuple[dict, dict]:
    """A server on a free loopback port and a client sending it `count` requests; both
    finished or stopped when this returns (bounded in time)."""
    server = http.start(kind="server", host="127.0.0.1", port=0)
    client = http.start(kind="client", host="127.0.0.1", port=server["local"][1],
                        count=count, interval=0.02, message=message)
    deadline = time.monotonic() + 5
    while http.get(f"/api/workers/{client['id']}").json()["state"] == "running":
        assert time.monotonic() < deadline, "the client did not finish in 5 s"
        time.sleep(0.02)
    http.delete(f"/api/workers/{server['id']}")
    return server, client


def find(history: dict, worker_id: str) -> dict:
    """The newest history entry of the worker with this app id."""
    for session in history["sessions"]:
        for w in reversed(session["workers"]):
            if w["worker"] == worker_id:
                return w
    raise AssertionError(f"{worker_id} is not in the history: {history}")


@pytest.fixture(scope="session")
def tshark() -> str:
    """Debian's tshark (make test-setup installs it)."""
    path = shutil.which("tshark")
    if path is None:
        pytest.skip("tshark is not installed: run make test-setup (apt-get install tshark)")
    return path


def tshark_fields(tshark: str, pcapng: Path, *fields: str) -> list[list[str]]:
    """`tshark -T fields` over a capture: one list of field values per packet."""
    args = [tshark, "-r", str(pcapng), "-T", "fields", "-E", "separator=\t"]
    for f in fields:
        args += ["-e", f]
    done = subprocess.run(args, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    return [line.split("\t") for line in done.stdout.splitlines() if line.strip()]
