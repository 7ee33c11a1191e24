"""A lab machine's own virtual LAN, built from the dashboard: `/api/lab?machine=b` asks agent b
(a real `udplab agent` in its own namespace) to build, show and tear down its lab, and
workers with `machine: b, where: h1` run inside b's lab hosts."""

import os
import re
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest

from test_fleet_web import dashboard, wait_for  # noqa: F401 (a fixture)
from webapp.engine.lab import NEEDS_ADMIN

NODES = {"switch", "router", "h1", "h2", "h3", "h4"}
LAB_SECONDS = 70.0  # the dashboard waits up to 60 s for an agent's build (LAB_TIMEOUT)


def up(http, *names: str) -> None:
    def all_up() -> bool:
        found = {m["name"]: m["state"] for m in http.get("/api/machines").json()["machines"]}
        return all(found.get(name) == "up" for name in names)
    wait_for(all_up, f"{', '.join(names)} up")


def namespaces_seen_by(pid: int) -> set[str]:
    """The named namespaces in a process's own view of /run/netns (an agent started with `ip
    netns exec` has a mount namespace of its own: its lab's names are not in ours)."""
    run = Path(f"/proc/{pid}/root/run/netns")
    return set(os.listdir(run)) if run.is_dir() else set()


@pytest.mark.timeout(180)  # two labs built and torn down, a scenario: seconds each
def test_a_teacher_builds_and_uses_the_lab_of_a_lab_machine(dashboard, lan_fleet):
    lan, _ = lan_fleet
    agent_b = next(a for a in lan.agents if a.name == "b")
    with dashboard.client() as http:
        http.timeout = LAB_SECONDS
        up(http, "a", "b")
        before = http.get("/api/lab", params={"machine": "b"})
        assert before.status_code == 200, before.text
        assert before.json()["built"] is False and before.json()["can_build"] is True
        started = time.monotonic()
        built = http.post("/api/lab", params={"machine": "b"})
        build_seconds = time.monotonic() - started
        assert built.status_code == 201, built.text
        lab = built.json()
        assert lab["built"] is True and [h["name"] for h in lab["hosts"]] == \
            ["h1", "h2", "h3", "h4"]
        prefix = lab["prefix"]
        # b's namespaces, in b's view, named by the agent's own process: not the dashboard's
        # lab (still unbuilt), and a's lab gets other names though its addresses are the same
        assert {prefix + node for node in NODES} <= namespaces_seen_by(agent_b.proc.pid)
        assert http.get("/api/lab").json()["built"] is False
        lab_a = http.post("/api/lab", params={"machine": "a"})
        assert lab_a.status_code == 201, lab_a.text
        assert lab_a.json()["prefix"] != prefix
        assert http.get("/api/lab", params={"machine": "b"}).json()["hosts"] == lab["hosts"]

        # udp_remote.py's server on b's h1, its client on b's h2, through the dashboard
        h1 = lab["hosts"][0]["address"]
        server = http.post("/api/workers", json={"machine": "b", "where": "h1",
                                                 "kind": "server", "host": h1, "port": 1060})
        assert server.status_code == 201, server.text
        assert server.json()["id"].startswith("b:") and server.json()["local"] == [h1, 1060]
        client = http.post("/api/workers", json={
            "machine": "b", "where": "h2", "kind": "client", "host": h1, "port": 1060,
            "count": 2, "interval": 0.05})
        assert client.status_code == 201, client.text
        client = client.json()

        def replies() -> list:
            events = http.get(f"/api/workers/{client['id']}/events").json()["events"]
            return [e for e in events if e["type"] == "reply"]
        got = wait_for(lambda: len(replies()) == 2 and replies(), "two replies from b's h1")
        assert all(e["machine"] == "b" for e in got)
        heard = http.get(f"/api/workers/{server.json()['id']}/events").json()["events"]
        peers = {e["peer"][0] for e in heard if e["type"] == "received"}
        assert peers == {lab["hosts"][1]["address"]}  # h2's address, on b's lab

        # a scenario runs on b's lab too, and says so step by step
        scenario = http.post("/api/lab/scenarios/exchange", params={"machine": "b"})
        assert scenario.status_code == 201, scenario.text
        assert scenario.json()["steps"] and all(s["ok"] for s in scenario.json()["steps"])
        # while a long one runs there (its listener waits 1.2 s for the switch), b still
        # answers other commands: the dashboard lists the scenario's worker running
        answers: dict = {}

        def snooping() -> None:
            with dashboard.client() as other:  # a client of its own: one per thread
                other.timeout = LAB_SECONDS
                answers["snooping"] = other.post("/api/lab/scenarios/snooping",
                                                 params={"machine": "b"})
        long_one = threading.Thread(target=snooping)
        long_one.start()
        try:
            def scenario_worker_running() -> bool:
                return any(w["id"].startswith("b:lab-snooping-") and w["state"] == "running"
                           for w in http.get("/api/workers").json()["workers"])
            wait_for(lambda: scenario_worker_running() or not long_one.is_alive(),
                     "the snooping scenario's listener on b")
            assert long_one.is_alive() and scenario_worker_running()
        finally:
            long_one.join(timeout=LAB_SECONDS)
        assert answers["snooping"].status_code == 201, answers["snooping"].text

        gone = http.delete("/api/lab", params={"machine": "b"})
        assert gone.status_code == 200, gone.text
        assert gone.json()["built"] is False
        assert set(gone.json()["removed"]) == {prefix + node for node in NODES}
        assert not {n for n in namespaces_seen_by(agent_b.proc.pid) if n.startswith(prefix)}
        # its workers on the lab stopped with it; a's lab is still there
        assert http.get(f"/api/workers/{server.json()['id']}").json()["state"] != "running"
        assert http.get("/api/lab", params={"machine": "a"}).json()["built"] is True
        placed = http.post("/api/workers", json={"machine": "b", "where": "h1",
                                                 "kind": "server", "port": 0})
        assert placed.status_code == 422 and "build it first" in placed.json()["error"]
        assert http.delete("/api/lab", params={"machine": "a"}).status_code == 200
    print(f"lab build on agent b through the API: {build_seconds:.2f} s")
    assert "Traceback" not in dashboard.log()


