"""The lab's multicast scenarios (issue 16): TTL and the router, source-specific joins, IGMP
snooping on the switch, and IPv6's all-nodes group. `LabScenarios` plays them like the others;
traffic stays inside the lab's namespaces."""

import asyncio

from webapp.engine.lab import bridge as labbridge
from webapp.engine.lab.steps import reach_step, reached

MULTICAST_SCENARIOS = {
    "multicast": "a group sent from h1 with TTL 1 (then 5) reaches members on h2 and h3, "
                 "not h4 behind the router",
    "ssm": "a source-specific join on h2 hears the group from h1, its source, and not from h3",
    "snooping": "IGMP snooping: the lab's switch sends a group only to the ports of its "
                "members, and floods it to every host when snooping is off",
    "all-nodes": "IPv6 has no broadcast: ff02::1 (all nodes) from h1 reaches every host on "
                 "the link, h2 and h3, not h4",
}


class MulticastScenarios:
    """The multicast scenarios, mixed into `LabScenarios` (which provides `_ended`)."""

    async def _multicast(self, lab, start, steps) -> None:
        group, port = "239.1.1.1", 1110
        members = {host: await start({"kind": "listener", "where": host, "port": port,
                                      "join": [group]}) for host in ("h2", "h3", "h4")}
        for ttl in (1, 5):
            sender = await start({"kind": "multicast", "where": "h1", "host": group,
                                  "port": port, "ttl": ttl, "message": f"TTL {ttl}"})
            await self._ended(sender)
            got = reached(sender)
            for host, member in members.items():
                if ttl > 1 and host != "h4":
                    continue
                steps.append(reach_step(
                    lab, host, member.id in got, f"TTL {ttl}: member of {group} on {host}",
                    "same link as h1: the switch delivers the group to its members",
                    ("behind the router, which forwards unicast only: it runs no multicast "
                     "routing (no PIM, no IGMP proxy), so no group leaves its subnet, whatever "
                     "its TTL" if ttl > 1 else "TTL 1 means this link only, and the router "
                     "does no multicast routing anyway")))

    async def _ssm(self, lab, start, steps) -> None:
        group, port = "232.1.1.1", 1111  # 232/8: the source-specific range
        h1, h3 = lab.host("h1"), lab.host("h3")
        member = await start({"kind": "listener", "where": "h2", "port": port,
                              "join": [group], "sources": [h1.address]})
        for host, wanted in ((h1, True), (h3, False)):
            sender = await start({"kind": "multicast", "where": host.name, "host": group,
                                  "port": port, "message": f"from {host.name}"})
            await self._ended(sender)
            got = any(e.type == "received" and e.peer[0] == host.address
                      for e in member.history)
            steps.append({
                "step": f"{host.name} ({host.address}) sends to {group}; h2 joined it only "
                        f"from {h1.address}",
                "outcome": "h2 heard it" if got else "h2 did not hear it",
                "ok": got == wanted,
                "why": ("its source is the one h2 asked for (IP_ADD_SOURCE_MEMBERSHIP)" if wanted
                        else "h2's kernel filters the group by source: only h1 gets through"),
            })

    async def _snooping(self, lab, start, steps) -> None:
        group, port, count = "239.1.1.4", 1112, 10
        loop = asyncio.get_running_loop()

        async def command(fn, *args):
            return await loop.run_in_executor(None, fn, lab, *args)

        taps = {h: labbridge.Tap(lab, h) for h in ("h2", "h3")}
        try:
            # A querier makes the switch trust what it learned (without one it floods); its
            # response interval, 1 s here, is how long it waits before it starts to filter.
            await command(lambda lab: labbridge.set_bridge(
                lab, mcast_snooping=1, mcast_query_response_interval=100, mcast_querier=1))
            await start({"kind": "listener", "where": "h2", "port": port, "join": [group]})
            learned: list[str] = []
            for _ in range(30):  # up to 3 s for the join's IGMP report and the querier delay
                learned = await command(labbridge.members, group)
                if learned:
                    break
                await asyncio.sleep(0.1)
            await asyncio.sleep(1.2)  # the querier's own start-up wait
            steps.append({"step": f"h2 joins {group}; the switch reads its IGMP report",
                          "outcome": f"bridge mdb show: members on {', '.join(learned) or 'none'}",
                          "ok": learned == ["h2"],
                          "why": "with snooping on, the bridge learns which port asked for "
                                 "which group"})
            for snooping in (1, 0):
                if not snooping:
                    await command(lambda lab: labbridge.set_bridge(lab, mcast_snooping=0))
                for tap in taps.values():
                    tap.count(group, port)  # forget what came before
                sender = await start({"kind": "multicast", "where": "h1", "host": group,
                                      "port": port, "count": count, "interval": 0})
                await self._ended(sender, timeout=10)
                got = {h: tap.count(group, port) for h, tap in taps.items()}
                steps.append({
                    "step": f"snooping {'on' if snooping else 'off'}: h1 sends {count} "
                            f"datagrams to {group}",
                    "outcome": f"h2's link carried {got['h2']} of them, h3's {got['h3']}",
                    "ok": got["h2"] == count and got["h3"] == (0 if snooping else count),
                    "why": ("the switch sends the group only to h2's port: h3's link stays "
                            "quiet" if snooping else "without snooping the switch floods "
                            "multicast like broadcast: h3's link carries it all, and h3's "
                            "kernel throws it away (h3 joined nothing)"),
                })
        finally:
            for tap in taps.values():
                tap.close()
            await command(lambda lab: labbridge.set_bridge(lab, **labbridge.DEFAULTS))

    async def _all_nodes(self, lab, start, steps) -> None:
        port = 1113
        listeners = {host: await start({"kind": "listener", "where": host, "host": "::",
                                        "port": port, "join": ["ff02::1"]})
                     for host in ("h2", "h3", "h4")}
        sent = None
        for _ in range(20):  # a fresh link-local address is unusable for ~2 s (DAD)
            sender = await start({"kind": "multicast", "where": "h1", "host": "ff02::1",
                                  "port": port, "message": "Hello, all nodes"})
            await self._ended(sender)
            sent = next((e for e in sender.history if e.type == "sent"), None)
            if sent is not None:
                break
            await asyncio.sleep(0.25)
        got = reached(sender)
        for host, listener in listeners.items():
            steps.append(reach_step(
                lab, host, listener.id in got, f"listener on {host} bound to [::] port {port}",
                "every IPv6 host is a member of ff02::1 on each link: IPv6's answer to "
                "broadcast", "ff02::1 is link-local: no router forwards it"))
