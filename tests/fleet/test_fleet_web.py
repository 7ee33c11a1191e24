"""The dashboard joined to the fleet: a real `udplab --nats URL --creds FILE` (uvicorn on a
free port) and agents in their own namespaces, driven through the JSON API."""

import asyncio
import json
import signal
import subprocess
import sys
import time

import pytest
import websockets

from live import start_server, stop_and_check

REPO_ARGS = ("--max-token-failures", "0")


def wait_for(predicate, what: str, timeout: float = 10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    pytest.fail(f"timed out after {timeout} s waiting for {what}")


@pytest.fixture(scope="module")
def dashboard(lan_fleet, tmp_path_factory):
    lan, server = lan_fleet
    live = start_server(tmp_path_factory.mktemp("dashboard"),
                        args=(*REPO_ARGS, "--nats", server.url, "--creds",
                              str(server.dir / "dashboard.creds")))
    try:
        yield live
    finally:
        stop_and_check(live)


def machines(http) -> dict[str, dict]:
    response = http.get("/api/machines")
    assert response.status_code == 200, response.text
    return {m["name"]: m for m in response.json()["machines"]}


def test_machines_lists_this_one_and_every_agent(dashboard, lan_fleet):
    lan, _ = lan_fleet
    with dashboard.client() as http:
        found = wait_for(lambda: (m := machines(http)) and {"a", "b"} <= set(m) and m,
                         "a and b in /api/machines")
        assert list(found)[0] == "local"
        for name, machine in found.items():
            assert set(machine) == {"name", "state", "local", "seen", "workers",
                                    "interfaces", "version"}
            assert machine["state"] == "up" and machine["local"] == (name == "local")
        assert lan.hosts["b"] in [i["address"] for i in found["b"]["interfaces"]]
        assert http.get("/api/machines", headers={"Authorization": "Bearer nope"}) \
            .status_code == 401


async def test_a_round_trip_across_machines_through_the_api(dashboard, lan_fleet):
    lan, _ = lan_fleet
    with dashboard.client() as http:
        wait_for(lambda: {"a", "b"} <= set(machines(http)), "a and b")
        async with websockets.connect(f"{dashboard.ws_base}/api/events",
                                      additional_headers={**dashboard.bearer,
                                                          "Origin": dashboard.origin}) as ws:
            server = http.post("/api/workers", json={"machine": "a", "kind": "server",
                                                     "host": lan.hosts["a"], "port": 1080})
            assert server.status_code == 201, server.text
            server = server.json()
            assert server["id"].startswith("a:") and server["machine"] == "a"
            client = http.post("/api/workers", json={
                "machine": "b", "kind": "client", "host": lan.hosts["a"], "port": 1080,
                "count": 2, "interval": 0.05}).json()
            assert client["id"].startswith("b:")
            replies = []
            async with asyncio.timeout(10):
                while len(replies) < 2:
                    message = json.loads(await ws.recv())
                    replies += [e for e in message.get("events", [])
                                if e["type"] == "reply" and e["worker"] == client["id"]]
            assert all(e["machine"] == "b" for e in replies)
        listed = {w["id"]: w for w in http.get("/api/workers").json()["workers"]}
        assert listed[server["id"]]["machine"] == "a"
        assert listed[server["id"]]["state"] == "running"
        events = http.get(f"/api/workers/{client['id']}/events").json()["events"]
        assert [e["type"] for e in events].count("reply") == 2
        options = http.get(f"/api/workers/{server['id']}/options")
        assert options.status_code == 200
        assert any(o["name"] == "SO_RCVBUF" for o in options.json()["options"])
        assert http.post(f"/api/workers/{server['id']}/pause").json()["state"] == "paused"
        stopped = http.delete(f"/api/workers/{server['id']}")
        assert stopped.status_code == 200 and stopped.json()["state"] == "stopped"
        # a local worker still needs no machine, and "local" names this one
        local = http.post("/api/workers", json={"machine": "local", "kind": "server",
                                                "port": 0})
        assert local.status_code == 201 and ":" not in local.json()["id"]
        http.delete(f"/api/workers/{local.json()['id']}")


def test_mistakes_about_machines_are_plain_answers(dashboard):
    with dashboard.client() as http:
        response = http.post("/api/workers", json={"machine": "nowhere", "kind": "server"})
        assert response.status_code == 422 and response.json()["field"] == "machine"
        assert "no machine 'nowhere'" in response.json()["error"]
        assert http.get("/api/workers/nowhere:server-1").status_code == 404
        bad = http.post("/api/workers", json={"machine": "a", "kind": "server", "port": -1})
        assert bad.status_code == 422 and bad.json()["field"] == "port"
        # an impostor here aimed at a client on b: this dashboard's own policy (loopback
        # only) refuses the lab's network, as it would any other
        wait_for(lambda: "b" in machines(http), "b")
        client = http.post("/api/workers", json={"machine": "b", "kind": "client",
                                                 "host": "127.0.0.1", "port": 9,
                                                 "timeout": 3, "give_up_after": 3}).json()
        wait_for(lambda: http.get(f"/api/workers/{client['id']}").json()["local"], "b bound")
        refused = http.post("/api/workers", json={"kind": "spoofer", "target": client["id"]})
        assert refused.status_code == 403, refused.text
        assert http.post("/api/workers", json={"kind": "spoofer",
                                               "target": "b:nobody"}).status_code == 404


def test_the_dashboard_refuses_an_agents_or_a_wrong_secret_in_one_line(lan_fleet, tmp_path):
    lan, server = lan_fleet
    wrong = tmp_path / "wrong.creds"
    creds = server.creds("dashboard")
    wrong.write_text(creds.to_json().replace(creds.password, "x" * 32))
    for path, words in ((server.dir / "a.creds", "the credentials of machine 'a'"),
                        (wrong, "refused the credentials of 'dashboard'")):
        result = subprocess.run([sys.executable, "-m", "webapp", "--port", "0", "--nats",
                                 server.url, "--creds", str(path)], capture_output=True,
                                text=True, timeout=30, cwd=str(server.dir))
        assert result.returncode == 2 and words in result.stderr, result.stderr
        assert "Traceback" not in result.stderr and len(result.stderr.splitlines()) == 1


def test_the_page_lists_another_machines_events(dashboard, lan_fleet):
    from websockets.sync.client import connect

    lan, _ = lan_fleet
    with dashboard.client() as http, \
            connect(f"{dashboard.ws_base}/ws/page",
                    additional_headers={**dashboard.cookie, "Origin": dashboard.origin},
                    open_timeout=5) as page:
        page.recv(timeout=5)
        wait_for(lambda: {"a", "b"} <= set(machines(http)), "a and b")
        http.post("/api/workers", json={"machine": "a", "kind": "server", "name": "paged",
                                        "host": lan.hosts["a"], "port": 1081})
        client = http.post("/api/workers", json={"machine": "b", "kind": "client",
                                                 "host": lan.hosts["a"], "port": 1081}).json()
        html = ""
        deadline = time.monotonic() + 10
        shown = client["id"].replace(":", " · ")  # the page names the machine: b · client-1
        while f">{shown}<" not in html or "replied" not in html:
            assert time.monotonic() < deadline, f"no row of {client['id']}: {html[-800:]}"
            html += page.recv(timeout=5)
        http.delete("/api/workers/a:paged")
    assert "Traceback" not in dashboard.log()


def test_a_killed_agent_is_lost_in_the_api_and_its_workers_too(dashboard, lan_fleet):
    lan, server = lan_fleet
    agent = lan.agent(server, "c")
    with dashboard.client() as http:
        wait_for(lambda: machines(http).get("c", {}).get("state") == "up", "c up")
        worker = http.post("/api/workers", json={"machine": "c", "kind": "server",
                                                 "host": lan.hosts["c"], "port": 1082}).json()
        agent.proc.send_signal(signal.SIGKILL)
        agent.proc.wait(timeout=5)
        wait_for(lambda: machines(http)["c"]["state"] == "lost", "c lost", timeout=15)
        listed = [w for w in http.get("/api/workers").json()["workers"]
                  if w["id"] == worker["id"]]
        assert [w["state"] for w in listed] == ["lost"]
        gone = http.get(f"/api/workers/{worker['id']}")
        assert gone.status_code == 503 and "Machine c" in gone.json()["error"], gone.text
        lan.agent(server, "c")
        wait_for(lambda: machines(http)["c"]["state"] == "up", "c up again", timeout=10)
        assert not [w for w in http.get("/api/workers").json()["workers"]
                    if w["id"] == worker["id"]]  # a new run of the agent: that server died
    assert "Traceback" not in dashboard.log()
