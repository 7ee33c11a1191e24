"""Issue 4 in the engine: interfaces against the kernel, binding conflicts and coexistence,
broadcast on loopback (listing 2-4), the MTU probe (listing 2-3), socket options and ports.

Real sockets, and datagrams only to loopback: 127.0.0.1, 127.0.0.2 and 127.255.255.255.
The interface address of eth0 (or whichever the machine has) is bound, never sent to.
255.255.255.255 is only checked to be refused, which sends nothing.
"""

import asyncio
import errno
import ipaddress
import json
import shutil
import socket
import subprocess
from pathlib import Path

import pytest

from waiting import ended, of_type, until
from webapp.engine import BadSpec, Conflict, Refused, Supervisor
from webapp.engine import interfaces as ifaces
from webapp.engine import mtu, ports, sockopts
from webapp.engine.experiments import BindingExplorer
from webapp.engine.policy import LIMITED_BROADCAST, Policy

LOOPBACK = "127.0.0.1"
LOOPBACK_2 = "127.0.0.2"  # also loopback on Linux (all of 127.0.0.0/8 is)
LOOPBACK_BROADCAST = "127.255.255.255"
QUICK = {"timeout": 0.2, "give_up_after": 0.5}  # a client that gives up within ~1 s








def ip_addr() -> list[dict]:
    """What iproute2 reports: `ip -j addr`."""
    ip = shutil.which("ip")
    assert ip, "iproute2's `ip` is needed to check the interface list against the kernel"
    out = subprocess.run([ip, "-j", "addr"], capture_output=True, text=True, timeout=10,
                         check=True).stdout
    return json.loads(out)


def non_loopback_ipv4() -> str | None:
    """An IPv4 address of this machine outside 127.0.0.0/8 (to bind, never to send to)."""
    for _, address in ifaces.ipv4_addresses():
        if not ipaddress.ip_address(address).is_loopback:
            return address
    return None


# --- 1. interfaces against the kernel -----------------------------------------------------


def test_interfaces_match_ip_addr():
    kernel = ip_addr()
    ours = ifaces.interfaces()
    assert ours, "interfaces() found nothing"
    assert [i.name for i in ours] == [k["ifname"] for k in kernel]
    by_name = {i.name: i for i in ours}
    for k in kernel:
        i = by_name[k["ifname"]]
        assert i.index == k["ifindex"], k["ifname"]
        assert i.mtu == k["mtu"], k["ifname"]
        assert i.state == ("up" if "UP" in k["flags"] else "down"), (k["ifname"], k["flags"])
        assert i.loopback == ("LOOPBACK" in k["flags"]), k["ifname"]
        assert i.operstate == k["operstate"].lower(), k["ifname"]
        want = sorted((("ipv4" if a["family"] == "inet" else "ipv6"), a["local"], a["prefixlen"])
                      for a in k["addr_info"] if a["family"] in ("inet", "inet6"))
        got = sorted((a.family, a.address, a.prefix) for a in i.addresses)
        assert got == want, k["ifname"]
        for a in k["addr_info"]:
            mine = next(x for x in i.addresses if x.address == a["local"])
            network = ipaddress.ip_network(f"{a['local']}/{a['prefixlen']}", strict=False)
            assert mine.netmask == str(network.netmask), a["local"]
            if a["family"] == "inet6":
                assert mine.broadcast is None, a["local"]
            elif "broadcast" in a:
                assert mine.broadcast == a["broadcast"], a["local"]


def test_interfaces_json_shape_and_loopback():
    rows = [i.to_dict() for i in ifaces.interfaces()]
    json.dumps(rows)  # plain JSON, nothing exotic
    lo = next(r for r in rows if r["loopback"])
    assert lo["state"] == "up"
    assert {"family": "ipv4", "address": "127.0.0.1", "netmask": "255.0.0.0", "prefix": 8,
            "broadcast": None} in lo["addresses"]
    assert set(rows[0]) == {"name", "index", "state", "operstate", "mtu", "loopback",
                            "addresses"}


