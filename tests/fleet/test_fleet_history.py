"""The history of a fleet (issue 15): other machines' workers are recorded like local ones,
and a dashboard killed and restarted while agents work gets what it missed replayed from
the agents' buffers, so the history has every event."""

import json
import signal
import threading
import time

import pytest

from live import start_server, stop_and_check
from test_fleet_web import REPO_ARGS, machines, wait_for


def dashboard_args(server) -> tuple[str, ...]:
    return (*REPO_ARGS, "--nats", server.url, "--creds", str(server.dir / "dashboard.creds"))


def history_of(http, worker_id: str) -> list[dict]:
    """Every record of `worker_id` in every session, with its events."""
    sessions = http.get("/api/history").json()["sessions"]
    return [http.get(f"/api/history/{w['id']}").json() for s in sessions
            for w in s["workers"] if w["worker"] == worker_id]


@pytest.fixture
def dashboard_dir(tmp_path):
    return tmp_path / "dashboard"


def test_a_remote_workers_record_and_events_are_in_the_history(lan_fleet, dashboard_dir):
    lan, server = lan_fleet
    live = start_server(dashboard_dir, args=dashboard_args(server))
    try:
        with live.client() as http:
            wait_for(lambda: {"a", "b"} <= set(machines(http)), "a and b")
            echo = http.post("/api/workers", json={"machine": "a", "kind": "server",
                                                   "host": lan.hosts["a"], "port": 1085}).json()
            client = http.post("/api/workers", json={
                "machine": "b", "kind": "client", "host": lan.hosts["a"], "port": 1085,
                "count": 3, "interval": 0.05}).json()
            wait_for(lambda: http.get(f"/api/workers/{client['id']}").json()["state"]
                     != "running", "the client to end")
            http.delete(f"/api/workers/{echo['id']}")

            def recorded():
                found = history_of(http, client["id"])
                return found if found and found[0]["state"] == "finished" else None
            [record] = wait_for(recorded, "the client's record in the history")
            assert record["kind"] == "client" and record["spec"]["machine"] == "b"
            assert record["spec"]["count"] == 3 and record["ended"]
            types = [e["type"] for e in record["events"]]
            assert types.count("reply") == 3 and types[-1] == "stopped", types
            assert {e["machine"] for e in record["events"]} == {"b"}
            [server_record] = wait_for(lambda: [r for r in history_of(http, echo["id"])
                                                if r["state"] == "stopped"] or None,
                                       "the server's record")
            assert [e["type"] for e in server_record["events"]].count("received") == 3
    finally:
        stop_and_check(live)


def test_a_dashboard_killed_and_restarted_loses_no_event(lan_fleet, dashboard_dir):
    lan, server = lan_fleet
    agent = lan.agent(server, "c")
    live = start_server(dashboard_dir, args=dashboard_args(server))
    try:
        with live.client() as http:
            wait_for(lambda: machines(http).get("c", {}).get("state") == "up", "c up")
            echo = http.post("/api/workers", json={"machine": "c", "kind": "server",
                                                   "host": lan.hosts["c"], "port": 1086}).json()
            client = http.post("/api/workers", json={
                "machine": "c", "kind": "client", "host": lan.hosts["c"], "port": 1086,
                "count": 1000, "interval": 0.1}).json()
            wait_for(lambda: len((history_of(http, client["id"]) or [{}])[0]
                                 .get("events", [])) >= 6, "some of the client's events kept")
        live.proc.send_signal(signal.SIGKILL)  # no last flush, no goodbye
        live.proc.wait(timeout=5)
        live.terminate()
        time.sleep(3)  # ~30 requests the dashboard is not there for
        live = start_server(dashboard_dir, args=dashboard_args(server))
        with live.client() as http:
            wait_for(lambda: machines(http).get("c", {}).get("state") == "up", "c up again")
            time.sleep(1)
            assert http.delete(f"/api/workers/{client['id']}").status_code == 200
            assert http.delete(f"/api/workers/{echo['id']}").status_code == 200

            def both_ended():
                records = [r for w in (client["id"], echo["id"]) for r in history_of(http, w)]
                stopped = [e for r in records for e in r["events"] if e["type"] == "stopped"]
                return records if len(stopped) == 2 else None
            records = wait_for(both_ended, "both workers' stopped events in the history")
        assert len({r["session"] for r in records}) == 2  # before and after the restart
        origins = [e["origin"] for r in records for e in r["events"]]
        assert len(origins) == len(set(origins)), "an event recorded twice"
        # every event agent c numbered, from its workers' first to the last: no gap
        assert sorted(origins) == list(range(min(origins), max(origins) + 1))
        assert min(origins) <= 2 and len(origins) > 60
        types = [e["type"] for r in records for e in r["events"]]
        assert types.count("sent") >= 40
    finally:
        stop_and_check(live)
        agent.stop()


