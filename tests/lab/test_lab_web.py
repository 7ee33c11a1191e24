"""Issue 5 over HTTP: the virtual LAN through a real udplab process (uvicorn in a subprocess).

GET/POST/DELETE /api/lab, workers placed with `where`, the one-click scenarios, the Lab
panel's page routes, and the lab's end on DELETE, SIGTERM, SIGINT and — after SIGKILL — at
the next start. An app started without CAP_NET_ADMIN says how to get it and keeps working.

Traffic: inside the namespaces the app under test built, or on loopback.
"""

import os
import re
import signal
import subprocess
import sys
import time

import httpx
import pytest

from live import (REPO, start_server, stop_and_check,
                  wait_state)
from webapp.engine import lab as lab_module

NODES = ("h1", "h2", "h3", "h4", "router", "switch")
HOSTS = {  # name: (address, broadcast, mtu, subnet)
    "h1": ("198.18.1.2", "198.18.1.255", 1500, "198.18.1.0/24"),
    "h2": ("198.18.1.3", "198.18.1.255", 1500, "198.18.1.0/24"),
    "h3": ("198.18.1.4", "198.18.1.255", 1500, "198.18.1.0/24"),
    "h4": ("198.18.2.4", "198.18.2.255", 1280, "198.18.2.0/24"),
}
EXIT_WITHIN = 5.0  # seconds: uvicorn's graceful timeout is 3 s
# Drops CAP_NET_ADMIN from the bounding and inheritable sets: a root process exec'd under it
# (udplab) never gets the capability back. util-linux's setpriv is on every Debian.
WITHOUT_NET_ADMIN = ["setpriv", "--inh-caps=-net_admin", "--bounding-set=-net_admin"]


def build(http: httpx.Client) -> dict:
    response = http.post("/api/lab")
    assert response.status_code == 201, response.text
    return response.json()


def wait_exit(proc: subprocess.Popen, timeout: float) -> int | None:
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        return None


def events(http: httpx.Client, worker_id: str) -> list[dict]:
    response = http.get(f"/api/workers/{worker_id}/events")
    assert response.status_code == 200, response.text
    return response.json()["events"]


# --- the API ---------------------------------------------------------------------------------

def test_get_lab_before_it_is_built(lab_app, kernel):
    with lab_app.client() as http:
        response = http.get("/api/lab")
    assert response.status_code == 200
    lab = response.json()
    assert lab["built"] is False
    assert lab["can_build"] is True
    assert lab["needs"] is None
    assert lab["hosts"] == []
    assert re.fullmatch(rf"udplab-{lab_app.proc.pid}-\d+-", lab["prefix"]), lab["prefix"]
    assert [s["network"] for s in lab["subnets"]] == ["198.18.1.0/24", "198.18.2.0/24"]
    assert kernel.namespaces(lab_app.prefix) == []  # nothing is built until asked


def test_build_describes_the_hosts_and_a_second_build_conflicts(lab_app, kernel):
    links_before = kernel.root_links()
    with lab_app.client() as http:
        lab = build(http)
        assert lab["built"] is True
        assert [h["name"] for h in lab["hosts"]] == ["h1", "h2", "h3", "h4"]
        for host in lab["hosts"]:
            address, broadcast, mtu, subnet = HOSTS[host["name"]]
            assert (host["address"], host["broadcast"], host["mtu"], host["subnet"]) == \
                (address, broadcast, mtu, subnet)
            assert host["namespace"] == f"{lab['prefix']}{host['name']}"
        assert lab["prefix"].startswith(lab_app.prefix)
        assert kernel.namespaces(lab["prefix"]) == sorted(f"{lab['prefix']}{n}" for n in NODES)
        assert kernel.root_links() == links_before  # nothing added to the machine itself
        h4 = kernel.json("-n", f"{lab['prefix']}h4", "link")
        assert {link["ifname"]: link["mtu"] for link in h4}["eth0"] == 1280

        again = http.post("/api/lab")
        assert again.status_code == 409, again.text
        assert "already built" in again.json()["error"]
        assert http.get("/api/lab").json() == lab
        assert kernel.namespaces(lab_app.prefix) == kernel.namespaces(lab["prefix"])


