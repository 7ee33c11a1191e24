"""Issue 5 in the engine: the virtual LAN of network namespaces (webapp/engine/lab/), sockets
made inside them (netns.py), workers placed on its hosts (`where`) and its one-click scenarios.

Real namespaces, checked against the kernel with `ip -j`. Needs CAP_NET_ADMIN (CI runs as
root: there a skip is a failure). Every datagram stays inside the namespaces the test built
(198.18.1.0/24 and 198.18.2.0/24 exist nowhere else) or on loopback; nothing is sent from the
machine's own namespace to a lab address, and nothing to 255.255.255.255 (refused by policy).
"""

import asyncio
import errno
import fcntl
import json
import ipaddress
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from waiting import ended, of_type, until
from webapp.engine import BadSpec, Conflict, Supervisor
from webapp.engine import lab as lab_module
from webapp.engine import netns
from webapp.engine.lab import Lab
from webapp.engine.lab.scenarios import SCENARIOS, LabScenarios

pytestmark = pytest.mark.usefixtures("lab_admin")

LAN = ipaddress.ip_network("198.18.1.0/24")
FAR = ipaddress.ip_network("198.18.2.0/24")
HOSTS = {  # name: (address, broadcast, mtu, subnet)
    "h1": ("198.18.1.2", "198.18.1.255", 1500, "198.18.1.0/24"),
    "h2": ("198.18.1.3", "198.18.1.255", 1500, "198.18.1.0/24"),
    "h3": ("198.18.1.4", "198.18.1.255", 1500, "198.18.1.0/24"),
    "h4": ("198.18.2.4", "198.18.2.255", 1280, "198.18.2.0/24"),
}
NODES = ("h1", "h2", "h3", "h4", "router", "switch")
SIOCGSKNS = 0x894C  # linux/sockios.h: a file descriptor of the socket's network namespace


def addresses(kernel, namespace: str) -> dict[str, dict]:
    """ifname -> {"mtu", "inet": [(local, prefixlen, broadcast)], "state", "master"}."""
    out = {}
    for link in kernel.json("-n", namespace, "addr"):
        out[link["ifname"]] = {
            "mtu": link["mtu"],
            "state": link.get("operstate"),
            "inet": [(a["local"], a["prefixlen"], a.get("broadcast"))
                     for a in link.get("addr_info", []) if a["family"] == "inet"],
        }
    return out


def lab_routes_in_root(kernel) -> list[dict]:
    """Routes of the machine's own namespace that lead into a lab subnet."""
    hits = []
    for route in kernel.root_routes():
        dst = route.get("dst", "")
        if dst in ("default", "") or ":" in dst:
            continue
        try:
            net = ipaddress.ip_network(dst, strict=False)
        except ValueError:
            continue
        if net.overlaps(LAN) or net.overlaps(FAR):
            hits.append(route)
    return hits


# --- the Lab object -----------------------------------------------------------------------

def test_build_makes_six_namespaces_with_a_per_instance_prefix(kernel):
    lab = Lab()
    assert re.fullmatch(rf"udplab-{os.getpid()}-\d+-", lab.prefix), lab.prefix
    assert not lab.built and lab.to_dict()["hosts"] == []
    links_before = kernel.root_links()
    try:
        lab.build()
        assert lab.built
        assert kernel.namespaces(lab.prefix) == sorted(lab.ns(n) for n in NODES)
        assert all(name.startswith(lab.prefix) for name in kernel.namespaces(lab.prefix))
        # nothing in the machine's own namespace: no new interface, no route to the lab
        assert kernel.root_links() == links_before
        assert lab_routes_in_root(kernel) == []
    finally:
        removed = lab.teardown()
    assert sorted(removed) == sorted(lab.ns(n) for n in NODES)
    assert kernel.namespaces(lab.prefix) == []
    assert kernel.root_links() == links_before
    assert not lab.built and lab.hosts == {} and lab.to_dict()["hosts"] == []


