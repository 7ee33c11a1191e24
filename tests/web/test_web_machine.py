"""Issue 4 through a live udplab: GET /api/interfaces against the kernel, the port lookup,
socket options of a live worker, the binding explorer, broadcast and the MTU probe, and the
page routes and fragments behind the "This machine", binding and options panels.

Real uvicorn processes and real datagrams, to loopback only (127.0.0.1, 127.0.0.2,
127.255.255.255). The machine's other addresses are bound at most, never sent to, and
255.255.255.255 is only checked to be refused or offered, never used.
"""

import html
import ipaddress
import json
import re
import shutil
import subprocess
import uuid
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import quote

import pytest

from live import LiveServer, start_server, stop_and_check, wait_state
from webapp.engine.policy import LIMITED_BROADCAST, Policy

LOOPBACK_BROADCAST = "127.255.255.255"
QUICK = {"timeout": 0.2, "give_up_after": 0.5}
BINDING_STEPS = ["bound", "bound", "conflict", "reached the 127.0.0.1 server",
                 "reached the 127.0.0.2 server", "bound", "conflict",
                 "reached the 0.0.0.0 server",
                 # IPv6 (issue 16): beside 0.0.0.0, then dual-stack alone
                 "bound", "bound", "conflict", "reached the ::1 server",
                 "bound", "reached the :: server as ::ffff:127.0.0.1",
                 "Connection refused"]


def unique(prefix: str) -> str:
    """A worker name no other test (or earlier run on the session server) uses."""
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def launch(api, **spec) -> dict:
    """POST /api/workers expecting 201 (the worker may already be done: a broadcast sends
    once); remembered so the `api` fixture stops it."""
    response = api.post("/api/workers", json=spec)
    assert response.status_code == 201, response.text
    worker = response.json()
    api.started.append(worker["id"])
    return worker


def events(api, worker_id: str) -> list[dict]:
    response = api.get(f"/api/workers/{worker_id}/events")
    assert response.status_code == 200, response.text
    return response.json()["events"]


def ip_addr() -> list[dict]:
    """What iproute2 reports: `ip -j addr`."""
    ip = shutil.which("ip")
    assert ip, "iproute2's `ip` is needed to check the interface list against the kernel"
    out = subprocess.run([ip, "-j", "addr"], capture_output=True, text=True, timeout=10,
                         check=True).stdout
    return json.loads(out)


def kernel_ipv4() -> list[str]:
    return [a["local"] for k in ip_addr() for a in k["addr_info"] if a["family"] == "inet"]


def non_loopback_ipv4() -> str | None:
    """An IPv4 address of this machine outside 127.0.0.0/8 (bound, never sent to)."""
    return next((a for a in kernel_ipv4() if not ipaddress.ip_address(a).is_loopback), None)


def text_of(fragment: str) -> str:
    """A fragment's text as a reader sees it: tags gone, entities decoded, spaces folded."""
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", fragment)).split())


class Page(HTMLParser):
    """The bits of the dashboard these tests look at: datalists, host inputs, elements by id."""

    def __init__(self, source: str):
        super().__init__()
        self.datalists: dict[str, list[str]] = {}
        self.inputs: list[dict[str, str]] = []
        self.forms: dict[str, str] = {}  # input -> the id of the form around it
        self._datalist: str | None = None
        self._form: str | None = None
        self.feed(source)

    def handle_starttag(self, tag, attrs):
        attrs = {k: v or "" for k, v in attrs}
        if tag == "datalist":
            self._datalist = attrs.get("id")
            self.datalists[self._datalist] = []
        elif tag == "option" and self._datalist:
            self.datalists[self._datalist].append(attrs.get("value", ""))
        elif tag == "form":
            self._form = attrs.get("id")
        elif tag == "input":
            self.inputs.append({**attrs, "form": self._form or ""})

    def handle_endtag(self, tag):
        if tag == "datalist":
            self._datalist = None
        elif tag == "form":
            self._form = None


def section(page: str, label: str) -> str:
    """The HTML of the <section aria-label=label> (sections are not nested)."""
    start = page.index(f'aria-label="{label}"')
    return page[start:page.index("</section>", start)]


@pytest.fixture
def browser_like(live):
    """What a browser on the dashboard sends: the session cookie and the exact Origin."""
    with live.client(auth=False, headers={**live.cookie, "Origin": live.origin}) as http:
        yield http
        http.stop_started()


