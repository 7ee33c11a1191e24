"""Helpers for the history tests (a module of its own name: every test folder has a
`conftest`, so `from conftest import ...` would depend on which one pytest loaded last)."""

import subprocess
import time
from pathlib import Path

import httpx
from live import LiveServer, start_server, stop_and_check


def start_with_data(workdir: Path, data_dir: Path, *extra: str) -> LiveServer:
    """A real udplab whose history lives in `data_dir`."""
    return start_server(workdir, args=("--data-dir", str(data_dir), *extra))


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


def visit_and_stop(server: LiveServer) -> tuple[httpx.Response, httpx.Response, dict]:
    """GET /api/history and /history, and start a server worker (the rest of the app works
    whatever the history's state); then `server` is stopped and checked."""
    try:
        with server.client() as http:
            api = http.get("/api/history")
            page = http.get("/history")
            worker = http.start(kind="server", host="127.0.0.1", port=0)
            http.stop_started()
    finally:
        stop_and_check(server)
    return api, page, worker


def find(history: dict, worker_id: str) -> dict:
    """The newest history entry of the worker with this app id."""
    for session in history["sessions"]:
        for w in reversed(session["workers"]):
            if w["worker"] == worker_id:
                return w
    raise AssertionError(f"{worker_id} is not in the history: {history}")


def tshark_fields(tshark: str, pcapng: Path, *fields: str) -> list[list[str]]:
    """`tshark -T fields` over a capture: one list of field values per packet."""
    args = [tshark, "-r", str(pcapng), "-T", "fields", "-E", "separator=\t"]
    for f in fields:
        args += ["-e", f]
    done = subprocess.run(args, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    return [line.split("\t") for line in done.stdout.splitlines() if line.strip()]
