"""Issue 16 on the virtual LAN: IPv6 beside IPv4 (2001:2:0:1::/64 and 2001:2:0:2::/64, the
router forwarding both, no DAD), link-local addresses with and without a scope, and IPv6
path-MTU discovery h1 → h4 through ICMPv6 Packet Too Big (1500 → 1280).

Real namespaces built by the test (CI runs as root: a skip is a failure). Every datagram
stays inside them: 2001:2::/48 and the lab's fe80:: addresses exist nowhere else.
"""

import subprocess
import time

import pytest

from waiting import ended, of_type, until
from webapp.engine import BadSpec
from webapp.engine.lab.scenarios import LabScenarios

pytestmark = pytest.mark.usefixtures("lab_admin")

ADDRESS6 = {"h1": "2001:2:0:1::2", "h2": "2001:2:0:1::3", "h3": "2001:2:0:1::4",
            "h4": "2001:2:0:2::4"}


def sysctl(namespace: str, name: str) -> str:
    return subprocess.run(["ip", "netns", "exec", namespace, "sysctl", "-n", name],
                          capture_output=True, text=True, timeout=10, check=True).stdout.strip()


async def test_every_host_has_address6_and_the_kernel_agrees(kernel, built_lab):
    async with built_lab() as sup:
        described = sup.lab.to_dict()
        for host in described["hosts"]:
            assert host["address6"] == ADDRESS6[host["name"]]
            far = host["name"] == "h4"
            assert host["subnet6"] == ("2001:2:0:2::/64" if far else "2001:2:0:1::/64")
            assert host["gateway6"] == ("2001:2:0:2::1" if far else "2001:2:0:1::1")
            assert host["link_local"].startswith("fe80::") and \
                host["link_local"].endswith("%eth0")
            inet6 = {(a["local"], a["prefixlen"], a.get("tentative", False))
                     for link in kernel.json("-n", host["namespace"], "-6", "addr")
                     if link["ifname"] == "eth0" for a in link.get("addr_info", [])
                     if a.get("local")}
            assert (host["address6"], 64, False) in inet6, inet6  # usable at once: no DAD
            routes = kernel.json("-n", host["namespace"], "-6", "route")
            assert [r["gateway"] for r in routes if r["dst"] == "default"] == \
                [host["gateway6"]]
        assert sysctl(sup.lab.ns("router"), "net.ipv6.conf.all.forwarding") == "1"
        assert described["subnets6"] == [
            {"name": "lan", "network": "2001:2:0:1::/64", "mtu": 1500},
            {"name": "far", "network": "2001:2:0:2::/64", "mtu": 1280}]


async def test_h1_reaches_h4_over_ipv6_through_the_router(built_lab):
    async with built_lab() as sup:
        server = await sup.start({"kind": "server", "where": "h4", "host": "::", "port": 1060})
        client = await sup.start({"kind": "client", "where": "h1", "host": ADDRESS6["h4"],
                                  "port": 1060, "mode": "check-address", "timeout": 0.5})
        await ended(client)
        reply = of_type(client, "reply")[0]
        assert reply.peer == (ADDRESS6["h4"], 1060) and reply.expected
        assert of_type(server, "received")[0].peer[0] == ADDRESS6["h1"]
        assert of_type(client, "bound")[0].family == "ipv6"