def test_to_dict_describes_every_host_and_matches_the_kernel(kernel):
    lab = Lab()
    try:
        lab.build()
        described = lab.to_dict()
        assert described["built"] is True and described["can_build"] is True
        assert described["needs"] is None
        assert described["prefix"] == lab.prefix
        assert [h["name"] for h in described["hosts"]] == ["h1", "h2", "h3", "h4"]
        for host in described["hosts"]:
            address, broadcast, mtu, subnet = HOSTS[host["name"]]
            assert host["address"] == address
            assert host["broadcast"] == broadcast
            assert host["mtu"] == mtu
            assert host["subnet"] == subnet
            assert host["namespace"] == lab.ns(host["name"])
            assert host["gateway"] == ("198.18.1.1" if subnet == str(LAN) else "198.18.2.1")
            # the kernel agrees: one eth0 with that address, broadcast and MTU, and lo
            links = addresses(kernel, host["namespace"])
            assert set(links) == {"lo", "eth0"}, links
            assert links["eth0"]["mtu"] == mtu
            assert links["eth0"]["inet"] == [(address, 24, broadcast)]
            assert links["eth0"]["state"] == "UP"
            assert links["lo"]["inet"] == [("127.0.0.1", 8, None)]
            default = [r for r in kernel.json("-n", host["namespace"], "route")
                       if r["dst"] == "default"]
            assert [r["gateway"] for r in default] == [host["gateway"]]
        assert described["subnets"] == [
            {"name": "lan", "network": "198.18.1.0/24", "mtu": 1500},
            {"name": "far", "network": "198.18.2.0/24", "mtu": 1280}]
        assert described["router"]["namespace"] == lab.ns("router")
        router = addresses(kernel, lab.ns("router"))
        assert router["lan0"]["inet"] == [("198.18.1.1", 24, "198.18.1.255")]
        assert router["lan0"]["mtu"] == 1500
        assert router["far0"]["inet"] == [("198.18.2.1", 24, "198.18.2.255")]
        assert router["far0"]["mtu"] == 1280
        forwarding = subprocess.run(
            ["ip", "netns", "exec", lab.ns("router"), "sysctl", "-n", "net.ipv4.ip_forward"],
            capture_output=True, text=True, timeout=10, check=True).stdout.strip()
        assert forwarding == "1"
        # the switch: a bridge with the router's and h1..h3's ports on it, all up
        switch = {link["ifname"]: link for link in kernel.json("-n", lab.ns("switch"), "link")}
        assert set(switch) == {"lo", "br0", "p0", "p1", "p2", "p3"}
        for port in ("p0", "p1", "p2", "p3"):
            assert switch[port].get("master") == "br0"
            assert switch[port]["mtu"] == 1500
    finally:
        lab.teardown()


def test_two_labs_in_one_process_do_not_collide(kernel):
    first, second = Lab(), Lab()
    assert first.prefix != second.prefix
    assert not first.prefix.startswith(second.prefix)
    assert not second.prefix.startswith(first.prefix)
    try:
        first.build()
        second.build()  # same host names and addresses, other namespaces: no clash
        assert kernel.namespaces(first.prefix) == sorted(first.ns(n) for n in NODES)
        assert kernel.namespaces(second.prefix) == sorted(second.ns(n) for n in NODES)
        assert first.host("h1").address == second.host("h1").address == "198.18.1.2"
        assert first.host("h1").namespace != second.host("h1").namespace
        # tearing one down leaves the other whole
        assert sorted(first.teardown()) == sorted(first.ns(n) for n in NODES)
        assert kernel.namespaces(first.prefix) == []
        assert kernel.namespaces(second.prefix) == sorted(second.ns(n) for n in NODES)
        assert second.built
    finally:
        first.teardown()
        second.teardown()
    assert kernel.namespaces(second.prefix) == []