def test_broadcast_and_host_choices():
    broadcasts = [address for address, _ in ifaces.broadcast_choices()]
    assert broadcasts[0] == LOOPBACK_BROADCAST
    assert LIMITED_BROADCAST not in broadcasts
    for k in ip_addr():
        for a in k["addr_info"]:
            if a["family"] == "inet" and "broadcast" in a:
                assert a["broadcast"] in broadcasts, a
    hosts = [address for address, _ in ifaces.host_choices()]
    assert hosts[:2] == ["127.0.0.1", "0.0.0.0"]
    for _, address in ifaces.ipv4_addresses():
        assert address in hosts


# --- 2. binding ----------------------------------------------------------------------------


async def test_specific_binds_coexist_and_wildcard_conflicts_naming_the_holder():
    async with Supervisor() as sup:
        one = await sup.start({"kind": "server", "name": "on-one", "host": LOOPBACK,
                               "port": 0, "reply": "echo"})
        port = one.local[1]
        two = await sup.start({"kind": "server", "name": "on-two", "host": LOOPBACK_2,
                               "port": port, "reply": "echo"})
        assert one.local == (LOOPBACK, port) and two.local == (LOOPBACK_2, port)
        with pytest.raises(Conflict) as caught:
            await sup.start({"kind": "server", "name": "wild", "host": "0.0.0.0",
                             "port": port})
        message = caught.value.message
        assert caught.value.status == 409
        assert "Address already in use" in message
        assert "on-one" in message
        assert f"0.0.0.0 means every address of this machine, and on-one already holds " \
               f"127.0.0.1 port {port}" in message
        assert "wild" not in sup.workers

        # which server a client reaches: the one bound to the address it sends to
        for host, name in ((LOOPBACK, "c-one"), (LOOPBACK_2, "c-two")):
            client = await sup.start({"kind": "client", "name": name, "host": host,
                                      "port": port, "message": f"hi {host}", **QUICK})
            await ended(client)
            assert client.counters["replies"] == 1, list(client.history)
            assert of_type(client, "reply")[0].peer == (host, port)
        assert one.counters["received"] == 1
        assert two.counters["received"] == 1
        assert of_type(one, "received")[0].text == "hi 127.0.0.1"
        assert of_type(two, "received")[0].text == "hi 127.0.0.2"


async def test_wildcard_first_then_specific_conflicts_with_covers():
    async with Supervisor() as sup:
        wild = await sup.start({"kind": "server", "name": "wild", "host": "0.0.0.0",
                                "port": 0})
        port = wild.local[1]
        with pytest.raises(Conflict) as caught:
            await sup.start({"kind": "server", "name": "one", "host": LOOPBACK, "port": port})
        message = caught.value.message
        assert "Address already in use" in message
        assert ("wild is bound to 0.0.0.0, every address of this machine, which already "
                "covers 127.0.0.1") in message
        # the same address exactly
        with pytest.raises(Conflict) as again:
            await sup.start({"kind": "server", "name": "wild-2", "host": "0.0.0.0",
                             "port": port})
        assert f"wild is bound to exactly 0.0.0.0 port {port}" in again.value.message
        # a stopped worker no longer holds the port: the bind succeeds
        await sup.stop("wild")
        one = await sup.start({"kind": "server", "name": "one", "host": LOOPBACK,
                               "port": port})
        assert one.local == (LOOPBACK, port)


async def test_reuse_addr_server_shares_a_port_with_listeners():
    async with Supervisor() as sup:
        listener = await sup.start({"kind": "listener", "name": "hear", "host": "0.0.0.0",
                                    "port": 0})
        port = listener.local[1]
        with pytest.raises(Conflict):
            await sup.start({"kind": "server", "name": "plain", "host": LOOPBACK,
                             "port": port})
        shared = await sup.start({"kind": "server", "name": "shared", "host": LOOPBACK,
                                  "port": port, "reuse_addr": True})
        assert shared.local == (LOOPBACK, port)
        assert shared.sock.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR) == 1


def steps_outcomes(run: dict) -> list[str]:
    return [step["outcome"] for step in run["steps"]]