async def test_link_local_needs_a_scope_and_works_with_one(built_lab):
    async with built_lab() as sup:
        h2 = sup.lab.host("h2")
        bare = h2.link_local.split("%")[0]
        server = await sup.start({"kind": "server", "where": "h2", "host": "::", "port": 1061})
        with pytest.raises(BadSpec) as caught:
            await sup.start({"kind": "client", "where": "h1", "host": bare, "port": 1061})
        assert f"Add %interface, such as {bare}%eth0" in caught.value.message
        with pytest.raises(BadSpec) as caught:  # the scope is looked up on h1, not here
            await sup.start({"kind": "client", "where": "h1", "host": f"{bare}%lan0",
                             "port": 1061})
        assert "no interface 'lan0' on that lab host" in caught.value.message
        client = await sup.start({"kind": "client", "where": "h1", "host": f"{bare}%eth0",
                                  "port": 1061, "mode": "check-address", "timeout": 0.5})
        await ended(client)
        reply = of_type(client, "reply")[0]
        assert reply.expected and reply.peer[0].startswith(bare), reply
        received = of_type(server, "received")[0]
        assert received.peer[0].split("%")[0] == sup.lab.host("h1").link_local.split("%")[0]
        # a server may bind the link-local address itself, with its scope
        scoped = await sup.start({"kind": "server", "where": "h2", "host": h2.link_local,
                                  "port": 1062})
        assert scoped.local[0].split("%")[0] == bare


async def test_ipv6_path_mtu_h1_to_h4_is_1280_through_packet_too_big(built_lab):
    async with built_lab() as sup:
        listener = await sup.start({"kind": "listener", "where": "h4", "host": "::",
                                    "port": 1080})
        probe = await sup.start({"kind": "mtu-probe", "where": "h1", "host": ADDRESS6["h4"],
                                 "port": 1080, "size": 1452})
        await ended(probe, timeout=10)
        learned = [e.mtu for e in of_type(probe, "mtu") if e.mtu and e.payload is None]
        assert learned[0] == 1500 and learned[-1] == 1280, learned
        final = of_type(probe, "mtu")[-1]
        assert final.payload == 1232 and final.mtu == 1280, final
        assert "1280 (MTU) − 40 (IPv6 header) − 8 (UDP header) = 1232" in final.message
        assert "routers never fragment in IPv6" in final.message
        assert probe.counters["too_big"] >= 1
        await until(lambda: any(e.size == 1232 for e in of_type(listener, "received")),
                    "h4 to receive the 1232-byte datagram")
        assert max(e.size for e in of_type(listener, "received")) == 1232


@pytest.mark.parametrize("name", ["ipv6", "mtu6"])
async def test_ipv6_scenarios_every_step_ok(built_lab, name):
    async with built_lab() as sup:
        for _ in range(2):  # and again: the learned path MTU is forgotten first
            outcome = await LabScenarios(sup).run(name)
            assert outcome["steps"] and all(s["ok"] for s in outcome["steps"]), outcome
        assert not [w for w in sup.workers.values() if w.alive]


# --- over HTTP, through a real udplab process ---------------------------------------------------

def test_api_lab_shows_address6_and_workers_speak_ipv6_on_it(lab_app):
    with lab_app.client() as http:
        built = http.post("/api/lab")
        assert built.status_code == 201, built.text
        lab = http.get("/api/lab").json()
        assert {h["name"]: h["address6"] for h in lab["hosts"]} == ADDRESS6
        h2 = next(h for h in lab["hosts"] if h["name"] == "h2")
        bare = h2["link_local"].split("%")[0]
        server = http.start(kind="server", where="h2", host="::", port=1063)
        assert server["local"] == ["::", 1063]
        no_scope = http.post("/api/workers", json={"kind": "client", "where": "h1",
                                                   "host": bare, "port": 1063})
        assert no_scope.status_code == 422, no_scope.text
        assert no_scope.json()["field"] == "host"
        assert "%interface" in no_scope.json()["error"]
        client = http.start(kind="client", where="h1", host=f"{bare}%eth0", port=1063,
                            mode="connected", message="hi", timeout=0.5)
        replies = []
        for _ in range(50):  # bounded: 50 × 0.1 s
            replies = [e for e in http.get(f"/api/workers/{client['id']}/events").json()
                       ["events"] if e["type"] == "reply"]
            if replies:
                break
            time.sleep(0.1)
        assert replies and replies[0]["text"] == "Your data was 2 bytes long"
        http.stop_started()
        assert http.delete("/api/lab").status_code == 200