def test_build_twice_is_a_conflict_and_teardown_is_idempotent(kernel):
    lab = Lab()
    try:
        lab.build()
        with pytest.raises(Conflict, match="already built"):
            lab.build()
        assert kernel.namespaces(lab.prefix) == sorted(lab.ns(n) for n in NODES)
        assert lab.built  # the refused second build changed nothing
    finally:
        assert len(lab.teardown()) == len(NODES)
    assert lab.teardown() == []
    assert lab.teardown() == []
    assert kernel.namespaces(lab.prefix) == []
    lab.build()  # and it can be built again after a teardown
    try:
        assert kernel.namespaces(lab.prefix) == sorted(lab.ns(n) for n in NODES)
    finally:
        lab.teardown()
    assert kernel.namespaces(lab.prefix) == []


def test_a_failed_build_leaves_nothing_behind(kernel):
    lab = Lab()
    blocker = lab.ns("h2")  # taken before the build: `ip netns add` of h2 fails
    kernel.run("netns", "add", blocker)
    try:
        with pytest.raises(Conflict, match="Building the lab failed"):
            lab.build()
        assert not lab.built and lab.hosts == {}
        assert kernel.namespaces(lab.prefix) == []
    finally:
        kernel.delete(kernel.namespaces(lab.prefix))


def test_host_names_the_field_where(kernel):
    lab = Lab()
    with pytest.raises(BadSpec, match="build it first") as info:
        lab.host("h1")
    assert info.value.field == "where"
    try:
        lab.build()
        assert lab.host("h4").mtu == 1280
        with pytest.raises(BadSpec, match="no host 'h9'") as info:
            lab.host("h9")
        assert info.value.field == "where"
        assert "h1, h2, h3, h4" in info.value.message
        # issue 16: the IPv6 subnets and the links' own fe80::/64 too
        assert lab.networks() == [LAN, FAR, *map(ipaddress.ip_network, (
            "2001:2:0:1::/64", "2001:2:0:2::/64", "fe80::/64"))]
    finally:
        lab.teardown()
    assert lab.networks() == []


def test_clean_orphans_removes_only_the_labs_of_dead_processes(kernel):
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait(timeout=10)
    orphan = f"{lab_module.PREFIX}{gone.pid}-1-h1"
    alive = f"{lab_module.PREFIX}{os.getpid()}-999-h1"  # ours: this process is alive
    try:
        kernel.run("netns", "add", orphan)
        kernel.run("netns", "add", alive)
        removed = lab_module.clean_orphans()
        assert orphan in removed
        assert alive not in removed
        assert orphan not in kernel.namespaces()
        assert alive in kernel.namespaces()
    finally:
        kernel.delete([orphan, alive])


# --- sockets inside a namespace ------------------------------------------------------------

def test_socket_in_a_namespace_binds_the_hosts_address(kernel):
    lab = Lab()
    try:
        lab.build()
        h1 = lab.host("h1")
        with netns.socket_in(h1.namespace, socket.AF_INET) as sock:
            sock.bind((h1.address, 0))  # h1's address exists in h1's namespace
            assert sock.getsockname()[0] == h1.address
            # and the socket really lives in h1's namespace (SIOCGSKNS gives its netns)
            ns_fd = fcntl.ioctl(sock.fileno(), SIOCGSKNS)
            try:
                assert os.fstat(ns_fd).st_ino == os.stat(netns.path(h1.namespace)).st_ino
            finally:
                os.close(ns_fd)
        with netns.new_socket(socket.AF_INET, namespace=h1.namespace) as sock:
            sock.bind((h1.address, 0))
        # in the machine's own namespace that address does not exist
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as here:
            with pytest.raises(OSError) as info:
                here.bind((h1.address, 0))
            assert info.value.errno == errno.EADDRNOTAVAIL
        with netns.new_socket(socket.AF_INET) as here:
            with pytest.raises(OSError) as info:
                here.bind((h1.address, 0))
            assert info.value.errno == errno.EADDRNOTAVAIL
        # the calling thread never left the machine's namespace
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as here:
            ns_fd = fcntl.ioctl(here.fileno(), SIOCGSKNS)
            try:
                assert os.fstat(ns_fd).st_ino == os.stat("/proc/thread-self/ns/net").st_ino
                assert os.fstat(ns_fd).st_ino != os.stat(netns.path(h1.namespace)).st_ino
            finally:
                os.close(ns_fd)
    finally:
        lab.teardown()


