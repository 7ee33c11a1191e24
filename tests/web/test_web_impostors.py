"""Issue 3 through the JSON API of a live udplab: pause and resume, the impostor (spoofer),
the four-client impostor experiment, forging with and without CAP_NET_RAW, the server's
duplicate-reply options, the stream worker, and the page WebSocket's experiments table.

Real uvicorn processes, real httpx and websockets clients, real datagrams on loopback only.
"""

import asyncio
import json
import re
import shutil
import socket
import subprocess
import sys
import time
import uuid

import pytest
from websockets.asyncio.client import connect

from live import LiveServer, start_server, stop_and_check, wait_state

MODES = ("promiscuous", "check-address", "connected", "request-id")
POLL = 0.02  # seconds between polls
EXPERIMENT_TIMEOUT = 3.0  # seconds for an impostor experiment to reach its verdicts


def unique(prefix: str) -> str:
    """A worker name no other test (or earlier run on the session server) uses."""
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def post_worker(api, **spec) -> dict:
    """POST /api/workers expecting 201; remembers the worker so the `api` fixture stops it.

    Unlike ApiClient.start it accepts a worker that already finished (a spoofer sends one
    datagram and may be done by the time the answer is built)."""
    response = api.post("/api/workers", json=spec)
    assert response.status_code == 201, response.text
    worker = response.json()
    api.started.append(worker["id"])
    assert worker["state"] in ("running", "finished"), worker
    return worker


def poll(fetch, done, *, timeout: float = 3.0, what: str = "condition"):
    """Call `fetch()` until `done(value)` holds; bounded in time (and so in count)."""
    deadline = time.monotonic() + timeout
    while True:
        value = fetch()
        if done(value):
            return value
        assert time.monotonic() < deadline, f"{what} not reached within {timeout} s: {value}"
        time.sleep(POLL)


def worker(api, worker_id: str) -> dict:
    response = api.get(f"/api/workers/{worker_id}")
    assert response.status_code == 200, response.text
    return response.json()


def events(api, worker_id: str) -> list[dict]:
    response = api.get(f"/api/workers/{worker_id}/events")
    assert response.status_code == 200, response.text
    return response.json()["events"]


def assert_error(response, status: int, field: str | None = None, *words: str) -> dict:
    """A JSON error body `{"error": "<plain words>", ...}` with this status (and field)."""
    assert response.status_code == status, (response.status_code, response.text)
    assert response.headers["content-type"].startswith("application/json"), response.headers
    body = response.json()
    assert isinstance(body.get("error"), str) and len(body["error"]) > 10, body
    assert "Traceback" not in body["error"]
    if field is not None:
        assert body.get("field") == field, body
    for word in words:
        assert word in body["error"], (word, body)
    return body


def waiting_client(api, port: int, name: str) -> dict:
    """A promiscuous client that waits up to 2 s for one reply, once it has sent (bound)."""
    client = api.start(kind="client", name=name, host="127.0.0.1", port=port,
                       mode="promiscuous", message="hello", timeout=2, give_up_after=2)
    return poll(lambda: worker(api, client["id"]),
                lambda w: w["local"] is not None and w["counters"]["sent"] == 1,
                what=f"{name} sent its request")


def paused_server(api, name: str) -> dict:
    server = api.start(kind="server", name=name, host="127.0.0.1", port=0)
    response = api.post(f"/api/workers/{server['id']}/pause")
    assert response.status_code == 200, response.text
    assert response.json()["state"] == "paused"
    return server


# --- 1. pause and resume -------------------------------------------------------------------

def test_pause_queues_requests_and_resume_answers_them(api):
    server = api.start(kind="server", name=unique("pause-srv"), host="127.0.0.1", port=0)
    sid, port = server["id"], server["local"][1]

    response = api.post(f"/api/workers/{sid}/pause")
    assert response.status_code == 200, response.text
    assert response.json()["state"] == "paused"
    assert response.json()["id"] == sid
    assert worker(api, sid)["state"] == "paused"

    client = waiting_client(api, port, unique("pause-cli"))
    # The paused server does not read: the request waits in the kernel, and the card
    # (here the API) counts it.
    paused = poll(lambda: worker(api, sid), lambda w: w["counters"]["waiting"] >= 1,
                  what="the server's waiting counter")
    assert paused["counters"]["received"] == 0, paused
    assert paused["counters"]["replied"] == 0, paused
    now = worker(api, client["id"])
    assert now["state"] == "running" and now["counters"]["replies"] == 0, now

    response = api.post(f"/api/workers/{sid}/resume")
    assert response.status_code == 200, response.text
    assert response.json()["state"] == "running"

    done = wait_state(api, client["id"], {"finished", "failed"})
    assert done["state"] == "finished", done
    assert done["counters"]["replies"] == 1, done
    assert done["counters"]["gave_up"] == 0, done
    replies = [e for e in events(api, client["id"]) if e["type"] == "reply"]
    assert [e["text"] for e in replies] == ["Your data was 5 bytes long"], replies
    assert replies[0]["expected"] is True
    after = worker(api, sid)["counters"]
    assert after["received"] == 1 and after["replied"] == 1, after
    assert after["waiting"] == 0, after
    types = [e["type"] for e in events(api, sid)]
    assert "paused" in types and "resumed" in types, types
    assert types.index("paused") < types.index("resumed")