@pytest.fixture
def limited(tmp_path) -> LiveServer:
    """A udplab started with --allow-limited-broadcast."""
    server = start_server(tmp_path / "udplab", args=("--allow-limited-broadcast",))
    assert server.proc.args[-1] == "--allow-limited-broadcast"
    yield server
    stop_and_check(server)


# --- 1. interfaces --------------------------------------------------------------------------


def test_api_interfaces_match_the_kernel(api):
    response = api.get("/api/interfaces")
    assert response.status_code == 200
    body = response.json()
    kernel = ip_addr()
    got = body["interfaces"]
    assert [i["name"] for i in got] == [k["ifname"] for k in kernel]
    for i, k in zip(got, kernel, strict=True):
        assert i["index"] == k["ifindex"], k["ifname"]
        assert i["mtu"] == k["mtu"], k["ifname"]
        assert i["state"] == ("up" if "UP" in k["flags"] else "down"), k["ifname"]
        assert i["loopback"] == ("LOOPBACK" in k["flags"])
        want = sorted((("ipv4" if a["family"] == "inet" else "ipv6"), a["local"], a["prefixlen"])
                      for a in k["addr_info"] if a["family"] in ("inet", "inet6"))
        assert sorted((a["family"], a["address"], a["prefix"]) for a in i["addresses"]) == want
        for a in k["addr_info"]:
            mine = next(x for x in i["addresses"] if x["address"] == a["local"])
            network = ipaddress.ip_network(f"{a['local']}/{a['prefixlen']}", strict=False)
            assert mine["netmask"] == str(network.netmask)
            if a["family"] == "inet" and "broadcast" in a:
                assert mine["broadcast"] == a["broadcast"], a
            if a["family"] == "inet6":
                assert mine["broadcast"] is None


def test_api_interfaces_offer_broadcast_destinations(api):
    body = api.get("/api/interfaces").json()
    offered = [b["address"] for b in body["broadcast"]]
    assert offered[0] == LOOPBACK_BROADCAST
    assert all(b["label"] for b in body["broadcast"])
    subnets = [a["broadcast"] for k in ip_addr() for a in k["addr_info"]
               if a["family"] == "inet" and "broadcast" in a]
    for address in subnets:
        assert address in offered
    assert LIMITED_BROADCAST not in offered
    assert len(offered) == len(set(offered))


def test_page_lists_interfaces_and_offers_their_addresses(api):
    response = api.get("/")
    assert response.status_code == 200
    page = response.text
    machine = section(page, "This machine")
    rows = re.findall(r"<tr class=\"iface-[^\"]*\">(.*?)</tr>", machine, re.S)
    kernel = ip_addr()
    assert len(rows) == len(kernel)
    for row, k in zip(rows, kernel, strict=True):
        cells = re.findall(r"<td>(.*?)</td>", row, re.S)
        assert f"<code>{k['ifname']}</code>" in cells[0]
        assert text_of(cells[1]).split()[0] == ("up" if "UP" in k["flags"] else "down")
        assert text_of(cells[2]) == str(k["mtu"])
        for a in k["addr_info"]:
            assert f"{a['local']}/{a['prefixlen']}" in text_of(cells[3])
            if "broadcast" in a:
                assert a["broadcast"] in text_of(cells[3])
    parsed = Page(page)
    hosts = parsed.datalists["hosts"]
    assert hosts[:2] == ["127.0.0.1", "0.0.0.0"]
    for address in kernel_ipv4():
        assert address in hosts, address
    broadcasts = parsed.datalists["broadcasts"]
    assert broadcasts[0] == LOOPBACK_BROADCAST
    assert LIMITED_BROADCAST not in broadcasts
    assert parsed.datalists["groups"][:2] == ["239.255.0.1", "232.1.1.1"]
    # every host field offers the list: the addresses for binding and sending, or the
    # broadcast destinations in the Broadcast form
    host_inputs = [i for i in parsed.inputs if i.get("name") == "host"]
    assert len(host_inputs) >= 6
    for field in host_inputs:
        want = {"broadcast-form": "broadcasts", "multicast-form": "groups"}.get(field["form"],
                                                                               "hosts")
        assert field.get("list") == want, field


def test_page_host_list_offers_ipv6_interface_addresses(api):
    """The issue: every host field offers the interfaces' addresses, IPv4 and IPv6 (a global
    or unique-local IPv6 address can be bound as it is; link-local ones need a scope)."""
    hosts = Page(api.get("/").text).datalists["hosts"]
    assert "::1" in hosts
    for k in ip_addr():
        for a in k["addr_info"]:
            if a["family"] == "inet6" and not ipaddress.ip_address(a["local"]).is_link_local:
                assert a["local"] in hosts, (a["local"], hosts)