def test_socket_in_an_unknown_namespace_raises_in_the_caller(kernel):
    with pytest.raises(FileNotFoundError):
        netns.socket_in(f"{lab_module.PREFIX}{os.getpid()}-nosuch-h1", socket.AF_INET)


# --- workers on the lab ---------------------------------------------------------------------

async def test_client_on_h1_and_server_on_h2_exchange(built_lab):
    async with built_lab() as sup:
        server = await sup.start({"kind": "server", "where": "h2", "host": "0.0.0.0",
                                  "port": 1060})
        client = await sup.start({"kind": "client", "where": "h1", "host": "198.18.1.3",
                                  "port": 1060, "mode": "connected", "message": "Hello, h2!",
                                  "count": 3, "interval": 0.02, "timeout": 0.5})
        await ended(client)
        replies = of_type(client, "reply")
        assert [r.text for r in replies] == ["Your data was 10 bytes long"] * 3
        assert all(r.peer == ("198.18.1.3", 1060) for r in replies)
        assert client.local[0] == "198.18.1.2"
        heard = of_type(server, "received")
        assert len(heard) == 3
        assert {e.peer[0] for e in heard} == {"198.18.1.2"}  # the client's lab address
        assert all(e.text == "Hello, h2!" for e in heard)
        assert server.to_dict()["where"] == "h2"
        assert client.to_dict()["where"] == "h1"


async def test_a_stream_through_a_slow_link_is_blocked_and_loses_nothing(built_lab):
    """A token-bucket qdisc on h1's eth0 (4 Mbit/s) holds the datagrams, so the kernel's send
    buffer fills: sendmmsg sends part of a batch, then refuses (EAGAIN). Each refusal is
    counted in `blocked`, the rest of the batch goes again with its numbers, and h2 gets every
    datagram exactly once and in order."""
    async with built_lab() as sup:
        subprocess.run(["ip", "netns", "exec", sup.lab.host("h1").namespace, "tc", "qdisc",
                        "add", "dev", "eth0", "root", "tbf", "rate", "4mbit", "burst", "4kb",
                        "latency", "2s"], check=True, timeout=10)
        server = await sup.start({"kind": "server", "where": "h2", "host": "0.0.0.0",
                                  "port": 1060, "reply": "none"})
        sender = await sup.start({"kind": "stream", "where": "h1", "host": "198.18.1.3",
                                  "port": 1060, "count": 300, "size": 1400,
                                  "rate": 1_000_000})
        await ended(sender, timeout=15)  # 300 x 1442 bytes at 4 Mbit/s: about 0.9 s
        assert sender.state == "finished" and sender.throttle is None  # the lab: no caps
        assert sender.counters["sent"] == 300 and sender.counters["errors"] == 0
        assert sender.counters["bytes_out"] == 300 * 1400
        assert sender.counters["blocked"] > 0, sender.counters  # the buffer did fill
        key = (sender.local, sender.stream_id)
        await until(lambda: key in server.streams and server.streams[key].received == 300,
                    "all 300 datagrams at h2", 5.0)
        stats = server.streams[key]
        assert (stats.lost, stats.duplicates, stats.reordered, stats.highest) == (0, 0, 0, 299)