def test_pause_and_resume_errors(api):
    server = api.start(kind="server", name=unique("perr-srv"), host="127.0.0.1", port=0)
    sid = server["id"]
    client = api.start(kind="client", name=unique("perr-cli"), host="127.0.0.1",
                       port=server["local"][1], message="x")

    # only servers pause
    assert_error(api.post(f"/api/workers/{client['id']}/pause"), 409, None, client["id"])
    assert_error(api.post(f"/api/workers/{client['id']}/resume"), 409, None, client["id"])
    # a running server cannot resume
    assert_error(api.post(f"/api/workers/{sid}/resume"), 409, None, sid)
    assert worker(api, sid)["state"] == "running"
    # pausing twice
    assert api.post(f"/api/workers/{sid}/pause").status_code == 200
    assert_error(api.post(f"/api/workers/{sid}/pause"), 409, None, sid)
    assert worker(api, sid)["state"] == "paused"
    assert api.post(f"/api/workers/{sid}/resume").status_code == 200
    # unknown worker
    missing = unique("no-such-worker")
    assert_error(api.post(f"/api/workers/{missing}/pause"), 404, None, missing)
    assert_error(api.post(f"/api/workers/{missing}/resume"), 404, None, missing)


# --- 2. the spoofer -----------------------------------------------------------------------

def test_spoofer_fools_a_promiscuous_client(api):
    server = paused_server(api, unique("spoof-srv"))
    client = waiting_client(api, server["local"][1], unique("spoof-cli"))

    spoofer = post_worker(api, kind="spoofer", name=unique("spoof"), target=client["id"])
    assert spoofer["kind"] == "spoofer"
    assert spoofer["spec"]["message"] == "FAKE"
    assert spoofer["spec"]["target"] == client["id"]

    done = wait_state(api, client["id"], {"finished", "failed"})
    assert done["state"] == "finished", done
    assert done["counters"]["replies"] == 1, done
    assert done["counters"]["unexpected"] == 1, done
    replies = [e for e in events(api, client["id"]) if e["type"] == "reply"]
    assert len(replies) == 1, replies
    fake = replies[0]
    assert fake["text"] == "FAKE"
    assert fake["expected"] is False
    # the book's words: The server ('127.0.0.1', <spoofer's port>) replied 'FAKE'
    assert re.search(r"The server \('127\.0\.0\.1', \d+\) replied 'FAKE'", fake["message"]), fake
    assert fake["peer"] != server["local"], fake
    # the spoofer sent from a socket of its own
    sent = poll(lambda: events(api, spoofer["id"]),
                lambda evs: any(e["type"] == "sent" for e in evs), what="spoofer's sent event")
    sent = [e for e in sent if e["type"] == "sent"][0]
    assert sent["text"] == "FAKE"
    assert sent["peer"] == [client["local"][0].replace("0.0.0.0", "127.0.0.1"),
                            client["local"][1]], (sent, client)
    # (bound implicitly to the wildcard address, like any unconnected client)
    assert sent["local"][1] == fake["peer"][1], (sent, fake)


def test_spoofer_spec_errors(api):
    missing = unique("no-such-client")
    assert_error(api.post("/api/workers", json={"kind": "spoofer", "target": missing}),
                 422, "target", missing)
    assert_error(api.post("/api/workers", json={"kind": "spoofer", "forge": True,
                                                 "host": "127.0.0.1", "port": 9}),
                 422, "target")
    # a server is not a client to aim at
    server = api.start(kind="server", name=unique("notcli"), host="127.0.0.1", port=0)
    assert_error(api.post("/api/workers", json={"kind": "spoofer", "target": server["id"]}),
                 422, "target")


# --- 3. the impostor experiment -----------------------------------------------------------