# --- 2. binding -----------------------------------------------------------------------------


def test_binding_conflicts_through_the_api(api):
    one = api.start(kind="server", name=unique("one"), host="127.0.0.1", port=0)
    port = one["local"][1]
    two = api.start(kind="server", name=unique("two"), host="127.0.0.2", port=port)
    assert two["local"] == ["127.0.0.2", port]
    response = api.post("/api/workers", json={"kind": "server", "host": "0.0.0.0",
                                              "port": port})
    assert response.status_code == 409
    error = response.json()
    assert error["field"] == "port"
    assert "Address already in use" in error["error"]
    assert (f"0.0.0.0 means every address of this machine, and {one['id']} already holds "
            f"127.0.0.1 port {port}") in error["error"]
    for host, server in (("127.0.0.1", one), ("127.0.0.2", two)):
        client = api.start(kind="client", host=host, port=port, **QUICK)
        assert wait_state(api, client["id"], {"finished", "failed"})["counters"]["replies"] == 1
    assert api.get(f"/api/workers/{one['id']}").json()["counters"]["received"] == 1
    assert api.get(f"/api/workers/{two['id']}").json()["counters"]["received"] == 1


def test_binding_wildcard_first_covers(api):
    wild = api.start(kind="server", name=unique("wild"), host="0.0.0.0", port=0)
    port = wild["local"][1]
    response = api.post("/api/workers", json={"kind": "server", "host": "127.0.0.1",
                                              "port": port})
    assert response.status_code == 409
    assert (f"{wild['id']} is bound to 0.0.0.0, every address of this machine, which "
            f"already covers 127.0.0.1") in response.json()["error"]
    listener = api.start(kind="listener", name=unique("ear"), host="0.0.0.0", port=0)
    reused = api.start(kind="server", name=unique("reuse"), host="127.0.0.1",
                       port=listener["local"][1], reuse_addr=True)
    assert reused["local"] == ["127.0.0.1", listener["local"][1]]


def run_ids(api) -> set[str]:
    return {w["id"] for w in api.get("/api/workers").json()["workers"]}


def test_binding_explorer_api(api):
    before = run_ids(api)
    response = api.post("/api/experiments/binding")
    assert response.status_code == 201, response.text
    run = response.json()
    assert [s["outcome"] for s in run["steps"]] == BINDING_STEPS, run["steps"]
    assert all(s["action"] and s["why"] for s in run["steps"])
    assert f"already holds 127.0.0.1 port {run['port']}" in run["steps"][2]["why"]
    assert "covers 127.0.0.1" in run["steps"][6]["why"]
    left = {w for w in run_ids(api) - before if w.startswith(f"{run['id']}-")}
    assert left == set()


def test_binding_explorer_api_with_an_interface(api):
    interface = non_loopback_ipv4()
    if interface is None:
        pytest.skip("this machine has no IPv4 address outside loopback")
    response = api.post("/api/experiments/binding", json={"interface": interface})
    assert response.status_code == 201, response.text
    run = response.json()
    assert [s["outcome"] for s in run["steps"]] == \
        BINDING_STEPS[:3] + ["bound"] + BINDING_STEPS[3:]
    assert run["steps"][3]["action"] == f"bind {interface} port {run['port']}"
    assert not any(w.startswith(f"{run['id']}-") for w in run_ids(api))


def test_binding_explorer_api_bad_bodies(api):
    for body in ({"interface": 5}, {"nope": 1}, [1]):
        response = api.post("/api/experiments/binding", json=body)
        assert response.status_code == 422, body
        assert "interface" in response.json()["error"]


def test_binding_explorer_page_button(browser_like):
    response = browser_like.post("/experiments/binding", headers={"HX-Request": "true"},
                                 data={"interface": ""})
    assert response.status_code == 200
    fragment = response.text
    assert fragment.lstrip().startswith('<div id="binding-result">')
    assert "<html" not in fragment
    outcomes = [text_of(c) for c in re.findall(r'<td class="verdict">(.*?)</td>', fragment)]
    assert outcomes == BINDING_STEPS
    assert fragment.count("outcome-bad") == 4  # three conflicts and the refusal
    # without JavaScript: the whole page, with the table in its panel
    page = browser_like.post("/experiments/binding", data={"interface": ""})
    assert page.status_code == 200
    panel = section(page.text, "Binding explorer")
    assert [text_of(c) for c in re.findall(r'<td class="verdict">(.*?)</td>', panel)] == \
        BINDING_STEPS