def test_events_published_while_nats_server_was_down_all_reach_the_history(lan_fleet,
                                                                            dashboard_dir):
    """nats-server stops for 3 s while a client on c keeps sending (and a flood beside it
    overflows the agent's 2 MiB client buffer, so batches are lost on the way): the dashboard
    asks c for the missing batches, and the history and /api/events end with every event the
    client's counters count, each once and in order; the log says what was recovered."""
    from websockets.sync.client import connect

    lan, server = lan_fleet
    agent = lan.agent(server, "c")
    live = start_server(dashboard_dir, args=dashboard_args(server))
    streamed: list[dict] = []
    try:
        with live.client() as http, connect(f"{live.ws_base}/api/events", open_timeout=5,
                                            additional_headers={**live.bearer,
                                                                "Origin": live.origin},
                                            max_size=None) as ws:
            def collect() -> None:  # /api/events, read all along (its outbox is bounded)
                try:
                    while True:
                        streamed.append(json.loads(ws.recv(timeout=60)))
                except Exception:  # closed at the end of the test
                    return
            reader = threading.Thread(target=collect, daemon=True)
            reader.start()
            wait_for(lambda: machines(http).get("c", {}).get("state") == "up", "c up")
            echo = http.post("/api/workers", json={"machine": "c", "kind": "server",
                                                   "host": lan.hosts["c"], "port": 1087}).json()
            client = http.post("/api/workers", json={
                "machine": "c", "kind": "client", "host": lan.hosts["c"], "port": 1087,
                "count": 150, "interval": 0.04}).json()
            sinks = [http.post("/api/workers", json={
                "machine": "c", "kind": "server", "host": "127.0.0.1", "port": port,
                "reply": "none"}).json() for port in (1088, 1089)]
            wait_for(lambda: history_of(http, client["id"]), "the client in the history")
            for port in (1088, 1089):  # two floods through the outage (~2.5 MB/s of rows)
                http.post("/api/workers", json={
                    "machine": "c", "kind": "spoofer", "host": "127.0.0.1", "port": port,
                    "count": 8000, "interval": 0.001, "message": "z" * 300})
            server.stop()
            time.sleep(3)  # ~75 requests and replies while nobody can hear them
            server.start()
            wait_for(lambda: http.get(f"/api/workers/{client['id']}").status_code == 200
                     and http.get(f"/api/workers/{client['id']}").json()["state"] != "running",
                     "the client to end after the outage", timeout=30)
            counters = http.get(f"/api/workers/{client['id']}").json()["counters"]
            assert counters["sent"] == 150 and counters["replies"] > 140, counters

            def everything():
                records = history_of(http, client["id"])
                events = [e for r in records for e in r["events"]]
                return events if [e["type"] for e in events].count("stopped") == 1 else None
            events = wait_for(everything, "the client's last event in the history", timeout=20)
            http.delete(f"/api/workers/{echo['id']}")
            for sink in sinks:
                http.delete(f"/api/workers/{sink['id']}")
            time.sleep(1)  # the last of /api/events
        reader.join(timeout=5)
    finally:
        stop_and_check(live)
        agent.stop()
    types = [e["type"] for e in events]
    assert types.count("sent") == counters["sent"], "a request of the outage is missing"
    assert types.count("reply") == counters["replies"], "a reply of the outage is missing"
    origins = [e["origin"] for e in events]
    assert origins == sorted(set(origins)), "an event twice, or out of order"
    said = [e["message"] for m in streamed for e in m.get("events", []) if e["type"] == "machine"]
    recovered = [m for m in said if "of the outage recovered from c's buffer" in m]
    assert recovered and not [m for m in said if "lost" in m and "Machine c:" in m], said
    assert sum(m.get("dropped", 0) for m in streamed) == 0, "the stream itself lost some"
    mine = [e for m in streamed for e in m.get("events", []) if e["worker"] == client["id"]]
    assert [e["origin"] for e in mine] == origins, "/api/events differs from the history"


def test_a_late_listener_ends_in_the_broadcasts_record(lan_fleet, dashboard_dir):
    """b's agent is stopped for 1 s around a's broadcast: the sender's record in the history
    ends with a `reached` event naming both listeners, and its counter counts both."""
    lan, server = lan_fleet
    live = start_server(dashboard_dir, args=dashboard_args(server))
    try:
        with live.client() as http:
            wait_for(lambda: {"a", "b"} <= {n for n, m in machines(http).items()
                                            if m["interfaces"]}, "a and b")
            listeners = [http.post("/api/workers", json={"machine": m, "kind": "listener",
                                                         "port": 1093}).json()
                         for m in ("a", "b")]
            b = next(a for a in lan.agents if a.name == "b" and a.proc.poll() is None)
            b.proc.send_signal(signal.SIGSTOP)
            try:
                sender = http.post("/api/workers", json={
                    "machine": "a", "kind": "broadcast", "port": 1093, "count": 1,
                    "host": f"{lan.hosts['a'].rsplit('.', 1)[0]}.255",
                    "message": f"late {time.monotonic_ns()}"}).json()
                time.sleep(1)
            finally:
                b.proc.send_signal(signal.SIGCONT)

            def completed():
                found = history_of(http, sender["id"])
                events = found[0]["events"] if found else []
                return found[0] if [e for e in events if e["type"] == "reached"] else None
            record = wait_for(completed, "the late report in the sender's record")
            assert http.get(f"/api/workers/{sender['id']}").json()["counters"]["reached"] == 2
            for listener in listeners:
                http.delete(f"/api/workers/{listener['id']}")
    finally:
        stop_and_check(live)
    names = sorted(w["id"] for w in listeners)
    [sent] = [e for e in record["events"] if e["type"] == "sent"]
    assert sent["reached"] == [listeners[0]["id"]], "b's report was not late: nothing tested"
    assert record["events"][-1]["type"] == "reached"
    assert record["events"][-1]["reached"] == names and record["events"][-1]["machine"] == "a"
