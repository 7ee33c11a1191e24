"""Issue 15, the page's routes for another machine's worker: its socket options panel reads
and sets options through its machine, its card's downloads come from the dashboard's history
(and still work once that machine is lost), and an impostor form aimed at it is started by the
fleet. A real dashboard (`udplab --nats`) and agents in their own namespaces on a bridge made
here; datagrams only inside that LAN."""

import csv
import io
import json
import signal
import time

import dpkt
import pytest

from live import start_server, stop_and_check
from test_fleet_web import REPO_ARGS, machines, wait_for

HTMX = {"HX-Request": "true"}


@pytest.fixture(scope="module")
def dashboard(lan_fleet, tmp_path_factory):
    """The dashboard, allowed to send to the test's LAN (its own impostors reach b)."""
    lan, server = lan_fleet
    subnet = lan.hosts["a"].rsplit(".", 1)[0] + ".0/24"
    live = start_server(tmp_path_factory.mktemp("dashboard"),
                        args=(*REPO_ARGS, "--nats", server.url, "--creds",
                              str(server.dir / "dashboard.creds"), "--allow-net", subnet))
    try:
        with live.client() as http:
            wait_for(lambda: {"a", "b"} <= set(machines(http)), "a and b in the fleet")
        yield live
    finally:
        stop_and_check(live)


def exchange(http, lan, machine: str, port: int, count: int = 3) -> tuple[dict, dict]:
    """An echo server on `machine` and a client there sending it `count` requests, finished
    (an echo: the agent's servers do not amplify towards a real network)."""
    host = lan.hosts[machine]
    server = http.post("/api/workers", json={"machine": machine, "kind": "server",
                                             "host": host, "port": port, "reply": "echo"})
    assert server.status_code == 201, server.text
    server = server.json()
    client = http.post("/api/workers", json={
        "machine": machine, "kind": "client", "host": host, "port": port, "count": count,
        "interval": 0.05, "message": "hello fleet"}).json()
    wait_for(lambda: http.get(f"/api/workers/{client['id']}").json()["state"] != "running",
             "the client to finish")
    return server, client


def check_exports(http, worker_id: str, machine: str, replies: int) -> None:
    """The card's three downloads of another machine's client hold its datagrams."""
    def ended():  # the agent says so before its last batch of events is here
        response = http.get(f"/api/workers/{worker_id}/export.jsonl")
        assert response.status_code == 200, response.text
        return response if '"type": "stopped"' in response.text else None
    jsonl = wait_for(ended, f"{worker_id}'s stopped event in the history")
    assert "attachment" in jsonl.headers["content-disposition"]
    lines = [json.loads(line) for line in jsonl.text.splitlines()]
    assert lines[0]["type"] == "udplab-export"
    events = lines[2:]
    assert lines[1]["worker"] == worker_id and lines[1]["spec"]["machine"] == machine
    assert [e["type"] for e in events].count("reply") == replies
    assert {e["machine"] for e in events} == {machine}
    rows = list(csv.DictReader(io.StringIO(
        http.get(f"/api/workers/{worker_id}/export.csv").text)))
    assert [r["type"] for r in rows].count("reply") == replies
    pcap = http.get(f"/api/workers/{worker_id}/export.pcapng")
    assert pcap.status_code == 200 and pcap.content[:4] == b"\x0a\x0d\x0d\x0a"
    payloads = [_udp_payload(buf) for _, buf in dpkt.pcapng.Reader(io.BytesIO(pcap.content))]
    assert payloads.count(b"hello fleet") == 2 * replies  # each request and its echo


def _udp_payload(buf: bytes) -> bytes:
    """The UDP payload of a captured packet (raw IPv4 or IPv6, as the export writes)."""
    packet = dpkt.ip.IP(buf) if buf[0] >> 4 == 4 else dpkt.ip6.IP6(buf)
    return bytes(packet.data.data)