async def test_a_lab_host_does_not_see_the_machines_loopback(built_lab):
    """h1's 127.0.0.1 is h1's own: a server on the machine's loopback hears nothing from a
    client on h1 that sends to 127.0.0.1 (the datagram stays on h1's loopback)."""
    async with built_lab() as sup:
        here = await sup.start({"kind": "server", "host": "127.0.0.1", "port": 0})
        port = here.local[1]
        client = await sup.start({"kind": "client", "where": "h1", "host": "127.0.0.1",
                                  "port": port, "mode": "connected", "timeout": 0.1,
                                  "give_up_after": 0.3})
        await ended(client)
        assert of_type(client, "reply") == []
        assert any(e.errno == errno.ECONNREFUSED for e in of_type(client, "error"))
        assert of_type(here, "received") == []


async def test_broadcast_from_h1_reaches_h2_and_h3_not_h4(built_lab):
    async with built_lab() as sup:
        listeners = {host: await sup.start({"kind": "listener", "where": host,
                                            "host": "0.0.0.0", "port": 1070,
                                            "name": f"ear-{host}"})
                     for host in ("h2", "h3", "h4")}
        sender = await sup.start({"kind": "broadcast", "where": "h1", "host": "198.18.1.255",
                                  "port": 1070, "message": "Hello, LAN!"})
        await ended(sender)
        sent = of_type(sender, "sent")
        assert len(sent) == 1, [e.message for e in sender.history]
        assert sent[0].reached == ["ear-h2", "ear-h3"]
        for host in ("h2", "h3"):
            heard = of_type(listeners[host], "received")
            assert [(e.peer[0], e.text) for e in heard] == [("198.18.1.2", "Hello, LAN!")]
        await asyncio.sleep(0.1)  # give a stray copy time to arrive on h4: none may
        assert of_type(listeners["h4"], "received") == []


async def test_mtu_probe_learns_the_smaller_mtu_from_the_router(built_lab):
    async with built_lab() as sup:
        listener = await sup.start({"kind": "listener", "where": "h4", "host": "0.0.0.0",
                                    "port": 1080})
        probe = await sup.start({"kind": "mtu-probe", "where": "h1", "host": "198.18.2.4",
                                 "port": 1080, "size": 1472})
        await ended(probe, timeout=10)
        learned = [e.mtu for e in of_type(probe, "mtu") if e.mtu and e.payload is None]
        assert learned[0] == 1500, learned  # before the first send: h1's own link
        assert learned[-1] == 1280, learned  # after the router's ICMP "fragmentation needed"
        assert 1280 in learned[1:]
        final = of_type(probe, "mtu")[-1]
        assert final.payload == 1252 and final.mtu == 1280, final
        assert probe.counters["too_big"] >= 1
        await until(lambda: any(e.size == 1252 for e in of_type(listener, "received")),
                    "h4 to receive the 1252-byte datagram")
        sizes = [e.size for e in of_type(listener, "received")]
        assert max(sizes) == 1252, sizes  # nothing bigger crossed the 1280-byte link


async def test_binding_to_loopback_on_h2_is_unreachable_from_h1(built_lab):
    async with built_lab() as sup:
        local_only = await sup.start({"kind": "server", "where": "h2", "host": "127.0.0.1",
                                      "port": 1090})
        client = await sup.start({"kind": "client", "where": "h1", "host": "198.18.1.3",
                                  "port": 1090, "mode": "connected", "timeout": 0.2,
                                  "give_up_after": 0.4})
        await ended(client)
        errors = of_type(client, "error")
        assert any(e.errno == errno.ECONNREFUSED and "Connection refused" in e.message
                   for e in errors), [e.message for e in client.history]
        assert of_type(client, "reply") == []
        assert of_type(local_only, "received") == []
        await sup.stop(local_only.id)

        everyone = await sup.start({"kind": "server", "where": "h2", "host": "0.0.0.0",
                                    "port": 1090})
        client = await sup.start({"kind": "client", "where": "h1", "host": "198.18.1.3",
                                  "port": 1090, "mode": "connected", "timeout": 0.5})
        await ended(client)
        assert [r.text for r in of_type(client, "reply")] == [
            f"Your data was {of_type(everyone, 'received')[0].size} bytes long"]
        assert of_type(everyone, "received")[0].peer[0] == "198.18.1.2"

        # h2's own address works too; another host's address is not h2's to bind
        own = await sup.start({"kind": "server", "where": "h2", "host": "198.18.1.3",
                               "port": 1091})
        assert own.local == ("198.18.1.3", 1091)
        with pytest.raises(Conflict) as info:
            await sup.start({"kind": "server", "where": "h2", "host": "198.18.1.2",
                             "port": 1092})
        assert info.value.field in ("host", "port")