def follow(http, message: str):
    """Make the one API call a message names (such as `POST /api/lab?machine=b`)."""
    [(method, path)] = re.findall(r"\b(GET|POST|DELETE) (/api/[^\s),]+)", message)
    return http.request(method, path)


@pytest.mark.timeout(120)  # one lab built and torn down on b
def test_a_lab_machines_messages_name_the_calls_for_that_machine(dashboard, lan_fleet):
    """b's engine says "build it first (POST /api/lab, or the Lab panel)" of its own lab:
    through the dashboard the call is `POST /api/lab?machine=b` and the panel is named with b
    to pick (it shows the dashboard's own lab until then), and making the call a message
    names mends what it said, on b."""
    with dashboard.client() as http:
        http.timeout = LAB_SECONDS
        up(http, "b")
        assert http.get("/api/lab", params={"machine": "b"}).json()["built"] is False
        placed = http.post("/api/workers", json={"machine": "b", "where": "h1",
                                                 "kind": "server", "port": 0})
        assert placed.status_code == 422, placed.text
        told = placed.json()["error"]
        assert told.endswith("build it first (POST /api/lab?machine=b, or the Lab panel "
                             "with b picked)"), told
        assert placed.json()["field"] == "where"
        # the policy's refusal of an address of b's lab while it is down, before any datagram
        refused = http.post("/api/workers", json={"machine": "b", "kind": "client",
                                                  "host": "198.18.1.2", "port": 9})
        assert refused.status_code == 403, refused.text
        assert "build it first (the Lab panel with b picked, or POST /api/lab?machine=b), " \
            "then" in refused.json()["error"], refused.text
        try:
            built = follow(http, told)
            assert built.status_code == 201, built.text
            assert http.get("/api/lab", params={"machine": "b"}).json()["built"] is True
            assert http.get("/api/lab").json()["built"] is False  # not the dashboard's own
            again = http.post("/api/lab", params={"machine": "b"})
            assert again.status_code == 409, again.text
            assert again.json()["error"].endswith("tear it down first "
                                                  "(DELETE /api/lab?machine=b)")
            gone = follow(http, again.json()["error"])
            assert gone.status_code == 200 and gone.json()["built"] is False, gone.text
        finally:
            http.delete("/api/lab", params={"machine": "b"})
        # the dashboard's own engine keeps its own words: its lab, and the Lab panel
        local = http.post("/api/workers", json={"where": "h1", "kind": "server", "port": 0})
        assert local.status_code == 422, local.text
        assert local.json()["error"].endswith("build it first (POST /api/lab, or the Lab panel)")
    assert "Traceback" not in dashboard.log()