def run_experiment(api, body) -> dict:
    """POST /api/experiments/impostor, poll until no verdict waits; the final run."""
    if body is None:
        response = api.post("/api/experiments/impostor", content=b"")
    else:
        response = api.post("/api/experiments/impostor", json=body)
    assert response.status_code == 201, response.text
    run = response.json()
    try:
        assert run["id"]
        assert run["server"]
        assert set(run["clients"]) == set(MODES), run
        assert run["forge"] is bool(body and body.get("forge"))
        assert run["message"] == "FAKE"

        def settled(r):
            return len(r["verdicts"]) == 4 and all(v["verdict"] != "waiting"
                                                   for v in r["verdicts"])

        final = poll(lambda: api.get(f"/api/experiments/{run['id']}").json(), settled,
                     timeout=EXPERIMENT_TIMEOUT, what=f"verdicts of {run['id']}")
        assert final["id"] == run["id"]
        return final
    finally:
        # stop what the experiment started (the server would run for ever); the spoofers
        # are known once it has played, so ask again
        now = api.get(f"/api/experiments/{run['id']}").json()
        api.started.extend([now["server"], *now["clients"].values(), *now["spoofers"]])


def verdicts(run) -> dict[str, str]:
    by_mode = {v["mode"]: v["verdict"] for v in run["verdicts"]}
    for v in run["verdicts"]:
        assert v["client"] == run["clients"][v["mode"]], v
        assert isinstance(v["why"], str) and v["why"], v
    return by_mode


def test_impostor_experiment_without_forging(api):
    run = run_experiment(api, None)
    assert verdicts(run) == {"promiscuous": "fooled", "check-address": "refused",
                             "connected": "unseen", "request-id": "refused"}, run
    assert run["forge"] is False
    why = {v["mode"]: v["why"] for v in run["verdicts"]}
    assert "FAKE" in why["promiscuous"]
    assert "not from the server" in why["check-address"], why
    assert "kernel" in why["connected"], why
    # the promiscuous client really took FAKE, from an unexpected address
    replies = [e for e in events(api, run["clients"]["promiscuous"]) if e["type"] == "reply"]
    assert replies and replies[0]["text"] == "FAKE" and replies[0]["expected"] is False
    rejected = [e for e in events(api, run["clients"]["check-address"])
                if e["type"] == "rejected"]
    assert rejected and rejected[0]["text"] == "FAKE", rejected
    assert len(run["spoofers"]) == 4, run

    listed = api.get("/api/experiments")
    assert listed.status_code == 200
    assert run["id"] in [r["id"] for r in listed.json()["experiments"]]


def test_impostor_experiment_with_forging(api):
    run = run_experiment(api, {"forge": True})
    assert run["forge"] is True
    assert verdicts(run) == {"promiscuous": "fooled", "check-address": "fooled",
                             "connected": "fooled", "request-id": "refused"}, run
    # the forged datagram carried the server's own address
    server = worker(api, run["server"])
    for mode in ("check-address", "connected"):
        replies = [e for e in events(api, run["clients"][mode]) if e["type"] == "reply"]
        assert replies and replies[0]["text"] == "FAKE", (mode, replies)
        assert replies[0]["peer"] == server["local"], (mode, replies, server)
        assert replies[0]["expected"] is True, (mode, replies)
    listed = [r["id"] for r in api.get("/api/experiments").json()["experiments"]]
    assert run["id"] in listed


@pytest.mark.parametrize("body, field", [
    ({"forge": "yes"}, "forge"),
    ({"bogus": 1}, None),
    ({"message": ""}, "message"),
    ([1, 2], None),
    ("forge", None),
    (None, None),  # JSON null: not an object either
])
def test_impostor_experiment_bad_bodies(api, body, field):
    before = len(api.get("/api/experiments").json()["experiments"])
    # json.dumps ourselves: httpx's json=None would send no body at all
    assert_error(api.post("/api/experiments/impostor", content=json.dumps(body).encode(),
                          headers={"Content-Type": "application/json"}), 422, field)
    assert len(api.get("/api/experiments").json()["experiments"]) == before


def test_impostor_experiment_body_that_is_not_json(api):
    assert_error(api.post("/api/experiments/impostor", content=b"{forge",
                          headers={"Content-Type": "application/json"}), 422)


def test_unknown_experiment_is_404(api):
    missing = unique("impostor-none")
    assert_error(api.get(f"/api/experiments/{missing}"), 404, None, missing)


# --- 4. forging without CAP_NET_RAW -------------------------------------------------------

RAW_PROBE = (
    "import socket\n"
    "try:\n"
    "    socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW).close()\n"
    "except PermissionError:\n"
    "    print('denied')\n"
    "else:\n"
    "    print('allowed')\n"
)