EXPECTED_STEPS = ["bound", "bound", "conflict", "reached the 127.0.0.1 server",
                  "reached the 127.0.0.2 server", "bound", "conflict",
                  "reached the 0.0.0.0 server",
                  # IPv6 (issue 16): beside 0.0.0.0, then dual-stack alone
                  "bound", "bound", "conflict", "reached the ::1 server",
                  "bound", "reached the :: server as ::ffff:127.0.0.1",
                  "Connection refused"]


async def test_binding_explorer_steps_and_cleanup():
    async with Supervisor() as sup:
        run = await BindingExplorer(sup).run()
        assert steps_outcomes(run) == EXPECTED_STEPS, run["steps"]
        port = run["port"]
        assert 0 < port < 65536
        assert all(step["why"] for step in run["steps"]), run["steps"]
        wildcard_conflict = run["steps"][2]
        assert "Address already in use" in wildcard_conflict["why"]
        assert f"already holds 127.0.0.1 port {port}" in wildcard_conflict["why"]
        covers = run["steps"][6]
        assert "which already covers 127.0.0.1" in covers["why"]
        assert "Connection refused" in run["steps"][-1]["why"]
        assert sup.workers == {}, list(sup.workers)


async def test_binding_explorer_binds_an_interface_address_too():
    interface = non_loopback_ipv4()
    if interface is None:
        pytest.skip("this machine has no IPv4 address outside loopback")
    async with Supervisor() as sup:
        run = await BindingExplorer(sup).run(interface=interface)
        expected = EXPECTED_STEPS[:3] + ["bound"] + EXPECTED_STEPS[3:]
        assert steps_outcomes(run) == expected, run["steps"]
        assert run["steps"][3]["action"] == f"bind {interface} port {run['port']}"
        # it was never a destination
        assert not any(interface in step["action"] for step in run["steps"]
                       if "sends" in step["action"])
        assert sup.workers == {}


# --- 3. broadcast, on loopback only -----------------------------------------------------------


async def test_broadcast_reaches_wildcard_listeners_only():
    async with Supervisor() as sup:
        first = await sup.start({"kind": "listener", "name": "wild-a", "host": "0.0.0.0",
                                 "port": 0})
        port = first.local[1]
        second = await sup.start({"kind": "listener", "name": "wild-b", "host": "0.0.0.0",
                                  "port": port})
        narrow = await sup.start({"kind": "listener", "name": "narrow", "host": LOOPBACK,
                                  "port": port})
        server = await sup.start({"kind": "server", "name": "srv", "host": LOOPBACK,
                                  "port": port, "reuse_addr": True, "reply": "none"})
        assert first.history[0].type == "listening"
        assert first.history[0].message == f"Listening for datagrams at ('0.0.0.0', {port})"
        assert narrow.history[0].message == \
            f"Listening for datagrams at ('127.0.0.1', {port})"

        shout = await sup.start({"kind": "broadcast", "name": "shout", "port": port,
                                 "message": "Hello, LAN"})
        assert shout.target.address[0] == LOOPBACK_BROADCAST  # the default destination
        await ended(shout)
        assert shout.state == "finished"
        sent = of_type(shout, "sent")
        assert len(sent) == 1, list(shout.history)
        assert sent[0].reached == ["wild-a", "wild-b"]
        assert sent[0].peer == (LOOPBACK_BROADCAST, port)
        assert "heard by wild-a, wild-b" in sent[0].message
        assert shout.counters == {"sent": 1, "reached": 2, "errors": 0}
        for listener in (first, second):
            heard = of_type(listener, "received")
            assert len(heard) == 1
            assert heard[0].text == "Hello, LAN"
            assert heard[0].peer[1] == shout.local[1]
            assert heard[0].message == \
                f"The client at {heard[0].peer!r} says: 'Hello, LAN'"
        assert of_type(narrow, "received") == []
        assert narrow.counters["received"] == 0
        assert server.counters["received"] == 0


async def test_broadcast_without_so_broadcast_is_permission_denied():
    async with Supervisor() as sup:
        listener = await sup.start({"kind": "listener", "host": "0.0.0.0", "port": 0})
        port = listener.local[1]
        shout = await sup.start({"kind": "broadcast", "port": port, "so_broadcast": False})
        assert shout.sock.getsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST) == 0
        await ended(shout)
        errors = of_type(shout, "error")
        assert len(errors) == 1, list(shout.history)
        assert errors[0].errno == errno.EACCES == 13
        assert "Permission denied" in errors[0].message
        assert "SO_BROADCAST" in errors[0].message
        assert of_type(shout, "sent") == []
        assert shout.counters["errors"] == 1
        await asyncio.sleep(0.05)
        assert listener.counters["received"] == 0