def test_workers_placed_on_lab_hosts(lab_app):
    with lab_app.client() as http:
        placed = http.post("/api/workers", json={"kind": "server", "where": "h2"})
        assert placed.status_code == 422, placed.text  # no lab yet
        assert placed.json()["field"] == "where"
        build(http)
        server = http.start(kind="server", where="h2", host="0.0.0.0", port=1061)
        assert server["where"] == "h2"
        assert server["spec"]["where"] == "h2"
        assert server["local"] == ["0.0.0.0", 1061]
        client = http.start(kind="client", where="h1", host="198.18.1.3", port=1061,
                            mode="connected", message="Hi from h1", timeout=0.5)
        assert client["where"] == "h1"
        done = wait_state(http, client["id"], "finished")
        assert done["local"][0] == "198.18.1.2"
        replies = [e for e in events(http, client["id"]) if e["type"] == "reply"]
        assert [e["text"] for e in replies] == ["Your data was 10 bytes long"]
        heard = [e for e in events(http, server["id"]) if e["type"] == "received"]
        assert [e["peer"][0] for e in heard] == ["198.18.1.2"]
        listed = {w["id"]: w["where"] for w in http.get("/api/workers").json()["workers"]}
        assert listed[server["id"]] == "h2" and listed[client["id"]] == "h1"

        unknown = http.post("/api/workers", json={"kind": "server", "where": "h9"})
        assert unknown.status_code == 422, unknown.text
        assert unknown.json()["field"] == "where"
        assert "h1, h2, h3, h4" in unknown.json()["error"]

        at_home = http.start(kind="server", host="127.0.0.1", port=0)
        assert at_home["where"] is None

        gone = http.delete("/api/lab")
        assert gone.status_code == 200
        assert wait_state(http, server["id"], "stopped")["where"] == "h2"
        assert http.get(f"/api/workers/{at_home['id']}").json()["state"] == "running"
        http.stop_started()


@pytest.mark.parametrize("name", ["exchange", "broadcast", "mtu", "binding"])
def test_scenario_over_the_api(lab_app, name):
    with lab_app.client() as http:
        before = http.post(f"/api/lab/scenarios/{name}")
        assert before.status_code == 422, before.text  # no lab yet
        assert before.json()["field"] == "where"
        build(http)
        response = http.post(f"/api/lab/scenarios/{name}")
        assert response.status_code == 201, response.text
        run = response.json()
        assert run["scenario"] == name
        assert run["steps"] and all(step["ok"] for step in run["steps"]), run["steps"]
        assert http.get("/api/workers").json()["workers"] == []  # it cleaned up after itself


def test_unknown_scenario_is_refused(lab_app):
    with lab_app.client() as http:
        build(http)
        response = http.post("/api/lab/scenarios/nosuch")
        assert response.status_code == 422, response.text
        assert response.json()["field"] == "scenario"
        assert "exchange, broadcast, mtu, binding" in response.json()["error"]


def test_delete_tears_the_lab_down(lab_app, kernel):
    with lab_app.client() as http:
        lab = build(http)
        http.start(kind="listener", where="h3", port=1070)
        response = http.delete("/api/lab")
        assert response.status_code == 200, response.text
        body = response.json()
        assert sorted(body["removed"]) == sorted(f"{lab['prefix']}{n}" for n in NODES)
        assert body["built"] is False and body["hosts"] == []
        assert kernel.namespaces(lab_app.prefix) == []
        after = http.get("/api/lab").json()
        assert after["built"] is False and after["hosts"] == [] and after["can_build"] is True
        again = http.delete("/api/lab")  # idempotent
        assert again.status_code == 200 and again.json()["removed"] == []
        assert build(http)["built"] is True  # and it builds again
        assert len(kernel.namespaces(lab_app.prefix)) == len(NODES)
        http.stop_started()


WHERE_OOB = re.compile(r'<div hx-swap-oob="innerHTML:\.where-field">(.*?)</div>', re.S)


