"""A busy worker through a real udplab: `--events-per-second` caps the rows and the history,
the counters stay exact, and the page and the JSON stream say how many were not shown.
Loopback only; bounded bursts."""

import json
import socket
import subprocess
import sys
import time

import pytest
from websockets.sync.client import connect

from live import REPO, start_server

LOOPBACK = "127.0.0.1"
BURST = 2000


@pytest.fixture
def busy(tmp_path):
    server = start_server(tmp_path / "busy", args=("--events-per-second", "50"))
    yield server
    server.terminate()


def flood(port: int, count: int) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for n in range(count):
            sock.sendto(f"busy {n:05d}".encode(), (LOOPBACK, port))


def test_a_flood_is_counted_exactly_and_sampled_in_events(busy):
    with busy.client() as http, \
            connect(f"{busy.ws_base}/api/events", additional_headers=busy.bearer,
                    open_timeout=5) as stream:
        stream.recv(timeout=5)  # the snapshot
        server = http.post("/api/workers", json={"kind": "server", "host": LOOPBACK, "port": 0,
                                                 "reply": "none", "rcvbuf": 4 << 20}).json()
        flood(server["local"][1], BURST)
        deadline = time.monotonic() + 10
        while True:
            counters = http.get(f"/api/workers/{server['id']}").json()["counters"]
            if counters["received"] + counters["kernel_drops"] >= BURST:
                break
            assert time.monotonic() < deadline, f"the flood was not read: {counters}"
            time.sleep(0.05)
        assert counters["received"] == BURST - counters["kernel_drops"]
        assert http.delete(f"/api/workers/{server['id']}").status_code == 200

        events = http.get(f"/api/workers/{server['id']}/events").json()["events"]
        shown = [e for e in events if e["type"] == "received"]
        sampled = [e for e in events if e["type"] == "sampled"]
        assert 0 < len(shown) < 200, len(shown)
        assert sampled, [e["type"] for e in events]
        assert len(shown) + sum(e["unshown"] for e in sampled) == counters["received"]
        assert all(e["per_second"] == 50 for e in sampled)

        streamed: list[dict] = []
        deadline = time.monotonic() + 5
        while not any(e["type"] == "stopped" and e["worker"] == server["id"] for e in streamed):
            assert time.monotonic() < deadline, "the stream did not reach the stop"
            streamed += json.loads(stream.recv(timeout=5))["events"]
        ours = [e for e in streamed if e["worker"] == server["id"]]
        assert [e["seq"] for e in ours if e["type"] in ("received", "sampled")] == \
            [e["seq"] for e in events if e["type"] in ("received", "sampled")]


def test_the_page_lists_the_sampled_report(busy):
    with busy.client() as http, \
            connect(f"{busy.ws_base}/ws/page",
                    additional_headers={**busy.cookie, "Origin": busy.origin},
                    open_timeout=5) as page:
        page.recv(timeout=5)
        server = http.post("/api/workers", json={"kind": "server", "host": LOOPBACK, "port": 0,
                                                 "reply": "none"}).json()
        flood(server["local"][1], 500)
        html = ""
        deadline = time.monotonic() + 5
        while "were counted but not shown one by one" not in html:
            assert time.monotonic() < deadline, f"no sampled row on the page: {html[-800:]}"
            html += page.recv(timeout=5)
        assert "at most 50 a second are" in html and "hx-swap-oob" in html
        http.delete(f"/api/workers/{server['id']}")


@pytest.mark.parametrize("value", ["-3", "many"])
def test_a_bad_events_per_second_is_refused_before_starting(value):
    done = subprocess.run([sys.executable, "-m", "webapp", "--port", "0",
                           "--events-per-second", value], cwd=REPO, capture_output=True,
                          text=True, timeout=30)
    assert done.returncode == 2, done
    assert "--events-per-second" in done.stderr
    assert f"{value!r} is not a whole number of 0 or more" in done.stderr
    assert "Traceback" not in done.stderr