async def test_limited_broadcast_is_refused_by_default():
    async with Supervisor() as sup:
        with pytest.raises(Refused) as caught:
            await sup.start({"kind": "broadcast", "host": LIMITED_BROADCAST, "port": 9})
        assert caught.value.status == 403
        assert "--allow-limited-broadcast" in caught.value.message
        assert sup.workers == {}
    for kind in ("client", "broadcast", "mtu-probe", "spoofer", "stream"):
        with pytest.raises(Refused):
            Policy().check(kind, LIMITED_BROADCAST)
    Policy().check("broadcast", LOOPBACK_BROADCAST)  # allowed: no exception
    Policy().check("listener", LIMITED_BROADCAST)  # binding sends nothing


def test_limited_broadcast_allowed_by_the_operator():
    # checked on the policy object only: nothing is ever sent to 255.255.255.255
    Policy(allow_limited_broadcast=True).check("broadcast", LIMITED_BROADCAST)
    assert Supervisor(policy=Policy(allow_limited_broadcast=True)).policy \
        .allow_limited_broadcast


# --- 4. MTU ----------------------------------------------------------------------------------


async def test_mtu_probe_on_loopback():
    async with Supervisor() as sup:
        sink = await sup.start({"kind": "server", "name": "sink", "port": 0, "reply": "none"})
        port = sink.local[1]
        probe = await sup.start({"kind": "mtu-probe", "name": "probe", "port": port})
        await ended(probe)
        assert probe.state == "finished", list(probe.history)
        events = [e for e in probe.history if e.type != "stopped"]
        assert probe.history[-1].type == "stopped"
        sent = next(n for n, e in enumerate(events) if e.type == "sent")
        assert events[sent].message == \
            f"The big datagram was sent! (65000 bytes to ('127.0.0.1', {port}))"
        assert events[sent].size == 65000
        assert all(e.type == "mtu" for e in events[:sent])  # at most a note before it
        actual = next(n for n, e in enumerate(events) if e.message.startswith("Actual MTU"))
        assert actual == sent + 1
        assert events[actual].type == "mtu"
        assert events[actual].message == "Actual MTU: 65535"
        assert events[actual].mtu == 65535
        final = events[-1]
        assert final.type == "mtu"
        assert final.payload == 65507
        assert final.mtu == 65535
        assert "65535 (MTU) − 20 (IPv4 header) − 8 (UDP header) = 65507" in final.message
        assert "65507 bytes" in final.message
        assert of_type(probe, "error") == []
        steps = [e for e in events[actual + 1:-1] if e.size is not None]
        assert steps and len(steps) <= 17
        assert probe.counters["errors"] == 0
        await until(lambda: sink.counters["received"] >= 1, "the sink to read the big one")
        assert sink.counters["bytes_in"] >= 65000


async def test_mtu_probe_largest_size_is_sent():
    async with Supervisor() as sup:
        sink = await sup.start({"kind": "server", "port": 0, "reply": "none"})
        probe = await sup.start({"kind": "mtu-probe", "port": sink.local[1], "size": 65507})
        await ended(probe)
        first = next(e for e in probe.history if e.type in ("sent", "error"))
        assert first.type == "sent" and first.size == 65507
        assert "The big datagram was sent! (65507 bytes" in first.message
        assert probe.counters["too_big"] == 0


async def test_mtu_probe_on_ipv6_loopback_uses_the_40_byte_header():
    # Issue 16: the probe speaks IPv6 (it refused it before): ::1's MTU 65536 − 40 − 8.
    async with Supervisor() as sup:
        probe = await sup.start({"kind": "mtu-probe", "host": "::1", "port": 9,
                                 "size": 1000})
        await ended(probe, timeout=10)
        final = [e for e in probe.history if e.type == "mtu"][-1]
        assert final.mtu == 65536 and final.payload == 65536 - 48, final
        assert "40 (IPv6 header)" in final.message
        assert "routers never fragment in IPv6" in final.message


