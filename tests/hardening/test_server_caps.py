"""Servers towards real networks: no reply bigger than the request (no amplification) unless
the operator allows it, and at most --replies-per-source replies a second to one source; on
loopback every reply at full speed.

The "real network" is a veth between two namespaces of the test: the app (and its server)
in one, a plain-socket client in the other.
"""

import socket
import time

import pytest

SUBNET = "10.99.1.0/24"


def exchange(server: tuple[str, int], requests: list[bytes], wait: float = 0.5,
             expect: int | None = None) -> list[bytes]:
    """Send every request at once from one socket, then collect replies for `wait` seconds
    (or until `expect` replies came)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        for data in requests:
            sock.sendto(data, server)
        replies = []
        deadline = time.monotonic() + wait
        while (left := deadline - time.monotonic()) > 0 and len(replies) < (expect or 10_000):
            sock.settimeout(left)
            try:
                replies.append(sock.recv(65535))
            except TimeoutError:
                break
        return replies


@pytest.fixture
def far_server(make_net, apps):
    """`far_server(*flags, reply=...)`: an app in namespace a with a server on 0.0.0.0; the
    client side is namespace b (`net.b.call`). Returns (net, http, server worker)."""
    def make(*flags: str, reply: str = "length"):
        net = make_net(SUBNET, peer_address=True)
        _, http = apps.start_in(net.a, "--allow-net", SUBNET, *flags)
        response = http.post("/api/workers", json={"kind": "server", "host": "0.0.0.0",
                                                    "port": 0, "reply": reply})
        assert response.status_code == 201, response.text
        return net, http, response.json()
    return make


def test_no_amplification_towards_a_real_network(far_server):
    net, http, server = far_server()
    replies = net.b.call(exchange, (net.here, server["local"][1]), [b"abcd"])
    assert replies == [], f"a 4-byte request got {replies!r} (bigger than the request)"
    got = http.get(f"/api/workers/{server['id']}").json()
    assert got["counters"]["received"] == 1 and got["counters"]["held_back"] == 1, got
    assert got["counters"]["replied"] == 0
    errors = [e for e in http.get(f"/api/workers/{server['id']}/events").json()["events"]
              if e["type"] == "error"]
    assert errors and "amplif" in errors[0]["message"], errors
    # A request at least as big as the reply is answered: the rule is about size only.
    big = b"x" * 64
    replies = net.b.call(exchange, (net.here, server["local"][1]), [big])
    assert replies == [b"Your data was 64 bytes long"], replies


def test_amplification_when_the_operator_allows_it(far_server):
    net, http, server = far_server("--allow-amplification")
    replies = net.b.call(exchange, (net.here, server["local"][1]), [b"abcd"])
    assert replies == [b"Your data was 4 bytes long"], replies
    got = http.get(f"/api/workers/{server['id']}").json()
    assert got["counters"]["held_back"] == 0 and got["counters"]["replied"] == 1, got


def test_replies_per_source_are_capped(far_server):
    net, http, server = far_server("--replies-per-source", "5", reply="echo")
    requests = [f"echo {i:03}".encode() for i in range(50)]
    replies = net.b.call(exchange, (net.here, server["local"][1]), requests)
    got = http.get(f"/api/workers/{server['id']}").json()["counters"]
    assert got["received"] == 50, got
    assert 5 <= len(replies) <= 8, f"{len(replies)} replies to a 50-request burst (cap 5/s)"
    assert set(replies) <= set(requests)
    assert got["held_back"] == 50 - len(replies) and got["replied"] == len(replies), got
    # The cap is a rate, not a ban: a second later the source is answered again.
    time.sleep(1.1)
    replies = net.b.call(exchange, (net.here, server["local"][1]), [b"later!"])
    assert replies == [b"later!"]


def test_loopback_gets_every_reply_at_full_speed(apps):
    server_app = apps.start("--replies-per-source", "5")
    with server_app.client() as http:
        server = http.start(kind="server", host="127.0.0.1", port=0, reply="length")
        requests = [b"a"] * 200  # 1-byte requests: every reply is bigger, and > 5/s
        started = time.monotonic()
        replies = exchange(("127.0.0.1", server["local"][1]), requests, wait=3.0, expect=200)
        took = time.monotonic() - started
        got = http.get(f"/api/workers/{server['id']}").json()["counters"]
        http.stop_started()
    assert len(replies) == 200 and set(replies) == {b"Your data was 1 bytes long"}, \
        f"{len(replies)} of 200 replies on loopback"
    assert got["held_back"] == 0, got
    assert took < 2.0