DROPPERS = (
    # util-linux: drop net_raw from the inheritable, ambient and bounding sets. As root the
    # exec'd program's permitted/effective sets are limited by the bounding set, so it loses it.
    ["setpriv", "--inh-caps=-net_raw", "--ambient-caps=-net_raw", "--bounding-set=-net_raw"],
    # libcap2-bin: the same through the bounding set; capsh runs a shell command line, so
    # let the shell exec the argv that follows
    ["capsh", "--drop=cap_net_raw", "--", "-c", 'exec "$0" "$@"'],
)


def probe_raw(prefix: list[str]) -> str:
    """'denied' or 'allowed': can a program run under `prefix` open a raw socket?"""
    done = subprocess.run([*prefix, sys.executable, "-c", RAW_PROBE], capture_output=True,
                          text=True, timeout=10)
    return done.stdout.strip() or f"rc={done.returncode}: {done.stderr.strip()}"


def capability_dropper() -> list[str]:
    """A command prefix that runs a program without CAP_NET_RAW (checked, not assumed)."""
    if probe_raw([]) == "denied":
        return []  # this process has no CAP_NET_RAW to begin with
    tried = {}
    for prefix in DROPPERS:
        if shutil.which(prefix[0]) is None:
            continue
        tried[prefix[0]] = probe_raw(prefix)
        if tried[prefix[0]] == "denied":
            return prefix
    pytest.fail(f"cannot start a process without CAP_NET_RAW (tried {tried}); install "
                "util-linux's setpriv")


@pytest.fixture
def unprivileged(tmp_path) -> LiveServer:
    """A udplab process of this test's own, started without CAP_NET_RAW."""
    server = start_server(tmp_path / "udplab-noraw", wrapper=tuple(capability_dropper()))
    try:
        with open(f"/proc/{server.proc.pid}/status") as f:  # the dropper exec'd python
            status = f.read()
        eff = int(re.search(r"CapEff:\s*([0-9a-f]+)", status).group(1), 16)
        assert not eff & (1 << 13), f"the server still has CAP_NET_RAW: {eff:x}"
        yield server
    finally:
        if server.proc.poll() is None:
            stop_and_check(server)
        else:
            server.terminate()


def test_forging_without_cap_net_raw_says_what_it_needs(unprivileged):
    with unprivileged.client() as api:
        try:
            body = assert_error(api.post("/api/experiments/impostor", json={"forge": True}),
                                403, "forge", "CAP_NET_RAW")
            assert "root" in body["error"] or "setcap" in body["error"], body
            assert api.get("/api/experiments").json()["experiments"] == []

            server = paused_server(api, unique("noraw-srv"))
            client = waiting_client(api, server["local"][1], unique("noraw-cli"))
            assert_error(api.post("/api/workers", json={
                "kind": "spoofer", "target": client["id"], "forge": True}),
                403, "forge", "CAP_NET_RAW")

            # the unforged impostor still works, as in the book (no privilege needed)
            post_worker(api, kind="spoofer", name=unique("noraw-spoof"),
                        target=client["id"])
            done = wait_state(api, client["id"], {"finished", "failed"})
            assert done["counters"]["unexpected"] == 1, done

            run = run_experiment(api, {})
            assert verdicts(run)["promiscuous"] == "fooled", run
            assert verdicts(run)["connected"] == "unseen", run

            # the page says so next to the forge checkboxes
            page = api.get("/", headers={"Accept": "text/html"})
            assert page.status_code == 200, page.text
            assert "needs CAP_NET_RAW" in page.text
        finally:
            api.stop_started()


# --- 5. server options: delay, duplicate, rcvbuf ------------------------------------------

def test_duplicate_and_late_replies(api):
    server = api.start(kind="server", name=unique("dup-srv"), host="127.0.0.1", port=0,
                       delay=0.2, duplicate=True)
    assert server["spec"]["delay"] == 0.2 and server["spec"]["duplicate"] is True
    client = api.start(kind="client", name=unique("dup-cli"), host="127.0.0.1",
                       port=server["local"][1], message="twice", timeout=2,
                       give_up_after=2)
    done = wait_state(api, client["id"], {"finished", "failed"})
    assert done["state"] == "finished" and done["counters"]["replies"] == 1, done
    counters = poll(lambda: worker(api, server["id"])["counters"],
                    lambda c: c["replied"] >= 2, what="the second copy")
    time.sleep(0.3)  # a third copy would have come by now
    counters = worker(api, server["id"])["counters"]
    assert counters["received"] == 1, counters
    assert counters["replied"] == 2 * counters["received"], counters
    client_events = events(api, client["id"])
    sent = [e for e in client_events if e["type"] == "sent"][0]
    reply = [e for e in client_events if e["type"] == "reply"][0]
    assert reply["time"] - sent["time"] >= 0.18, (sent, reply)  # answered late
    late = [e for e in events(api, server["id"]) if e["type"] == "sent"]
    assert len(late) == 2 and all("late" in e["message"] for e in late), late