def test_lab_panel_page_routes(lab_app):
    """The Lab panel's forms, as htmx sends them (HX-Request) and without JavaScript."""
    with lab_app.client() as http:
        hx = {"HX-Request": "true"}
        panel = http.post("/lab", headers=hx)
        assert panel.status_code == 200, panel.text
        # no page reload (it would wipe the other forms): every form's "On" field in place
        assert "HX-Refresh" not in panel.headers
        oob = WHERE_OOB.search(panel.text)
        assert oob and re.findall(r'<option value="(h\d)"', oob.group(1)) == [
            "h1", "h2", "h3", "h4"]
        assert 'class="topology"' in panel.text and "MTU 1280" in panel.text
        page = http.get("/")
        assert page.status_code == 200
        where = re.search(r'<select name="where">(.*?)</select>', page.text, re.S)
        assert where, "the forms offer the lab's hosts once it is built"
        assert re.findall(r'<option value="(h\d)"', where.group(1)) == ["h1", "h2", "h3", "h4"]
        result = http.post("/lab/scenarios/mtu", headers=hx)
        assert result.status_code == 200
        assert result.text.count("✓") == 3 and "✕" not in result.text
        again = http.post("/lab", headers=hx)  # already built: the panel says so, no refresh
        assert "already built" in again.text
        down = http.post("/lab/delete", headers=hx)
        assert "HX-Refresh" not in down.headers
        emptied = WHERE_OOB.search(down.text)
        assert emptied and "<select" not in emptied.group(1)
        assert "Build the virtual LAN" in down.text
        assert '<select name="where">' not in http.get("/").text
        plain = http.post("/lab")  # no JavaScript: back to the page
        assert plain.status_code == 303 and plain.headers["location"] == "/#lab"
        assert http.get("/api/lab").json()["built"] is True


# --- the end of the app ----------------------------------------------------------------------

@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_with_workers_on_the_lab_exits_cleanly(lab_app, kernel, sig):
    with lab_app.client() as http:
        lab = build(http)
        server = http.start(kind="server", where="h2", host="0.0.0.0", port=1060)
        http.start(kind="listener", where="h4", port=1070)
        # a client still sending from h1 when the signal comes
        busy = http.start(kind="client", where="h1", host="198.18.1.3", port=1060,
                          count=100_000, interval=0.01, message="busy")
        deadline = time.monotonic() + 5
        while not any(e["type"] == "reply" for e in events(http, busy["id"])):
            assert time.monotonic() < deadline, "no reply came before the signal"
            time.sleep(0.02)
        assert server["where"] == "h2"
    assert len(kernel.namespaces(lab["prefix"])) == len(NODES)
    started = time.monotonic()
    lab_app.proc.send_signal(sig)
    code = wait_exit(lab_app.proc, EXIT_WITHIN)
    took = time.monotonic() - started
    assert code == 0, f"exit code {code} after {took:.1f} s:\n{lab_app.log()}"
    assert kernel.namespaces(lab_app.prefix) == [], "the lab must go with the app"
    log = lab_app.log()
    assert "Traceback" not in log and "ERROR" not in log, log
    assert "Application shutdown complete" in log


def test_sigkill_leaves_the_lab_and_the_next_start_removes_it(tmp_path, kernel, lab_admin):
    killed = start_server(tmp_path / "killed")
    try:
        with killed.client() as http:
            lab = build(http)
            http.start(kind="server", where="h2", host="0.0.0.0", port=1060)
        prefix = lab["prefix"]
        assert prefix.startswith(f"udplab-{killed.proc.pid}-")
        killed.proc.kill()  # SIGKILL: no shutdown, no teardown
        assert wait_exit(killed.proc, EXIT_WITHIN) == -signal.SIGKILL
        left = kernel.namespaces(prefix)
        assert left == sorted(f"{prefix}{n}" for n in NODES), "nothing could remove them"
    finally:
        killed.terminate()  # closes its log files (the process is already gone)

    try:
        restarted = start_server(tmp_path / "restarted")
    except BaseException:
        kernel.delete(kernel.namespaces(prefix))
        raise
    try:
        # start_server returns once /api/health answers: the clean-up ran before that
        assert kernel.namespaces(prefix) == [], "the next start must remove the orphans"
        with restarted.client() as http:
            assert http.get("/api/lab").json()["built"] is False
            lab = build(http)
            assert lab["prefix"].startswith(f"udplab-{restarted.proc.pid}-")
            run = http.post("/api/lab/scenarios/exchange")
            assert run.status_code == 201 and all(s["ok"] for s in run.json()["steps"])
    finally:
        kernel.delete(kernel.namespaces(prefix))  # if the clean-up did not
        pid = restarted.proc.pid
        if restarted.proc.poll() is None:
            stop_and_check(restarted)
        else:
            restarted.terminate()
        left = kernel.namespaces(f"udplab-{pid}-")
        kernel.delete(left)
        assert left == [], f"SIGTERM left {left}"