@pytest.mark.parametrize("limit", [1, 548, 1252, 1472, 8972, 65000, 65506, 65507])
@pytest.mark.parametrize("hint", [None, "right", "too-high", "too-low"])
def test_mtu_search_finds_the_limit(limit, hint):
    hints = {None: None, "right": limit, "too-high": min(limit + 500, 65507),
             "too-low": max(limit - 500, 0)}
    search = mtu.MtuSearch(hint=hints[hint])
    tried = []
    for _ in range(100):  # bounded: the search must finish far sooner
        size = search.next_size()
        if size is None:
            break
        tried.append(size)
        search.record(size, size <= limit)  # the fake network: sizes up to `limit` go
    assert search.next_size() is None
    assert search.result == limit
    # 16 halvings cover 0..65507; a hint costs at most one more try, except a hint that is
    # too low: it and hint + 1 both go, two tries that only cut off the sizes below it
    assert search.tries == len(tried) <= (18 if hint == "too-low" else 17), tried
    if hint == "right" and limit < 65507:
        assert search.tries == 2  # the hint and hint + 1 confirm it


def test_mtu_search_when_nothing_goes():
    search = mtu.MtuSearch()
    for _ in range(100):
        size = search.next_size()
        if size is None:
            break
        search.record(size, False)
    assert search.result is None
    assert search.tries <= 17


def test_header_arithmetic():
    assert mtu.largest_payload(1500) == 1472
    assert mtu.largest_payload(1280) == 1252
    assert mtu.largest_payload(65535) == 65507
    assert mtu.largest_payload(65536) == 65507  # loopback's MTU: capped at the IPv4 limit
    assert mtu.largest_payload(1500, ipv6=True) == 1452
    assert mtu.largest_payload(1280, ipv6=True) == 1232
    assert mtu.largest_payload(1500) - mtu.largest_payload(1500, ipv6=True) == 20


def test_ip_mtu_discover_constants_on_a_plain_socket(closed_port):
    assert sockopts.IP_MTU_DISCOVER == 10
    assert sockopts.IP_PMTUDISC_DO == 2
    assert sockopts.IP_MTU == 14
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.setsockopt(socket.IPPROTO_IP, sockopts.IP_MTU_DISCOVER, sockopts.IP_PMTUDISC_DO)
        assert sock.getsockopt(socket.IPPROTO_IP, sockopts.IP_MTU_DISCOVER) == 2
        sock.connect((LOOPBACK, closed_port))
        assert sock.getsockopt(socket.IPPROTO_IP, sockopts.IP_MTU) == 65535
        assert sock.send(b"#" * 65507) == 65507
        with pytest.raises(OSError) as caught:
            sock.send(b"#" * 65508)
        assert caught.value.errno == errno.EMSGSIZE == 90


# --- 5. socket options -------------------------------------------------------------------------


def default_ttl() -> int:
    return int(Path("/proc/sys/net/ipv4/ip_default_ttl").read_text())


async def test_read_all_options_of_a_server():
    async with Supervisor() as sup:
        server = await sup.start({"kind": "server", "port": 0})
        rows = {row["name"]: row for row in sockopts.read_all(server.sock)}
        assert set(rows) == {"SO_BROADCAST", "SO_DONTROUTE", "SO_TYPE", "SO_RCVBUF",
                             "SO_SNDBUF", "SO_REUSEADDR", "IP_TTL", "IP_MTU_DISCOVER"}
        assert rows["SO_TYPE"]["value"] == socket.SOCK_DGRAM
        assert rows["SO_TYPE"]["text"] == "SOCK_DGRAM"
        assert rows["SO_TYPE"]["settable"] is False
        assert rows["IP_TTL"]["value"] == default_ttl() == 64
        assert rows["SO_BROADCAST"]["value"] == 0 and rows["SO_BROADCAST"]["text"] == "off"
        assert rows["SO_REUSEADDR"]["text"] == "off"
        assert rows["SO_RCVBUF"]["text"] == f"{rows['SO_RCVBUF']['value']} bytes"
        assert all(row["help"] for row in rows.values())