def test_duplicate_without_delay_replies_twice_at_once(api):
    server = api.start(kind="server", name=unique("dup0-srv"), host="127.0.0.1", port=0,
                       duplicate=True)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(2.0)
        sock.sendto(b"hi", tuple(server["local"]))
        first, _ = sock.recvfrom(1024)
        second, _ = sock.recvfrom(1024)
    assert first == second == b"Your data was 2 bytes long"
    counters = worker(api, server["id"])["counters"]
    assert counters["received"] == 1 and counters["replied"] == 2, counters


def test_rcvbuf_is_accepted(api):
    server = api.start(kind="server", name=unique("rcvbuf"), host="127.0.0.1", port=0,
                       rcvbuf=8192)
    assert server["spec"]["rcvbuf"] == 8192


@pytest.mark.parametrize("field, value", [
    ("delay", -1),
    ("delay", "soon"),
    ("duplicate", "maybe"),
    ("rcvbuf", 0),
    ("rcvbuf", 1.5),
])
def test_bad_server_options_name_the_field(api, field, value):
    name = unique("badopt")
    assert_error(api.post("/api/workers", json={"kind": "server", "name": name, "port": 0,
                                                field: value}), 422, field)
    assert api.get(f"/api/workers/{name}").status_code == 404


# --- 6. the stream worker -----------------------------------------------------------------

def test_stream_is_counted_by_the_server(api):
    server = api.start(kind="server", name=unique("stream-srv"), host="127.0.0.1", port=0,
                       rcvbuf=4 * 1024 * 1024)
    stream = api.start(kind="stream", name=unique("stream"), host="127.0.0.1",
                       port=server["local"][1], count=500, rate=50000)
    done = wait_state(api, stream["id"], {"finished", "failed"})
    assert done["state"] == "finished", done
    assert done["counters"]["sent"] == 500, done

    def stream_reported(evs):
        return any(e["type"] == "stream" for e in evs)

    server_events = poll(lambda: events(api, server["id"]), stream_reported, timeout=3.0,
                         what="the server's stream report")
    figures = worker(api, server["id"])["streams"]
    assert len(figures) == 1, figures
    row = figures[0]
    assert {"received", "lost", "duplicates", "reordered", "loss_rate", "jitter_ms"} <= set(row)
    assert row["peer"] == done["local"], (row, done)
    assert 0 < row["received"] <= 500, row
    assert row["received"] + row["lost"] <= 500, row
    assert row["duplicates"] == 0, row
    report = [e for e in server_events if e["type"] == "stream"][-1]
    assert "received" in report["message"] and "lost" in report["message"], report
    progress = [e for e in events(api, stream["id"]) if e["type"] == "progress"]
    assert progress, events(api, stream["id"])
    assert "Sent 500 of 500" in progress[-1]["message"], progress[-1]
    # stream datagrams are counted, not answered
    assert worker(api, server["id"])["counters"]["replied"] == 0


# --- 7. the page WebSocket pushes the experiments table -----------------------------------

async def test_page_socket_pushes_the_verdicts(fresh):
    headers = {**fresh.cookie, "Origin": fresh.origin}
    async with connect(f"{fresh.ws_base}/ws/page", open_timeout=5,
                       additional_headers=headers) as ws, fresh.async_client() as http:
        async with asyncio.timeout(5):
            first = await ws.recv()
        assert 'id="experiments"' in first
        assert "fooled" not in first  # a fresh app has run no experiment
        response = await http.post("/api/experiments/impostor")
        assert response.status_code == 201, response.text
        run_id = response.json()["id"]
        own_table = re.compile(
            r"<caption>" + re.escape(run_id) + r":.*?</table>", re.S)
        seen = []
        deadline = time.monotonic() + 5.0
        for _ in range(500):
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"no fooled verdict for {run_id} in {len(seen)} messages"
            async with asyncio.timeout(remaining):
                message = await ws.recv()
            seen.append(message)
            if 'id="experiments"' not in message:
                continue
            assert re.search(r'<div id="experiments" hx-swap-oob="true">', message), message
            table = own_table.search(message)
            if table and "fooled" in table.group(0):
                break
        else:
            raise AssertionError("no message with the verdicts")
        assert "promiscuous" in table.group(0)
        assert "never saw it" in table.group(0) or "waiting" in table.group(0)