def test_the_options_panel_reads_and_sets_another_machines_socket(dashboard, lan_fleet):
    lan, _ = lan_fleet
    with dashboard.client() as http:
        server = http.post("/api/workers", json={"machine": "a", "kind": "server",
                                                 "host": lan.hosts["a"], "port": 1101}).json()
        try:
            panel = http.get("/options", params={"options": server["id"]})
            assert panel.status_code == 200
            assert 'data-option="SO_RCVBUF"' in panel.text
            assert f"{lan.hosts['a']}:1101" in panel.text  # the worker's own address there
            assert f'action="/workers/{server["id"]}/options"' in panel.text
            # the whole page with ?options= (the card's link, a plain navigation)
            full = http.get("/", params={"options": server["id"]})
            assert full.status_code == 200 and 'data-option="SO_RCVBUF"' in full.text
            changed = http.post(f"/workers/{server['id']}/options", headers=HTMX,
                                data={"name": "SO_RCVBUF", "value": "65536"})
            assert changed.status_code == 200 and "Set SO_RCVBUF to 65536" in changed.text
            held = {o["name"]: o for o in http.get(
                f"/api/workers/{server['id']}/options").json()["options"]}["SO_RCVBUF"]
            assert held["value"] == 131072  # Linux doubles it for its bookkeeping
            # without JavaScript: back to the page's options panel
            plain = http.post(f"/workers/{server['id']}/options",
                              data={"name": "SO_RCVBUF", "value": "32768"})
            assert plain.status_code == 303
            assert plain.headers["location"] == f"/?options={server['id']}#options".replace(
                ":", "%3A")
            # the agent refuses a bad value: a sentence in the panel, the worker unharmed
            bad = http.post(f"/workers/{server['id']}/options", headers=HTMX,
                            data={"name": "SO_RCVBUF", "value": "lots"})
            assert bad.status_code == 200 and 'class="error"' in bad.text
            assert 'data-option="SO_RCVBUF"' in bad.text
            assert http.get(f"/api/workers/{server['id']}").json()["state"] == "running"
        finally:
            http.delete(f"/api/workers/{server['id']}")


@pytest.mark.parametrize("worker", ["a:nobody-1", "nowhere:server-1", "a:", ":", "x" * 300,
                                    "a:server-1/../../etc"])
def test_bad_worker_ids_in_the_options_panel_are_sentences(dashboard, worker):
    with dashboard.client() as http:
        panel = http.get("/options", params={"options": worker})
        assert panel.status_code == 200 and 'class="error"' in panel.text, panel.text
        assert "Traceback" not in panel.text
        full = http.get("/", params={"options": worker})
        assert full.status_code == 200 and 'class="error"' in full.text
        posted = http.post(f"/workers/{worker}/options", headers=HTMX,
                           data={"name": "SO_RCVBUF", "value": "1"})
        assert posted.status_code in (200, 404), posted.text
        export = http.get(f"/api/workers/{worker}/export.csv")
        assert export.status_code in (404, 422) and export.json()["error"], export.text
    assert "Traceback" not in dashboard.log()


def test_another_machines_downloads_come_from_the_history(dashboard, lan_fleet):
    lan, _ = lan_fleet
    with dashboard.client() as http:
        server, client = exchange(http, lan, "b", 1102)
        http.delete(f"/api/workers/{server['id']}")
        check_exports(http, client["id"], "b", replies=3)
        bad = http.get(f"/api/workers/{client['id']}/export.xml")
        assert bad.status_code == 422 and "jsonl, csv or pcapng" in bad.json()["error"]


def test_a_lost_machine_says_so_and_its_downloads_still_work(dashboard, lan_fleet):
    lan, server = lan_fleet
    agent = lan.agent(server, "c")
    try:
        with dashboard.client() as http:
            wait_for(lambda: machines(http).get("c", {}).get("state") == "up", "c up")
            echo, client = exchange(http, lan, "c", 1103, count=2)
            agent.proc.send_signal(signal.SIGKILL)  # the echo server was running on c
            agent.proc.wait(timeout=5)
            wait_for(lambda: machines(http)["c"]["state"] == "lost", "c lost", timeout=15)
            started = time.monotonic()
            panel = http.get("/options", params={"options": echo["id"]})
            took = time.monotonic() - started
            assert panel.status_code == 200 and "Machine c is lost" in panel.text, panel.text
            assert took < 2, f"the panel waited {took:.1f} s for a lost machine"
            full = http.get("/", params={"options": echo["id"]})
            assert full.status_code == 200 and "Machine c is lost" in full.text
            for headers, status in ((HTMX, 200), ({}, 303)):
                posted = http.post(f"/workers/{echo['id']}/options", headers=headers,
                                   data={"name": "SO_RCVBUF", "value": "65536"})
                assert posted.status_code == status, posted.text
                if status == 200:
                    assert "Machine c is lost" in posted.text
            check_exports(http, client["id"], "c", replies=2)
            assert http.get(f"/api/workers/{echo['id']}/export.jsonl").status_code == 200
    finally:
        agent.stop()
    assert "Traceback" not in dashboard.log()


def waiting_client(http, lan, port: int) -> dict:
    """A promiscuous client on b waiting for the paused server on a at `port`."""
    client = http.post("/api/workers", json={
        "machine": "b", "kind": "client", "host": lan.hosts["a"], "port": port,
        "mode": "promiscuous", "timeout": 5.0, "give_up_after": 5.0}).json()
    wait_for(lambda: http.get(f"/api/workers/{client['id']}").json()["local"],
             "the client on b to send")
    return client


