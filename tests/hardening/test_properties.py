"""Property-based tests (hypothesis): whatever a script or a page sends (specs, option sets,
experiment bodies, WebSocket messages), the app never answers 5xx, every 4xx is JSON with
an "error" sentence, nothing is left running, and no traceback reaches the log.

The app under test lives in a network namespace of the test, with loopback and a veth whose
only neighbour is a made-up MAC: generated specs may name any host (random IPs, names, the
limited broadcast), and whatever the policy did, nothing could leave. The app allows no real
network, so the veth must count no datagram at the end: every non-loopback destination was
refused before any send.
"""

import asyncio
import itertools
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.asyncio.client import connect

KINDS = ["server", "client", "spoofer", "stream", "listener", "broadcast", "mtu-probe"]
FIELDS = ["kind", "name", "host", "port", "reply", "drop_rate", "seed", "delay", "duplicate",
          "rcvbuf", "mode", "message", "count", "interval", "timeout", "backoff",
          "give_up_after", "daemon", "jitter", "adaptive", "target", "forge", "size", "rate",
          "so_broadcast", "reuse_addr", "where"]
TRICKY = ["", " ", "0", "-1", "1e309", "nan", "inf", "65535", "65536", "on", "yes", "²", "٣",
          "127.0.0.1", "127.255.255.255", "::1", "0.0.0.0", "10.99.0.2",
          "255.255.255.255",  # refused by the app's policy (403) before anything is sent
          "10.99.0.255", "localhost", "h1", "server-1", "domain", "x" * 300, "a b",
          "\u0000", "🙂", "<script>", "../../etc", "promiscuous", "request-id", "echo"]

SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(),
    st.integers(min_value=2**63 - 2, max_value=2**80), st.integers(max_value=-(2**63)),
    st.floats(),  # nan and ±inf included: json.dumps writes NaN / Infinity
    st.text(max_size=30), st.sampled_from(TRICKY),
)
VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=4)
                      | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=8)
SPECS = st.builds(
    lambda kind, fields: fields if kind is None else {**fields, "kind": kind},
    st.one_of(st.sampled_from(KINDS), st.none(), SCALARS),
    st.dictionaries(st.one_of(st.sampled_from(FIELDS), st.text(max_size=12)), VALUES,
                    max_size=7),
)
# Raw bodies: bytes, and numbers with more digits than Python's int() parses by default.
HUGE_NUMBERS = st.builds(
    lambda kind, field, digits: (f'{{"kind": "{kind}", "{field}": ' + "9" * digits + "}").encode(),
    st.sampled_from(KINDS), st.sampled_from(FIELDS), st.integers(4000, 6000))
BODIES = st.one_of(VALUES, st.binary(max_size=200), HUGE_NUMBERS)

SETTINGS = settings(deadline=None, database=None, print_blob=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.filter_too_much])


def encode(body) -> bytes:
    return body if isinstance(body, bytes) else json.dumps(body).encode()


def check(response, what) -> dict | None:
    """No 5xx; a 4xx is JSON with an error sentence. The JSON body, or None for others."""
    assert response.status_code < 500, (what, response.status_code, response.text[:500])
    if 400 <= response.status_code < 500:
        assert response.headers["content-type"].startswith("application/json"), \
            (what, response.status_code, response.text[:300])
        body = response.json()
        assert isinstance(body.get("error"), str) and body["error"], (what, body)
        return body
    return response.json() if response.status_code in (200, 201) else None


@pytest.fixture
def app_in_ns(make_net, apps):
    net = make_net()
    server, http = apps.start_in(net.a)
    before = net.tx()
    yield net, server, http
    assert net.tx() == before, "a datagram left by the veth: a non-loopback destination " \
        "was sent to although the app allows no real network"
    log = server.log()
    assert "Traceback" not in log and "internal error" not in log, log[-3000:]


def test_any_spec_is_a_clean_answer(app_in_ns):
    net, server, http = app_in_ns
    started = []

    @settings(SETTINGS, max_examples=70)
    @given(spec=st.one_of(SPECS, SPECS, BODIES))
    def post_spec(spec):
        response = http.post("/api/workers", content=encode(spec),
                             headers={"content-type": "application/json"})
        body = check(response, spec)
        if response.status_code == 201:
            started.append(body["id"])
            stopped = http.delete(f"/api/workers/{body['id']}")
            assert stopped.status_code == 200, stopped.text
            assert stopped.json()["state"] in ("stopped", "finished", "failed")
        else:
            assert response.status_code in (403, 404, 409, 422, 429), response.text

    post_spec()
    workers = http.get("/api/workers").json()["workers"]
    assert not [w for w in workers if w["state"] in ("running", "paused")], workers
    assert http.get("/api/health").json() == {"status": "ok"}