async def test_set_options_and_read_back_what_the_kernel_holds():
    async with Supervisor() as sup:
        server = await sup.start({"kind": "server", "port": 0})
        changed = sockopts.set_option(server.sock, "SO_RCVBUF", 4096)
        assert changed["asked"] == 4096
        assert changed["value"] == 8192  # the kernel doubles it
        assert changed["text"] == "8192 bytes"
        assert server.sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) == 8192
        rows = {row["name"]: row for row in sockopts.read_all(server.sock)}
        assert rows["SO_RCVBUF"]["value"] == 8192
        assert sockopts.set_option(server.sock, "so_broadcast", "on")["text"] == "on"
        assert server.sock.getsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST) == 1
        pmtu = sockopts.set_option(server.sock, "IP_MTU_DISCOVER", "DO")
        assert pmtu["value"] == sockopts.IP_PMTUDISC_DO == 2
        assert pmtu["text"] == "IP_PMTUDISC_DO"
        assert sockopts.set_option(server.sock, "IP_TTL", "12")["value"] == 12
        assert server.sock.getsockopt(socket.IPPROTO_IP, socket.IP_TTL) == 12


@pytest.mark.parametrize("name, value, words", [
    ("SO_NOSUCH", 1, "Unknown socket option"),
    ("SO_TYPE", 1, "can only be read"),
    ("IP_TTL", 0, "from 1 to 255"),
    ("IP_TTL", 999, "from 1 to 255"),
    ("IP_TTL", "abc", "from 1 to 255"),
    ("SO_RCVBUF", "abc", "SO_RCVBUF takes a value"),
    ("SO_BROADCAST", 7, "SO_BROADCAST takes a value from 0 to 1"),
])
async def test_bad_option_values_are_plain_422s(name, value, words):
    async with Supervisor() as sup:
        server = await sup.start({"kind": "server", "port": 0})
        before = server.sock.getsockopt(socket.IPPROTO_IP, socket.IP_TTL)
        with pytest.raises(BadSpec) as caught:
            sockopts.set_option(server.sock, name, value)
        assert caught.value.status == 422
        assert words in caught.value.message
        assert server.sock.getsockopt(socket.IPPROTO_IP, socket.IP_TTL) == before


async def test_options_of_a_stopped_worker_conflict():
    async with Supervisor() as sup:
        server = await sup.start({"kind": "server", "port": 0})
        await sup.stop(server.id)
        assert server.sock is None
        with pytest.raises(Conflict) as read:
            sockopts.read_all(server.sock)
        assert read.value.status == 409
        with pytest.raises(Conflict):
            sockopts.set_option(server.sock, "SO_RCVBUF", 4096)


# --- 6. ports --------------------------------------------------------------------------------


def proc_ephemeral() -> tuple[int, int]:
    low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
    return int(low), int(high)


def test_port_lookup_both_ways_and_ranges():
    domain = ports.lookup("domain")
    assert (domain["port"], domain["name"], domain["range"]) == (53, "domain", "well-known")
    assert ports.lookup("53")["name"] == "domain"
    assert ports.lookup("ntp")["port"] == 123
    registered = ports.lookup("1060")
    assert (registered["range"], registered["name"]) == ("registered", None)
    assert registered["range_bounds"] == [1024, 49151]
    dynamic = ports.lookup("50000")
    assert dynamic["range"] == "dynamic"
    low, high = proc_ephemeral()
    assert ports.ephemeral_range() == (low, high)
    assert dynamic["ephemeral"] == [low, high]
    assert dynamic["in_ephemeral"] == (low <= 50000 <= high)
    assert ports.lookup(str(low))["in_ephemeral"] is True
    assert ports.lookup("0")["range"] == "well-known"
    assert ports.lookup("65535")["range"] == "dynamic"
    # Unicode digits int() refuses, non-ASCII names and NULs gave 500s (schemathesis found ³)
    for bad in ("nosuch", "70000", "65536", "³", "²⁵", "☃", "a\x00b"):
        with pytest.raises(BadSpec) as caught:
            ports.lookup(bad)
        assert caught.value.status == 422
