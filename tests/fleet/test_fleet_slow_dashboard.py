"""A slow or dead dashboard never slows an agent's UDP path (issue 15): the dashboard is
frozen (SIGSTOP) while an agent's workers flood it with rows, and a client inside the agent's
namespace times request/reply exchanges with the agent's server before and during the freeze."""

import json
import signal
import subprocess
import sys
import time

from live import start_server, stop_and_check
from test_fleet_history import dashboard_args
from test_fleet_web import machines, wait_for

# Runs inside the agent's namespace: `count` exchanges one after another with the server,
# each waiting at most 1 s; prints the round trips (seconds) and how many went unanswered.
PROBE = """
import json, socket, sys, time
port, count = int(sys.argv[1]), int(sys.argv[2])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(1.0)
s.connect(("127.0.0.1", port))
rtts, lost = [], 0
for i in range(count):
    start = time.perf_counter()
    s.send(b"probe %d" % i)
    try:
        s.recv(65535)
        rtts.append(time.perf_counter() - start)
    except socket.timeout:
        lost += 1
    time.sleep(0.005)
print(json.dumps({"rtts": rtts, "lost": lost}))
"""


def probe(lan, machine: str, port: int, count: int = 200) -> dict:
    done = subprocess.run(["ip", "netns", "exec", lan.ns(machine), sys.executable, "-c", PROBE,
                           str(port), str(count)], capture_output=True, text=True, timeout=30,
                          check=True)
    result = json.loads(done.stdout)
    rtts = sorted(result["rtts"])
    result["p50"] = rtts[len(rtts) // 2] if rtts else None
    result["p90"] = rtts[len(rtts) * 9 // 10] if rtts else None
    return result


def test_a_frozen_dashboard_does_not_slow_an_agents_exchanges(lan_fleet, tmp_path):
    lan, server = lan_fleet
    for old in [a for a in lan.agents if a.name == "c"]:
        old.stop()
    # every datagram a row (no sampling): as much as possible for the dashboard to take in
    agent = lan.agent(server, "c", extra=("--events-per-second", "0"))
    live = start_server(tmp_path / "dashboard", args=dashboard_args(server))
    frozen = False
    try:
        with live.client() as http:
            wait_for(lambda: machines(http).get("c", {}).get("state") == "up", "c up")
            echo = http.post("/api/workers", json={"machine": "c", "kind": "server",
                                                   "host": "127.0.0.1", "port": 1090})
            assert echo.status_code == 201, echo.text
            sink = http.post("/api/workers", json={"machine": "c", "kind": "server",
                                                   "host": "127.0.0.1", "port": 1091,
                                                   "reply": "none"})
            assert sink.status_code == 201, sink.text
            # ~2 rows of ~700 bytes per ms for up to 10 s: far more than the client buffers
            flood = http.post("/api/workers", json={
                "machine": "c", "kind": "spoofer", "host": "127.0.0.1", "port": 1091,
                "count": 10000, "interval": 0.001, "message": "x" * 300})
            assert flood.status_code == 201, flood.text
            before = probe(lan, "c", 1090)
            live.proc.send_signal(signal.SIGSTOP)
            frozen = True
            time.sleep(2)  # nats-server's buffers towards the dashboard fill up meanwhile
            during = probe(lan, "c", 1090)
            live.proc.send_signal(signal.SIGCONT)
            frozen = False
            print(f"round trips p50/p90 before {before['p50'] * 1e3:.2f}/"
                  f"{before['p90'] * 1e3:.2f} ms, during the freeze "
                  f"{during['p50'] * 1e3:.2f}/{during['p90'] * 1e3:.2f} ms")
            assert before["lost"] == 0 and during["lost"] == 0, (before["lost"], during["lost"])
            assert during["p50"] < max(3 * before["p50"], 0.005), (before, during)
            assert during["p90"] < max(3 * before["p90"], 0.020), (before, during)
            # the flood's sender kept its pace on the agent too, frozen dashboard or not
            assert agent.proc.poll() is None, agent.stderr()
            # and everything resumes: the dashboard hears c and drives it again
            wait_for(lambda: machines(http).get("c", {}).get("state") == "up", "c up again",
                     timeout=20)
            assert http.delete(f"/api/workers/{flood.json()['id']}").status_code == 200
            client = http.post("/api/workers", json={
                "machine": "c", "kind": "client", "host": "127.0.0.1", "port": 1090,
                "count": 2, "interval": 0.05}).json()
            wait_for(lambda: [e for e in http.get(f"/api/workers/{client['id']}/events")
                              .json().get("events", []) if e["type"] == "reply"][1:],
                     "two replies after the freeze", timeout=20)
            http.delete(f"/api/workers/{echo.json()['id']}")
            http.delete(f"/api/workers/{sink.json()['id']}")
    finally:
        if frozen:
            live.proc.send_signal(signal.SIGCONT)
        stop_and_check(live)