# --- without CAP_NET_ADMIN -------------------------------------------------------------------

def effective_caps(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("CapEff:"):
                return int(line.split()[1], 16)
    raise AssertionError(f"no CapEff in /proc/{pid}/status")


CAP_NET_ADMIN = 1 << 12


@pytest.fixture
def without_admin() -> list[str]:
    """A wrapper that really drops CAP_NET_ADMIN (checked), or none if we lack it anyway."""
    if not lab_module.can_build():
        return []  # this process has no CAP_NET_ADMIN: neither will udplab
    probe = subprocess.run(
        [*WITHOUT_NET_ADMIN, sys.executable, "-c",
         "from webapp.engine import lab; print(lab.can_build())"],
        cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True,
        text=True, timeout=30)
    assert probe.returncode == 0, probe.stderr
    assert probe.stdout.strip() == "False", probe.stdout
    # and the kernel agrees: a link change in a fresh network namespace is refused
    # (`ip netns add` would be no proof: it needs CAP_SYS_ADMIN, not CAP_NET_ADMIN)
    refused = subprocess.run([*WITHOUT_NET_ADMIN, "unshare", "--net", "ip", "link", "set",
                              "lo", "up"], capture_output=True, text=True, timeout=10)
    assert refused.returncode != 0 and "Operation not permitted" in refused.stderr, refused
    allowed = subprocess.run(["unshare", "--net", "ip", "link", "set", "lo", "up"],
                             capture_output=True, text=True, timeout=10)
    assert allowed.returncode == 0, allowed.stderr
    return WITHOUT_NET_ADMIN


def test_without_net_admin_the_lab_says_how_and_the_rest_works(tmp_path, kernel,
                                                               without_admin):
    server = start_server(tmp_path / "udplab", wrapper=tuple(without_admin))
    try:
        assert not effective_caps(server.proc.pid) & CAP_NET_ADMIN
        with server.client() as http:
            lab = http.get("/api/lab").json()
            assert lab["built"] is False and lab["can_build"] is False
            assert "CAP_NET_ADMIN" in lab["needs"] and "root" in lab["needs"]
            assert lab["needs"] == lab_module.NEEDS_ADMIN
            refused = http.post("/api/lab")
            assert refused.status_code == 403, refused.text
            assert refused.json()["error"] == lab_module.NEEDS_ADMIN
            assert refused.json()["field"] == "lab"
            if kernel.ip:
                assert kernel.namespaces(f"udplab-{server.proc.pid}-") == []
            scenario = http.post("/api/lab/scenarios/exchange")
            assert scenario.status_code == 422  # no lab: says to build it

            # the panel says so, with no Build button
            page = http.get("/")
            assert page.status_code == 200
            assert "needs CAP_NET_ADMIN" in page.text
            assert "Build the virtual LAN" not in page.text
            assert '<select name="where">' not in page.text

            # everything else keeps working: a loopback exchange
            srv = http.start(kind="server", host="127.0.0.1", port=0)
            client = http.start(kind="client", host="127.0.0.1", port=srv["local"][1],
                                message="still here", timeout=0.5)
            wait_state(http, client["id"], "finished")
            replies = [e for e in events(http, client["id"]) if e["type"] == "reply"]
            assert [e["text"] for e in replies] == ["Your data was 10 bytes long"]
            http.stop_started()
    finally:
        if server.proc.poll() is None:
            stop_and_check(server)
        else:
            server.terminate()