def fooled(http, client: dict) -> dict:
    """The client's first reply (within 10 s): it must be the impostor's."""
    replies = wait_for(lambda: [e for e in http.get(
        f"/api/workers/{client['id']}/events").json()["events"]
        if e["type"] == "reply"], f"{client['id']}'s reply")
    assert replies[0]["text"] == "FAKE" and replies[0]["expected"] is False, replies
    return replies[0]


def test_the_impostor_form_aims_at_another_machines_client(dashboard, lan_fleet):
    """The spoofer form (as a plain navigation) with machine a and a client on b as its
    target: the fleet aims it at that client's address on b, and the client is fooled; with
    no machine picked, this dashboard's own impostor fools one on b too."""
    lan, _ = lan_fleet
    with dashboard.client() as http:
        server = http.post("/api/workers", json={"machine": "a", "kind": "server",
                                                 "host": lan.hosts["a"], "port": 1104}).json()
        http.post(f"/api/workers/{server['id']}/pause")
        clients = []
        try:
            clients.append(client := waiting_client(http, lan, 1104))
            # the target picker offers it as its card names it (once its events are in)
            offered = f'<option value="{client["id"]}">b · {client["id"][2:]}</option>'
            wait_for(lambda: offered in http.get("/").text, "b's client in the picker")
            posted = http.post("/workers", data={"kind": "spoofer", "machine": "a",
                                                 "target": client["id"], "message": "FAKE",
                                                 "count": "1"})
            assert posted.status_code == 303, posted.text
            assert fooled(http, client)["peer"][0] == lan.hosts["a"]
            ended = http.post("/workers", headers=HTMX, data={
                "kind": "spoofer", "machine": "a", "target": client["id"]})
            assert ended.status_code == 409 and "has no address to aim at" in ended.text
            missing = http.post("/workers", headers=HTMX, data={
                "kind": "spoofer", "machine": "a", "target": "b:nobody-1"})
            assert missing.status_code == 404 and 'class="error"' in missing.text
            # no machine picked: the impostor is this dashboard's, aimed across the bridge
            clients.append(client := waiting_client(http, lan, 1104))
            here = http.post("/workers", headers=HTMX, data={
                "kind": "spoofer", "target": client["id"], "message": "FAKE"})
            assert here.status_code == 200 and "Started impostor" in here.text, here.text
            assert ":" not in here.text.split("<strong>")[1].split("</strong>")[0]
            assert fooled(http, client)["peer"][0] == lan.hosts["a"].rsplit(".", 1)[0] + ".1"
        finally:
            for worker in (*clients, server):
                http.delete(f"/api/workers/{worker['id']}")


def test_an_impostor_elsewhere_aimed_at_this_dashboards_client(dashboard, lan_fleet):
    """The picker offers this dashboard's own clients by their plain ids: an impostor put on
    machine a and aimed at one is aimed at that client (not at a client of a's with the same
    id); one on this machine's loopback is out of a's reach, and the form says so."""
    lan, _ = lan_fleet
    with dashboard.client() as http:
        server = http.start(kind="server", host="127.0.0.1", port=0)
        client = http.start(kind="client", host="127.0.0.1", port=server["local"][1],
                            mode="connected", count=1000, interval=0.2)
        try:
            assert ":" not in client["id"]
            wait_for(lambda: (http.get(f"/api/workers/{client['id']}").json()["local"]
                              or [""])[0] == "127.0.0.1", "the connected client's address")
            for headers, status in ((HTMX, 409), ({}, 409)):
                aimed = http.post("/workers", headers=headers, data={
                    "kind": "spoofer", "machine": "a", "target": client["id"]})
                assert aimed.status_code == status, aimed.text
                assert "the loopback of machine local" in aimed.text
            via_api = http.post("/api/workers", json={"kind": "spoofer", "machine": "a",
                                                      "target": client["id"]})
            assert via_api.status_code == 409 and via_api.json()["field"] == "target"
            # one connected to a server on a holds the bridge's address: aimed at that
            echo = http.start(machine="a", kind="server", host=lan.hosts["a"], port=1105)
            across = http.start(kind="client", host=lan.hosts["a"], port=1105,
                                mode="connected", count=1000, interval=0.2)
            at = wait_for(lambda: http.get(f"/api/workers/{across['id']}").json()["local"],
                          "the connected client's address")
            assert at[0] == lan.hosts["a"].rsplit(".", 1)[0] + ".1"
            aimed = http.post("/workers", headers=HTMX, data={
                "kind": "spoofer", "machine": "a", "target": across["id"], "count": "1"})
            assert aimed.status_code == 200 and "Started impostor" in aimed.text, aimed.text
            shown = aimed.text.split("<strong>")[1].split("</strong>")[0]  # "a · spoofer-N"
            impostor = http.get("/api/workers/" + shown.replace(" · ", ":")).json()
            http.started.append(impostor["id"])
            assert impostor["target"] == at  # this machine's client, not one of a's
            assert echo["id"].startswith("a:")
        finally:
            http.stop_started()