async def test_where_must_name_a_lab_host(kernel):
    async with Supervisor() as sup:
        with pytest.raises(BadSpec) as info:  # no lab yet
            await sup.start({"kind": "server", "where": "h2", "host": "0.0.0.0", "port": 0})
        assert info.value.field == "where"
        assert "build it first" in info.value.message
        await sup.build_lab()
        with pytest.raises(BadSpec) as info:
            await sup.start({"kind": "server", "where": "h7", "host": "0.0.0.0", "port": 0})
        assert info.value.field == "where"
        assert sup.workers == {}
        # no `where` (or the form's empty "this machine"): the machine's own namespace
        home = await sup.start({"kind": "server", "where": "", "host": "127.0.0.1", "port": 0})
        assert home.target.netns is None and home.state == "running"
        prefix = sup.lab.prefix
    assert kernel.namespaces(prefix) == []


async def test_teardown_lab_stops_the_workers_on_the_lab_only(kernel, built_lab):
    async with built_lab() as sup:
        on_h2 = await sup.start({"kind": "server", "where": "h2", "host": "0.0.0.0",
                                 "port": 1060})
        on_h3 = await sup.start({"kind": "listener", "where": "h3", "port": 1070})
        at_home = await sup.start({"kind": "server", "host": "127.0.0.1", "port": 0})
        prefix = sup.lab.prefix
        removed = await sup.teardown_lab()
        assert sorted(removed) == sorted(f"{prefix}{n}" for n in NODES)
        assert kernel.namespaces(prefix) == []
        assert on_h2.state == "stopped" and on_h3.state == "stopped"
        assert on_h2.sock is None or on_h2.sock.fileno() == -1
        assert at_home.state == "running"  # not on the lab: untouched
        assert not sup.lab.built
        assert await sup.teardown_lab() == []  # idempotent
        with pytest.raises(BadSpec):
            await sup.start({"kind": "server", "where": "h2", "host": "0.0.0.0", "port": 0})
        await sup.build_lab()  # and it can be built again in the same supervisor
        assert len(kernel.namespaces(prefix)) == len(NODES)


async def test_leaving_the_supervisor_tears_the_lab_down(kernel):
    async with Supervisor() as sup:
        await sup.build_lab()
        prefix = sup.lab.prefix
        worker = await sup.start({"kind": "server", "where": "h2", "host": "0.0.0.0",
                                  "port": 1060})
        assert len(kernel.namespaces(prefix)) == len(NODES)
    assert kernel.namespaces(prefix) == []
    assert not sup.lab.built
    assert worker.state == "stopped"


async def test_build_lab_twice_is_a_conflict(built_lab):
    async with built_lab() as sup:
        with pytest.raises(Conflict):
            await sup.build_lab()
        assert sup.lab.built


# --- the one-click scenarios ----------------------------------------------------------------

@pytest.mark.parametrize("name", ["exchange", "broadcast", "mtu", "binding"])
async def test_scenario_every_step_ok(built_lab, name):
    async with built_lab() as sup:
        run = await LabScenarios(sup).run(name)
        assert run["scenario"] == name and run["about"] == SCENARIOS[name]
        assert run["steps"], run
        assert all(step["ok"] for step in run["steps"]), run["steps"]
        assert all(step["why"] for step in run["steps"])
        assert sup.workers == {}  # the scenario removed the workers it started


