"""No leaks: hundreds of start/stop cycles of every worker kind that runs on loopback, and the
app's open file descriptors and asyncio tasks are back where they started."""

import socket
import time

import pytest

LOOPBACK = "127.0.0.1"
CYCLES = 200


def specs(port: int, long: bool) -> list[dict]:
    """One worker of every kind; `long` ones are still running when stopped, the others have
    usually finished by then (both ways of ending must free everything)."""
    many = {"count": 10_000, "interval": 0.01} if long else {"count": 1, "interval": 0}
    return [
        {"kind": "server", "host": LOOPBACK, "port": 0},
        {"kind": "listener", "host": LOOPBACK, "port": 0},
        {"kind": "client", "host": LOOPBACK, "port": port, "timeout": 0.01,
         "give_up_after": 0.02, **many},
        {"kind": "broadcast", "host": "127.255.255.255", "port": port, **many},
        {"kind": "stream", "host": LOOPBACK, "port": port,
         "count": 10_000_000 if long else 10, "rate": 1000},
        {"kind": "spoofer", "host": LOOPBACK, "port": port, **many},
        {"kind": "mtu-probe", "host": LOOPBACK, "port": port, "size": 2000},
    ]


def cycle(http, port: int, long: bool) -> None:
    ids = []
    for spec in specs(port, long):
        response = http.post("/api/workers", json=spec)
        assert response.status_code == 201, (spec, response.text)
        ids.append(response.json()["id"])
    for worker_id in ids:
        stopped = http.delete(f"/api/workers/{worker_id}")
        assert stopped.status_code == 200 and stopped.json()["state"] in (
            "stopped", "finished"), stopped.text
    cleared = http.post("/workers/clear")  # the page's "Clear ended": forgets them
    assert cleared.status_code == 303, cleared.text


def stats(http) -> dict:
    return http.get("/api/stats").json()


@pytest.mark.timeout(240)
def test_start_stop_cycles_of_every_kind_leak_nothing(apps):
    app = apps.start()
    with app.client() as http:
        target = http.start(kind="server", host=LOOPBACK, port=0, reply="none")
        port = target["local"][1]
        # One datagram for the target first: a server's C receive loop (its thread and one
        # eventfd) starts with its first datagram and stays while the server runs. Nothing
        # else is made lazily to stay (fds and tasks come back to these exact numbers after
        # one worker, or two hundred cycles of seven).
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.sendto(b"first", (LOOPBACK, port))
        deadline = time.monotonic() + 5
        while http.get(f"/api/workers/{target['id']}").json()["counters"]["received"] < 1:
            assert time.monotonic() < deadline, "the target server never got its datagram"
            time.sleep(0.01)
        before = stats(http)
        assert before["open_files"] and before["tasks"], before
        started = time.monotonic()
        for n in range(CYCLES):
            cycle(http, port, long=bool(n % 2))
        took = time.monotonic() - started
        # Let the last stops settle (history writes, tasks finishing), bounded in time.
        deadline = time.monotonic() + 5
        while True:
            after = stats(http)
            if (after["open_files"], after["tasks"]) == (before["open_files"],
                                                         before["tasks"]):
                break
            if time.monotonic() > deadline:
                break
            time.sleep(0.1)
        http.stop_started()
    assert after["workers"] == 1 and after["alive"] == 1, after  # only the target server
    assert after["open_files"] == before["open_files"], \
        f"open files {before['open_files']} -> {after['open_files']} after {CYCLES} cycles"
    assert after["tasks"] == before["tasks"], \
        f"asyncio tasks {before['tasks']} -> {after['tasks']} after {CYCLES} cycles"
    assert after["subscribers"] == before["subscribers"], (before, after)
    print(f"{CYCLES} cycles × 7 kinds in {took:.1f} s; fds {after['open_files']}, "
          f"tasks {after['tasks']}, rss {before['rss_bytes']} -> {after['rss_bytes']}")
