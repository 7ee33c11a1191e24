"""Send caps towards real networks: 1000 datagrams/s and 1 MB/s per sending worker, 10× that
for the whole app, none towards loopback. A worker that asks for more is started, throttled,
and says so (a `throttled` event; `throttled: true` on GET).

Rates are read from the kernel's counters of the veth in a namespace of the test: that is
what really left, whatever the app believes it sent. The veth's MTU is 65535 so that one
datagram is one packet even at 10000 bytes.
"""

import time

WARM_UP = 1.0  # seconds: let the per-worker and app-wide bursts drain first
WINDOW = 2.0  # seconds of measurement
FAR = "10.99.0.2"


def rate_on(net, seconds: float = WINDOW) -> tuple[float, float]:
    """Packets/s and bytes/s that left by the veth over `seconds`."""
    before, started = net.tx(), time.monotonic()
    time.sleep(seconds)
    after, took = net.tx(), time.monotonic() - started
    return ((after["packets"] - before["packets"]) / took,
            (after["bytes"] - before["bytes"]) / took)


def start_streams(http, count: int, **spec) -> list[dict]:
    workers = []
    for _ in range(count):
        response = http.post("/api/workers", json={"kind": "stream", "host": FAR, "port": 9,
                                                    "count": 10_000_000, **spec})
        assert response.status_code == 201, response.text
        workers.append(response.json())
    return workers


def test_stream_to_a_real_network_is_throttled_to_1000_per_second(make_net, apps):
    net = make_net(mtu=65535)
    _, http = apps.start_in(net.a, "--allow-net", "10.99.0.0/24")
    [worker] = start_streams(http, 1, rate=20_000, size=100)
    time.sleep(WARM_UP)
    packets, _ = rate_on(net)
    got = http.get(f"/api/workers/{worker['id']}").json()
    events = http.get(f"/api/workers/{worker['id']}/events").json()["events"]
    http.delete(f"/api/workers/{worker['id']}")
    assert 700 <= packets <= 1300, f"{packets:.0f} datagrams/s left for a 20000/s stream"
    assert got["state"] == "running" and got["throttled"] is True, got
    throttled = [e for e in events if e["type"] == "throttled"]
    assert len(throttled) == 1, [e["type"] for e in events]  # said once, not per datagram
    assert "1000 datagrams/s" in throttled[0]["message"], throttled[0]


def test_byte_cap_holds_big_datagrams_to_1_MB_per_second(make_net, apps):
    net = make_net(mtu=65535)
    _, http = apps.start_in(net.a, "--allow-net", "10.99.0.0/24")
    [worker] = start_streams(http, 1, rate=1000, size=10_000)
    time.sleep(WARM_UP)
    packets, octets = rate_on(net)
    got = http.get(f"/api/workers/{worker['id']}").json()
    http.delete(f"/api/workers/{worker['id']}")
    assert 70 <= packets <= 130, f"{packets:.0f} datagrams/s of 10000 bytes (cap 1 MB/s)"
    assert 0.7e6 <= octets <= 1.35e6, f"{octets:.0f} bytes/s on the wire (cap 1 MB/s)"
    assert got["throttled"] is True


def test_app_wide_cap_holds_many_streams_together(make_net, apps):
    """--worker-rate 100 --app-factor 5: 12 streams could send 1200/s on their own caps; the
    app as a whole may send 500/s."""
    net = make_net(mtu=65535)
    _, http = apps.start_in(net.a, "--allow-net", "10.99.0.0/24", "--worker-rate", "100",
                            "--app-factor", "5")
    workers = start_streams(http, 12, rate=20_000, size=100)
    time.sleep(WARM_UP + 0.5)
    packets, _ = rate_on(net)
    states = [http.get(f"/api/workers/{w['id']}").json() for w in workers]
    for w in workers:
        http.delete(f"/api/workers/{w['id']}")
    assert 350 <= packets <= 650, f"{packets:.0f} datagrams/s from 12 streams (app cap 500/s)"
    assert all(s["throttled"] and s["state"] == "running" for s in states), states
    sent = sorted(s["counters"]["sent"] for s in states)
    assert sent[0] > 0, f"a stream was starved entirely: {sent}"


def test_per_worker_cap_flag_is_honoured(make_net, apps):
    net = make_net(mtu=65535)
    _, http = apps.start_in(net.a, "--allow-net", "10.99.0.0/24", "--worker-rate", "200")
    [worker] = start_streams(http, 1, rate=20_000, size=100)
    time.sleep(WARM_UP)
    packets, _ = rate_on(net)
    http.delete(f"/api/workers/{worker['id']}")
    assert 140 <= packets <= 260, f"{packets:.0f} datagrams/s with --worker-rate 200"


def test_loopback_is_not_capped(live, until):
    with live.client() as http:
        server = http.start(kind="server", host="127.0.0.1", port=0, reply="none")
        port = server["local"][1]
        stream = http.start(kind="stream", host="127.0.0.1", port=port, count=20_000,
                            rate=20_000, size=100)
        started = time.monotonic()
        done = until(lambda: (w := http.get(f"/api/workers/{stream['id']}").json())["state"]
                     != "running" and w, "the loopback stream to end", timeout=15)
        took = time.monotonic() - started
        received = http.get(f"/api/workers/{server['id']}").json()["counters"]["received"]
        http.stop_started()
    assert done["state"] == "finished" and done["counters"]["sent"] == 20_000, done
    assert done["throttled"] is False
    assert took < 5.0, f"20000 datagrams took {took:.1f} s on loopback (the cap is 1000/s)"
    assert 20_000 / took > 3000
    assert received > 3000, f"the loopback server got only {received} datagrams"