def test_mistakes_about_a_labs_machine_are_plain_answers(dashboard, lan_fleet):
    lan, server = lan_fleet
    # machine c's agent runs as root without CAP_NET_ADMIN: the engine's own refusal
    agent = lan.agent(server, "c", wrap=("setpriv", "--bounding-set", "-net_admin",
                                         "--inh-caps", "-net_admin", "--"))
    with dashboard.client() as http:
        http.timeout = LAB_SECONDS
        for method in ("get", "post", "delete"):
            unknown = getattr(http, method)("/api/lab", params={"machine": "nowhere"})
            assert unknown.status_code == 404, unknown.text
            assert "no machine 'nowhere'" in unknown.json()["error"]
            assert unknown.json()["field"] == "machine"
        assert http.post("/api/lab/scenarios/exchange",
                         params={"machine": "nowhere"}).status_code == 404
        up(http, "c")
        shown = http.get("/api/lab", params={"machine": "c"}).json()
        assert shown["can_build"] is False and shown["needs"] == NEEDS_ADMIN
        refused = http.post("/api/lab", params={"machine": "c"})
        assert refused.status_code == 403, refused.text
        assert refused.json() == {"error": NEEDS_ADMIN, "field": "lab"}
        no_lab = http.post("/api/lab/scenarios/exchange", params={"machine": "c"})
        assert no_lab.status_code == 422 and "build it first" in no_lab.json()["error"]
        agent.proc.send_signal(signal.SIGKILL)
        agent.proc.wait(timeout=5)
        lost = http.post("/api/lab", params={"machine": "c"})
        assert lost.status_code == 503 and "Machine c" in lost.json()["error"], lost.text
    assert "Traceback" not in dashboard.log()


def test_an_agent_removes_the_namespaces_a_killed_agents_lab_left(lan_fleet):
    """A lab PC's agent SIGKILLed with its lab built leaves namespaces named after its process
    id (`udplab-<pid>-…`): the next agent removes them at its start, as the dashboard does."""
    lan, server = lan_fleet
    gone = subprocess.Popen(["true"])
    gone.wait(timeout=5)
    orphan = f"udplab-{gone.pid}-1-h1"
    subprocess.run(["ip", "netns", "add", orphan], check=True, timeout=10)
    try:
        agent = lan.agent(server, "c")
        listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True,
                                timeout=10).stdout.split()
        assert orphan not in listed
        assert "namespaces left by a lab whose agent was killed" in agent.stderr()
        assert agent.stop() == 0
    finally:
        subprocess.run(["ip", "netns", "del", orphan], capture_output=True, timeout=10)


HTMX = {"HX-Request": "true"}


def test_the_lab_panels_machine_is_checked_and_said_in_the_panel(dashboard, lan_fleet):
    """The page's Lab panel routes with a machine that is not in the fleet (or a name that is
    no name): the panel says so in a sentence, its picker still there; nothing is built."""
    with dashboard.client() as http:
        up(http, "a", "b")
        for name in ("nowhere", "x" * 300, "<script>alert(1)</script>"):
            shown = http.get("/lab", params={"lab": name}, headers=HTMX)
            assert shown.status_code == 200, shown.text
            assert "There is no machine" in shown.text and 'name="lab"' in shown.text
            assert "<script>alert" not in shown.text and len(shown.text) < 20_000
            page = http.get("/", params={"lab": name})
            assert page.status_code == 200 and "There is no machine" in page.text
            for path in ("/lab", "/lab/delete", "/lab/scenarios/exchange"):
                acted = http.post(path, data={"machine": name}, headers=HTMX)
                assert acted.status_code == 200, (path, acted.text)
                assert "There is no machine" in acted.text, (path, acted.text)
            plain = http.post("/lab", data={"machine": name})
            assert plain.status_code == 303 and plain.headers["location"] == "/#lab"
        # the fleet's name of this machine is this machine: its own panel, picked as such
        own = http.get("/lab", params={"lab": "local"}, headers=HTMX)
        assert re.search(r'<option value="" selected>this machine</option>', own.text), own.text
        assert 'name="machine"' not in own.text
        assert http.get("/api/lab").json()["built"] is False
        assert http.get("/api/lab", params={"machine": "a"}).json()["built"] is False
    assert "Traceback" not in dashboard.log()