# --- 3. broadcast -------------------------------------------------------------------------------


def test_broadcast_reaches_the_wildcard_listeners_only(api):
    a = api.start(kind="listener", name=unique("wild-a"), host="0.0.0.0", port=0)
    port = a["local"][1]
    b = api.start(kind="listener", name=unique("wild-b"), host="0.0.0.0", port=port)
    narrow = api.start(kind="listener", name=unique("narrow"), host="127.0.0.1", port=port)
    server = api.start(kind="server", name=unique("srv"), host="127.0.0.1", port=port,
                       reuse_addr=True, reply="none")
    shout = launch(api, kind="broadcast", name=unique("shout"), port=port, message="hi all")
    assert shout["target"] == [LOOPBACK_BROADCAST, port]
    done = wait_state(api, shout["id"], {"finished", "failed"})
    assert done["state"] == "finished"
    sent = [e for e in events(api, shout["id"]) if e["type"] == "sent"]
    assert len(sent) == 1
    assert sent[0]["reached"] == sorted([a["id"], b["id"]])
    assert f"heard by {', '.join(sorted([a['id'], b['id']]))}" in sent[0]["message"]
    for listener in (a, b):
        evs = events(api, listener["id"])
        assert evs[0]["message"] == f"Listening for datagrams at ('0.0.0.0', {port})"
        heard = [e for e in evs if e["type"] == "received"]
        assert len(heard) == 1
        assert re.fullmatch(r"The client at \('127\.0\.0\.1', \d+\) says: 'hi all'",
                            heard[0]["message"]), heard[0]["message"]
    assert events(api, narrow["id"])[0]["message"] == \
        f"Listening for datagrams at ('127.0.0.1', {port})"
    assert api.get(f"/api/workers/{narrow['id']}").json()["counters"]["received"] == 0
    assert api.get(f"/api/workers/{server['id']}").json()["counters"]["received"] == 0


def test_broadcast_without_so_broadcast_is_an_error_event(api):
    ear = api.start(kind="listener", name=unique("ear"), host="0.0.0.0", port=0)
    shout = launch(api, kind="broadcast", port=ear["local"][1], so_broadcast=False)
    done = wait_state(api, shout["id"], {"finished", "failed"})
    assert done["counters"]["errors"] == 1 and done["counters"]["sent"] == 0
    errors = [e for e in events(api, shout["id"]) if e["type"] == "error"]
    assert len(errors) == 1
    assert errors[0]["errno"] == 13
    assert "Permission denied" in errors[0]["message"]
    assert "SO_BROADCAST" in errors[0]["message"]


def test_limited_broadcast_is_refused_by_default(api):
    before = run_ids(api)
    response = api.post("/api/workers", json={"kind": "broadcast", "host": LIMITED_BROADCAST,
                                              "port": 9})
    assert response.status_code == 403
    assert "--allow-limited-broadcast" in response.json()["error"]
    assert run_ids(api) == before


def test_limited_broadcast_offered_when_the_operator_allows_it(limited):
    with limited.client() as api:
        offered = [b["address"] for b in api.get("/api/interfaces").json()["broadcast"]]
        assert offered[0] == LOOPBACK_BROADCAST
        assert LIMITED_BROADCAST in offered
        assert LIMITED_BROADCAST in Page(api.get("/").text).datalists["broadcasts"]
    # nothing is sent to it, even here: only the policy object is asked
    Policy(allow_limited_broadcast=True).check("broadcast", LIMITED_BROADCAST)


# --- 4. MTU probe ------------------------------------------------------------------------------