async def test_scenario_steps_say_what_the_book_says(built_lab):
    async with built_lab() as sup:
        scenarios = LabScenarios(sup)
        exchange = await scenarios.run("exchange")
        assert "198.18.1.2" in exchange["steps"][0]["outcome"]
        assert re.search(r"Your data was \d+ bytes long", exchange["steps"][1]["outcome"])
        broadcast = await scenarios.run("broadcast")
        assert [s["outcome"] for s in broadcast["steps"]] == [
            "received it", "received it", "did not receive it"]
        mtu = await scenarios.run("mtu")
        assert [s["outcome"] for s in mtu["steps"]][:2] == [
            "IP_MTU read 1500 at first", "IP_MTU now 1280"]
        assert "1252 bytes" in mtu["steps"][2]["outcome"]
        binding = await scenarios.run("binding")
        assert binding["steps"][0]["outcome"] == "Connection refused"


async def test_every_scenario_can_be_run_again(kernel, built_lab):
    """A second click tells the same story: in particular the MTU probe must again start
    from h1's own link (1500), not from the path MTU the kernel cached the first time."""
    async with built_lab() as sup:
        scenarios = LabScenarios(sup)
        for name in ("exchange", "broadcast", "mtu", "binding"):
            first = await scenarios.run(name)
            second = await scenarios.run(name)
            assert first["id"] != second["id"]
            for run in (first, second):
                assert all(step["ok"] for step in run["steps"]), (name, run["steps"])
        mtu = await scenarios.run("mtu")  # a third time, after the two above
        assert mtu["steps"][0]["outcome"] == "IP_MTU read 1500 at first", mtu["steps"]
        assert mtu["steps"][1]["outcome"] == "IP_MTU now 1280", mtu["steps"]


async def test_unknown_scenario_and_no_lab_are_bad_specs(kernel):
    async with Supervisor() as sup:
        scenarios = LabScenarios(sup)
        with pytest.raises(BadSpec) as info:
            await scenarios.run("exchange")  # no lab
        assert info.value.field == "where"
        await sup.build_lab()
        for name in ("nosuch", "__init__", "run", "_ended"):
            with pytest.raises(BadSpec) as info:
                await scenarios.run(name)
            assert info.value.field == "scenario"
            assert "exchange, broadcast, mtu, binding" in info.value.message
        prefix = sup.lab.prefix
    assert kernel.namespaces(prefix) == []


# --- no traffic leaves the lab ---------------------------------------------------------------
# These run the supervisor in a child process inside a network namespace of its own with only
# loopback (`unshare --net`): there, "the machine's own namespace" has no route anywhere, so
# even when the app gets it wrong, a datagram meant for the lab cannot reach a real network.

