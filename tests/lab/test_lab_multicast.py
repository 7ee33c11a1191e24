"""Issue 16, multicast on the virtual LAN: TTL-1 reach and the router that routes no groups,
IP_MULTICAST_LOOP on a real link, source-specific joins, IGMP snooping on the lab's switch,
and IPv6's all-nodes group ff02::1. Traffic stays inside the lab's namespaces."""

import asyncio
import json

import pytest

from waiting import ended, of_type
from webapp.engine.lab.scenarios import SCENARIOS, LabScenarios

pytestmark = pytest.mark.usefixtures("lab_admin")
MULTICAST_SCENARIOS = ("multicast", "ssm", "snooping", "all-nodes")


async def test_ttl_1_and_5_reach_h2_and_h3_not_h4_and_loop_off_spares_h1(built_lab):
    async with built_lab() as sup:
        members = {h: await sup.start({"kind": "listener", "where": h, "port": 1200,
                                       "join": ["239.9.9.9"], "name": f"m-{h}"})
                   for h in ("h1", "h2", "h3", "h4")}
        assert "member of 239.9.9.9 on eth0" in members["h2"].history[0].message
        reached = {}
        for ttl, loop in ((1, True), (5, False)):
            sender = await sup.start({"kind": "multicast", "where": "h1", "host": "239.9.9.9",
                                      "port": 1200, "ttl": ttl, "loop": loop})
            await ended(sender)
            reached[ttl] = of_type(sender, "sent")[0].reached
        assert reached[1] == ["m-h1", "m-h2", "m-h3"]  # loop on: h1's own member too
        assert reached[5] == ["m-h2", "m-h3"]  # loop off: not h1; and still not h4
        await asyncio.sleep(0.1)
        assert members["h4"].counters["received"] == 0
        heard = of_type(members["h2"], "received")
        assert {e.peer[0] for e in heard} == {"198.18.1.2"}


async def test_ssm_hears_its_source_only_and_the_kernel_holds_the_filter(kernel, built_lab):
    async with built_lab() as sup:
        member = await sup.start({"kind": "listener", "where": "h2", "port": 1201,
                                  "join": ["232.1.2.3"], "sources": ["198.18.1.2"]})
        for host in ("h3", "h1"):
            sender = await sup.start({"kind": "multicast", "where": host, "host": "232.1.2.3",
                                      "port": 1201, "message": host})
            await ended(sender)
        assert [(e.peer[0], e.text) for e in of_type(member, "received")] == [
            ("198.18.1.2", "h1")]
        igmp = kernel.run("netns", "exec", sup.lab.ns("h2"), "cat", "/proc/net/mcfilter").stdout
        # the source filter as the kernel keeps it (hex, host order): 232.1.2.3 from h1
        assert "E8010203" in igmp.upper() and "C6120102" in igmp.upper(), igmp


@pytest.mark.parametrize("name", MULTICAST_SCENARIOS)
async def test_multicast_scenarios_every_step_ok(built_lab, name):
    async with built_lab() as sup:
        run = await LabScenarios(sup).run(name)
        assert run["about"] == SCENARIOS[name]
        assert run["steps"] and all(s["ok"] and s["why"] for s in run["steps"]), run["steps"]
        assert sup.workers == {}


async def test_snooping_scenario_outcomes_and_the_bridge_is_restored(kernel, built_lab):
    async with built_lab() as sup:
        switch = sup.lab.ns("switch")
        run = await LabScenarios(sup).run("snooping")
        outcomes = [s["outcome"] for s in run["steps"]]
        assert outcomes[0] == "bridge mdb show: members on h2", outcomes
        assert outcomes[1] == "h2's link carried 10 of them, h3's 0", outcomes
        assert outcomes[2] == "h2's link carried 10 of them, h3's 10", outcomes
        details = kernel.json("-n", switch, "-d", "link", "show", "br0")[0]["linkinfo"]
        data = details["info_data"]
        assert (data["mcast_snooping"], data["mcast_querier"]) == (1, 0), data
        assert data["mcast_query_response_intvl"] == 1000, data


async def test_all_nodes_outcomes(built_lab):
    async with built_lab() as sup:
        run = await LabScenarios(sup).run("all-nodes")
        assert [s["outcome"] for s in run["steps"]] == [
            "received it", "received it", "did not receive it"]
        assert "IPv6's answer to broadcast" in run["steps"][0]["why"]


async def _send_when_ready(sup, spec: dict, tries: int = 20):
    """Send once the host's fresh link-local address has passed DAD (about 2 s after the lab
    is built; before that the kernel answers EADDRNOTAVAIL). Bounded: 20 tries, 5 s."""
    for _ in range(tries):
        sender = await sup.start(spec)
        await ended(sender)
        if of_type(sender, "sent"):
            return sender
        assert of_type(sender, "error")[0].errno == 99, list(sender.history)
        assert "DAD" in of_type(sender, "error")[0].message
        await asyncio.sleep(0.25)
    pytest.fail("the link-local address never left DAD")


async def test_ipv6_ssm_hears_its_link_local_source_only(kernel, built_lab):
    async with built_lab() as sup:
        h1 = next(a["local"] for a in kernel.json("-n", sup.lab.ns("h1"), "-6", "addr", "show",
                                                   "dev", "eth0")[0]["addr_info"]
                  if a["local"].startswith("fe80"))
        member = await sup.start({"kind": "listener", "where": "h2", "host": "::",
                                  "port": 1202, "join": ["ff32::8000:1"], "sources": [h1]})
        assert member.history[0].message.endswith(f"only from {h1}")
        for host in ("h3", "h1"):
            await _send_when_ready(sup, {"kind": "multicast", "where": host,
                                         "host": "ff32::8000:1", "port": 1202, "message": host})
        assert [(e.peer[0], e.text) for e in of_type(member, "received")] == [(h1, "h1")]