def test_mtu_probe_through_the_api(api):
    sink = api.start(kind="server", name=unique("sink"), port=0, reply="none")
    port = sink["local"][1]
    probe = launch(api, kind="mtu-probe", name=unique("mtu"), port=port)
    assert wait_state(api, probe["id"], {"finished", "failed"})["state"] == "finished"
    evs = [e for e in events(api, probe["id"]) if e["type"] != "stopped"]
    sent = next(n for n, e in enumerate(evs) if e["type"] == "sent")
    assert all(e["type"] == "mtu" for e in evs[:sent])  # at most a note before it
    assert evs[sent]["message"] == \
        f"The big datagram was sent! (65000 bytes to ('127.0.0.1', {port}))"
    assert (evs[sent + 1]["type"], evs[sent + 1]["message"], evs[sent + 1]["mtu"]) == \
        ("mtu", "Actual MTU: 65535", 65535)
    assert evs[-1]["type"] == "mtu"
    assert evs[-1]["payload"] == 65507
    assert "65535 (MTU) − 20 (IPv4 header) − 8 (UDP header) = 65507" in evs[-1]["message"]
    big = launch(api, kind="mtu-probe", port=port, size=65507)
    wait_state(api, big["id"], {"finished", "failed"})
    first = next(e for e in events(api, big["id"]) if e["type"] in ("sent", "error"))
    assert first["type"] == "sent" and first["size"] == 65507


def test_mtu_probe_ipv6_finds_mtu_minus_48(api):
    response = api.post("/api/workers", json={"kind": "mtu-probe", "host": "::1", "port": 9,
                                              "size": 1000})
    assert response.status_code == 201, response.text
    probe = response.json()
    wait_state(api, probe["id"], {"finished", "failed"})
    final = [e for e in events(api, probe["id"]) if e["type"] == "mtu"][-1]
    assert final["payload"] == 65536 - 48 and "40 (IPv6 header)" in final["message"]


# --- 5. socket options -------------------------------------------------------------------------


def default_ttl() -> int:
    return int(Path("/proc/sys/net/ipv4/ip_default_ttl").read_text())


def test_options_read_and_set(api):
    server = api.start(kind="server", name=unique("opts"), port=0)
    url = f"/api/workers/{server['id']}/options"
    response = api.get(url)
    assert response.status_code == 200
    rows = {r["name"]: r for r in response.json()["options"]}
    assert set(rows) == {"SO_BROADCAST", "SO_DONTROUTE", "SO_TYPE", "SO_RCVBUF", "SO_SNDBUF",
                         "SO_REUSEADDR", "IP_TTL", "IP_MTU_DISCOVER"}
    assert (rows["SO_TYPE"]["text"], rows["SO_TYPE"]["settable"]) == ("SOCK_DGRAM", False)
    assert rows["IP_TTL"]["value"] == default_ttl() == 64
    assert (rows["SO_BROADCAST"]["value"], rows["SO_BROADCAST"]["text"]) == (0, "off")

    changed = api.post(url, json={"name": "SO_RCVBUF", "value": 4096})
    assert changed.status_code == 200, changed.text
    assert changed.json()["asked"] == 4096
    assert changed.json()["value"] == 8192
    assert changed.json()["text"] == "8192 bytes"
    rows = {r["name"]: r for r in api.get(url).json()["options"]}
    assert rows["SO_RCVBUF"]["value"] == 8192

    on = api.post(url, json={"name": "SO_BROADCAST", "value": "on"})
    assert on.status_code == 200 and on.json()["text"] == "on"
    assert {r["name"]: r for r in api.get(url).json()["options"]}["SO_BROADCAST"]["value"] == 1
    pmtu = api.post(url, json={"name": "IP_MTU_DISCOVER", "value": "DO"})
    assert pmtu.status_code == 200
    assert (pmtu.json()["value"], pmtu.json()["text"]) == (2, "IP_PMTUDISC_DO")


@pytest.mark.parametrize("body, words", [
    ({"name": "SO_NOSUCH", "value": 1}, "Unknown socket option"),
    ({"name": "SO_TYPE", "value": 1}, "can only be read"),
    ({"name": "IP_TTL", "value": 0}, "from 1 to 255"),
    ({"name": "IP_TTL", "value": 999}, "from 1 to 255"),
    ({"name": "IP_TTL", "value": "abc"}, "from 1 to 255"),
    ({"name": "SO_RCVBUF"}, "must be"),
    ({"name": 5, "value": 1}, "must be"),
])
def test_options_bad_sets_are_plain_422s(api, body, words):
    server = api.start(kind="server", name=unique("opts"), port=0)
    url = f"/api/workers/{server['id']}/options"
    ttl = {r["name"]: r for r in api.get(url).json()["options"]}["IP_TTL"]["value"]
    response = api.post(url, json=body)
    assert response.status_code == 422, response.text
    assert words in response.json()["error"]
    assert "Traceback" not in response.text
    assert {r["name"]: r for r in api.get(url).json()["options"]}["IP_TTL"]["value"] == ttl