ISOLATED = r'''
import asyncio, json, subprocess, sys
from webapp.engine import EngineError, Supervisor

async def until(predicate, timeout=5.0):
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.005)

async def main(case):
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True, timeout=10)
    out = {}
    async with asyncio.timeout(30):
        async with Supervisor() as sup:
            await sup.build_lab()
            out["prefix"] = sup.lab.prefix
            out["lab"] = {h.name: h.namespace for h in sup.lab.hosts.values()}
            if case == "machine-to-lab":
                spec = {"kind": "client", "host": "198.18.1.3", "port": 1060,
                        "timeout": 0.1, "give_up_after": 0.2}
            else:
                await sup.start({"kind": "server", "where": "h2", "host": "0.0.0.0",
                                 "port": 1060})
                client = await sup.start({"kind": "client", "where": "h1",
                                          "host": "198.18.1.3", "port": 1060, "count": 100,
                                          "interval": 0.05, "timeout": 1,
                                          "mode": "connected" if case == "spoofer-on-machine"
                                          else "promiscuous"})
                await until(lambda: client.local is not None)
                spec = {"kind": "spoofer", "target": client.id, "message": "FAKE"}
                if case == "spoofer-on-h3":
                    spec["where"] = "h3"
            try:
                worker = await sup.start(spec)
            except EngineError as exc:
                out["refused"] = {"field": exc.field, "error": exc.message,
                                  "type": type(exc).__name__}
            else:
                await asyncio.wait([worker.task], timeout=5)
                await asyncio.sleep(0.2)
                out["started"] = {
                    "netns": worker.target.netns,
                    "errors": [e.message for e in worker.history if e.type == "error"],
                    "sent": sum(1 for e in worker.history if e.type == "sent"),
                }
                if case != "machine-to-lab":
                    out["started"]["client_saw"] = [
                        list(e.peer) for e in client.history
                        if e.type in ("reply", "rejected") and e.text == "FAKE"]
    print(json.dumps(out))

asyncio.run(main(sys.argv[1]))
'''


def run_isolated(kernel, case: str) -> dict:
    """Run ISOLATED in a child in a namespace of its own; its JSON answer. Its lab is gone
    afterwards whatever happened (the child tears it down; this makes sure)."""
    child = subprocess.Popen(["unshare", "--net", sys.executable, "-c", ISOLATED, case],
                             cwd=str(Path(__file__).resolve().parents[2]),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = child.communicate(timeout=60)
    finally:
        if child.poll() is None:
            child.kill()
            child.communicate(timeout=10)
        left = kernel.namespaces(f"{lab_module.PREFIX}{child.pid}-")
        kernel.delete(left)
    assert left == [], f"the isolated supervisor left {left}"
    assert child.returncode == 0, err
    return json.loads(out)


def test_a_worker_on_the_machine_cannot_send_into_the_lab(kernel):
    """The lab's subnets are not routed from the machine itself: from there, 198.18.1.3 would
    go out the machine's default route to a real network. So a worker without `where` must be
    refused when it aims at a lab address (only workers on lab hosts may)."""
    answer = run_isolated(kernel, "machine-to-lab")
    assert "refused" in answer, (
        "a client on the machine itself was allowed to send to h2's lab address; on a "
        f"machine with a default route that datagram leaves the lab: {answer.get('started')}")
    assert answer["refused"]["field"] in ("host", "where"), answer


def test_an_impostor_aimed_at_a_lab_client_stays_in_the_lab(kernel):
    """A spoofer with `target` (a promiscuous client on h1) and `where: h3` sends from h3 to
    the client's lab address, and the client on h1 sees its FAKE datagram come from h3."""
    answer = run_isolated(kernel, "spoofer-on-h3")
    assert "started" in answer, answer
    started = answer["started"]
    assert started["netns"] == answer["lab"]["h3"], (
        "the impostor's `where` was ignored: its socket is in the machine's own namespace "
        "(and it aimed at 127.0.0.1 there, not at the client on h1): "
        f"{started}")
    assert started["errors"] == [] and started["sent"] >= 1, started
    assert ["198.18.1.4", started["client_saw"][0][1]] == started["client_saw"][0], started


def test_an_impostor_aimed_at_a_lab_client_from_the_machine_is_refused(kernel):
    """Without `where`, an impostor aimed at a (connected) client on h1 would send from the
    machine's own namespace to 198.18.1.2, out its default route: it must be refused (or
    placed in the lab), never sent from the machine."""
    answer = run_isolated(kernel, "spoofer-on-machine")
    if "started" in answer:
        assert answer["started"]["netns"] in answer["lab"].values(), (
            "an impostor aimed at a client on h1 was started in the machine's own namespace: "
            f"its datagram to 198.18.1.2 leaves the lab: {answer['started']}")
    else:
        assert answer["refused"]["field"] in ("target", "where"), answer