def test_any_option_body_is_a_clean_answer(app_in_ns):
    net, server, http = app_in_ns
    worker = http.post("/api/workers", json={"kind": "server", "host": "127.0.0.1",
                                              "port": 0}).json()
    option_bodies = st.one_of(
        st.fixed_dictionaries({"name": st.one_of(st.sampled_from(
            ["SO_BROADCAST", "SO_DONTROUTE", "SO_TYPE", "SO_RCVBUF", "SO_SNDBUF",
             "SO_REUSEADDR", "IP_TTL", "IP_MTU_DISCOVER", "IP_MTU", "so_rcvbuf", ""]),
            st.text(max_size=20)), "value": VALUES}),
        BODIES)

    @settings(SETTINGS, max_examples=25)
    @given(body=option_bodies)
    def set_option(body):
        response = http.post(f"/api/workers/{worker['id']}/options", content=encode(body),
                             headers={"content-type": "application/json"})
        check(response, body)
        assert response.status_code in (200, 404, 409, 422), response.text

    set_option()
    options = http.get(f"/api/workers/{worker['id']}/options")
    assert options.status_code == 200 and options.json()["options"]
    assert http.get(f"/api/workers/{worker['id']}").json()["state"] == "running"
    http.delete(f"/api/workers/{worker['id']}")


def test_any_experiment_body_is_a_clean_answer(app_in_ns):
    net, server, http = app_in_ns
    impostor_bodies = st.one_of(
        st.dictionaries(st.sampled_from(["forge", "message"]), VALUES, max_size=2),
        st.fixed_dictionaries({}, optional={"forge": st.booleans(),
                                            "message": st.text(min_size=1, max_size=20)}),
        BODIES)
    binding_bodies = st.one_of(
        st.fixed_dictionaries({}, optional={"interface": st.one_of(
            st.sampled_from(["127.0.0.1", "10.99.0.1", "::1", "0.0.0.0", "10.99.0.2",
                             "not an address", ""]), VALUES)}),
        BODIES)

    @settings(SETTINGS, max_examples=12)
    @given(body=impostor_bodies)
    def impostor(body):
        response = http.post("/api/experiments/impostor", content=encode(body),
                             headers={"content-type": "application/json"})
        check(response, body)
        assert response.status_code in (201, 403, 409, 422, 429), response.text

    @settings(SETTINGS, max_examples=15)
    @given(body=binding_bodies)
    def binding(body):
        response = http.post("/api/experiments/binding", content=encode(body),
                             headers={"content-type": "application/json"})
        check(response, body)
        assert response.status_code in (201, 409, 422), response.text

    impostor()
    binding()
    # Experiments clean up after themselves: once they end, nothing they started runs.
    workers = http.get("/api/workers").json()["workers"]
    for w in workers:
        if w["state"] in ("running", "paused"):
            http.delete(f"/api/workers/{w['id']}")
    assert http.get("/api/health").json() == {"status": "ok"}


MESSAGES = st.one_of(st.text(max_size=2000), st.binary(max_size=2000),
                     VALUES.map(json.dumps), st.just("x" * 60_000))


def test_any_websocket_messages_do_no_harm(app_in_ns):
    net, server, http = app_in_ns
    numbers = itertools.count(1)

    async def session(messages: list) -> None:
        page_headers = {**server.cookie, "Origin": server.origin}
        async with connect(f"{server.ws_base}/api/events", additional_headers=server.bearer,
                           open_timeout=5) as events, \
                connect(f"{server.ws_base}/ws/page", additional_headers=page_headers,
                        open_timeout=5) as page:
            async with asyncio.timeout(10):
                await events.recv()
                await page.recv()
                for message in messages:
                    await events.send(message)
                    await page.send(message)
                # Both streams still deliver: a named worker's events arrive on each.
                name = f"probe-{next(numbers)}"
                worker = await asyncio.to_thread(
                    http.http.post, "/api/workers",
                    json={"kind": "server", "host": "127.0.0.1", "port": 0, "name": name})
                assert worker.status_code == 201, worker.text
                while not any(e["worker"] == name for e in json.loads(await events.recv())
                              ["events"]):
                    pass
                while name not in await page.recv():
                    pass
                await asyncio.to_thread(http.http.delete, f"/api/workers/{name}")

    @settings(SETTINGS, max_examples=15)
    @given(messages=st.lists(MESSAGES, max_size=6))
    def send(messages):
        net.a.call(asyncio.run, session(messages))
        assert http.get("/api/health").status_code == 200

    send()
    stats = http.get("/api/stats").json()
    assert stats["watchers"] == 0, stats
