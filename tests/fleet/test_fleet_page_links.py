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
    lan, server = lan_fleet
    live = start_server(tmp_path_factory.mktemp("dashboard"),
                        args=(*REPO_ARGS, "--nats", server.url, "--creds",
                              str(server.dir / "dashboard.creds")))
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
    jsonl = http.get(f"/api/workers/{worker_id}/export.jsonl")
    assert jsonl.status_code == 200, jsonl.text
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


def test_the_impostor_form_aims_at_another_machines_client(dashboard, lan_fleet):
    """The spoofer form (as a plain navigation) with machine a and a client on b as its
    target: the fleet aims it at that client's address on b, and the client is fooled."""
    lan, _ = lan_fleet
    with dashboard.client() as http:
        server = http.post("/api/workers", json={"machine": "a", "kind": "server",
                                                 "host": lan.hosts["a"], "port": 1104}).json()
        http.post(f"/api/workers/{server['id']}/pause")
        client = http.post("/api/workers", json={
            "machine": "b", "kind": "client", "host": lan.hosts["a"], "port": 1104,
            "mode": "promiscuous", "timeout": 5.0, "give_up_after": 5.0}).json()
        try:
            wait_for(lambda: http.get(f"/api/workers/{client['id']}").json()["local"],
                     "the client on b to send")
            # the target picker offers it as its card names it (once its events are in)
            offered = f'<option value="{client["id"]}">b · {client["id"][2:]}</option>'
            wait_for(lambda: offered in http.get("/").text, "b's client in the picker")
            # this target with no machine picked is aimed by the fleet too (here this
            # dashboard's own policy refuses the lab's network: a sentence, not a 500)
            refused = http.post("/workers", headers=HTMX, data={
                "kind": "spoofer", "target": client["id"], "message": "FAKE"})
            assert refused.status_code == 403 and 'class="error"' in refused.text
            posted = http.post("/workers", data={"kind": "spoofer", "machine": "a",
                                                 "target": client["id"], "message": "FAKE",
                                                 "count": "1"})
            assert posted.status_code == 303, posted.text
            fooled = wait_for(lambda: [e for e in http.get(
                f"/api/workers/{client['id']}/events").json()["events"]
                if e["type"] == "reply"], "the client's reply")
            assert fooled[0]["text"] == "FAKE" and fooled[0]["expected"] is False
            ended = http.post("/workers", headers=HTMX, data={
                "kind": "spoofer", "machine": "a", "target": client["id"]})
            assert ended.status_code == 409 and "has no address to aim at" in ended.text
            missing = http.post("/workers", headers=HTMX, data={
                "kind": "spoofer", "machine": "a", "target": "b:nobody-1"})
            assert missing.status_code == 404 and 'class="error"' in missing.text
        finally:
            for worker in (client, server):
                http.delete(f"/api/workers/{worker['id']}")