def test_options_of_a_stopped_or_unknown_worker(api):
    server = api.start(kind="server", name=unique("gone"), port=0)
    api.delete(f"/api/workers/{server['id']}")
    url = f"/api/workers/{server['id']}/options"
    assert api.get(url).status_code == 409
    assert "no open socket" in api.get(url).json()["error"]
    assert api.post(url, json={"name": "SO_RCVBUF", "value": 4096}).status_code == 409
    assert api.get("/api/workers/no-such-worker/options").status_code == 404


def test_options_panel_fragments(api, browser_like):
    server = api.start(kind="server", name=unique("panel"), port=0)
    fragment = browser_like.get("/options", params={"options": server["id"]})
    assert fragment.status_code == 200
    assert fragment.text.lstrip().startswith('<div id="options-body">')
    assert f"Socket options of {server['id']}" in text_of(fragment.text)
    assert re.search(r'data-option="SO_TYPE">SOCK_DGRAM', fragment.text)
    assert fragment.text.count('<button type="submit">Set</button>') == 7  # SO_TYPE: read only

    changed = browser_like.post(f"/workers/{server['id']}/options",
                                headers={"HX-Request": "true"},
                                data={"name": "SO_RCVBUF", "value": "4096"})
    assert changed.status_code == 200
    words = text_of(changed.text)
    assert "Set SO_RCVBUF to 4096: the kernel now holds 8192 bytes" in words
    assert "it doubles buffer sizes" in words
    assert re.search(r'data-option="SO_RCVBUF">8192 bytes', changed.text)

    bad = browser_like.post(f"/workers/{server['id']}/options",
                            headers={"HX-Request": "true"},
                            data={"name": "IP_TTL", "value": "0"})
    assert bad.status_code == 200
    assert '<p class="error">IP_TTL takes a value from 1 to 255</p>' in bad.text

    # without JavaScript: a redirect back to the page, which shows the panel filled in
    plain = browser_like.post(f"/workers/{server['id']}/options",
                              data={"name": "SO_SNDBUF", "value": "8192"})
    assert plain.status_code == 303
    assert plain.headers["location"] == f"/?options={quote(server['id'])}#options"
    page = browser_like.get(f"/?options={server['id']}")
    panel = section(page.text, "Socket options")
    assert re.search(r'data-option="SO_SNDBUF">16384 bytes', panel)
    assert f'value="{server["id"]}"' in panel

    unknown = browser_like.get("/options", params={"options": "no-such-worker"})
    assert "There is no worker 'no-such-worker'" in html.unescape(unknown.text)


# --- 6. ports -------------------------------------------------------------------------------


def ephemeral() -> list[int]:
    return [int(n) for n in Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()]


def test_api_ports(api):
    domain = api.get("/api/ports/domain")
    assert domain.status_code == 200
    assert {k: domain.json()[k] for k in ("port", "name", "range", "protocol")} == \
        {"port": 53, "name": "domain", "range": "well-known", "protocol": "udp"}
    assert api.get("/api/ports/53").json()["name"] == "domain"
    registered = api.get("/api/ports/1060").json()
    assert (registered["range"], registered["name"]) == ("registered", None)
    dynamic = api.get("/api/ports/50000").json()
    low, high = ephemeral()
    assert dynamic["range"] == "dynamic"
    assert dynamic["ephemeral"] == [low, high]
    assert dynamic["in_ephemeral"] == (low <= 50000 <= high)
    inside = api.get(f"/api/ports/{low}").json()
    assert inside["in_ephemeral"] is True
    for bad in ("nosuch", "70000"):
        response = api.get(f"/api/ports/{bad}")
        assert response.status_code == 422, bad
        assert response.json()["field"] == "port"


def test_port_lookup_box(api):
    fragment = api.get("/ports", params={"port": "ntp"})
    assert fragment.status_code == 200
    assert fragment.text.lstrip().startswith('<div id="port-result"')
    words = text_of(fragment.text)
    assert re.search(r"UDP port 123 is ntp ?: well-known \(0–1023\)", words), words
    low, high = ephemeral()
    assert f"ephemeral ports from {low} to {high}" in words
    bad = api.get("/ports", params={"port": "nosuch"})
    assert "No UDP service is named 'nosuch'" in html.unescape(bad.text)
    # without JavaScript the form GETs the page, which shows the answer in its panel
    page = api.get("/", params={"port": "ntp"})
    assert page.status_code == 200
    machine = section(page.text, "This machine")
    assert "UDP port 123 is ntp" in text_of(machine)
    assert 'value="ntp"' in machine

