"""One-click experiments on the virtual LAN, as the chapter describes them between machines.

Each returns its steps with what happened and why; the workers it starts are removed at the
end (their events stay in the log). Traffic stays inside the lab's namespaces.
"""

import asyncio
import itertools
from typing import Any

from webapp.engine import labbridge
from webapp.engine.errors import BadSpec, EngineError

SCENARIOS = {
    "exchange": "a client on h1 and a server on h2 exchange the book's datagrams",
    "broadcast": "a broadcast from h1 reaches listeners on h2 and h3, not h4 (another subnet)",
    "mtu": "an MTU probe from h1 to h4 learns the smaller MTU from the router's ICMP",
    "binding": "a server on h2 bound to 127.0.0.1 is unreachable from h1; bound to 0.0.0.0 it is",
    "multicast": "a group sent from h1 with TTL 1 (then 5) reaches members on h2 and h3, "
                 "not h4 behind the router",
    "ssm": "a source-specific join on h2 hears the group from h1, its source, and not from h3",
    "snooping": "IGMP snooping: the lab's switch sends a group only to the ports of its "
                "members, and floods it to every host when snooping is off",
    "all-nodes": "IPv6 has no broadcast: ff02::1 (all nodes) from h1 reaches every host on "
                 "the link, h2 and h3, not h4",
}


class LabScenarios:
    """Runs the lab's one-click experiments on a supervisor."""

    def __init__(self, supervisor):
        self.supervisor = supervisor
        self._numbers = itertools.count(1)

    async def run(self, name: str) -> dict[str, Any]:
        """Run scenario `name`; its steps, each with `outcome`, `ok` and `why`."""
        play = getattr(self, f"_{name.replace('-', '_')}", None)
        if name not in SCENARIOS or play is None:
            raise BadSpec(f"Unknown lab scenario {name!r}: use one of {', '.join(SCENARIOS)}",
                          field="scenario")
        lab = self.supervisor.lab
        lab.host("h1")  # BadSpec when the lab is not built
        run_id = f"lab-{name}-{next(self._numbers)}"
        made: list[str] = []
        steps: list[dict[str, Any]] = []

        async def start(spec: dict[str, Any]):
            spec = {**spec, "name": f"{run_id}-{len(made) + 1}"}
            worker = await self.supervisor.start(spec)
            made.append(worker.id)
            return worker

        try:
            await play(lab, start, steps)
        except EngineError as exc:
            steps.append({"step": "the scenario stopped", "outcome": "error", "ok": False,
                          "why": exc.message})
        finally:
            for worker_id in made:
                if worker_id in self.supervisor.workers:
                    await self.supervisor.remove(worker_id)
        return {"id": run_id, "scenario": name, "about": SCENARIOS[name], "steps": steps}

    @staticmethod
    async def _ended(worker, timeout: float = 5.0) -> None:
        await asyncio.wait([worker.task], timeout=timeout)

    async def _exchange(self, lab, start, steps) -> None:
        h2 = lab.host("h2")
        server = await start({"kind": "server", "where": "h2", "host": "0.0.0.0", "port": 1060})
        client = await start({"kind": "client", "where": "h1", "host": h2.address,
                              "port": 1060, "mode": "connected", "timeout": 0.5})
        await self._ended(client)
        reply = next((e for e in client.history if e.type == "reply"), None)
        heard = next((e for e in server.history if e.type == "received"), None)
        steps.append({"step": f"h1 sends to h2 ({h2.address}) port 1060",
                      "outcome": heard.message if heard else "nothing arrived", "ok": bool(heard),
                      "why": "the switch carries the datagram from h1's interface to h2's"})
        steps.append({"step": "h2 replies to h1", "outcome": reply.message if reply else
                      "no reply", "ok": bool(reply),
                      "why": f"h1's client saw the address the OS gave it: {client.local}"})

    async def _broadcast(self, lab, start, steps) -> None:
        listeners = {}
        for host in ("h2", "h3", "h4"):
            listeners[host] = await start({"kind": "listener", "where": host,
                                           "host": "0.0.0.0", "port": 1070})
        h1 = lab.host("h1")
        sender = await start({"kind": "broadcast", "where": "h1", "host": h1.broadcast,
                              "port": 1070, "message": "Hello, LAN!"})
        await self._ended(sender)
        sent = next((e for e in sender.history if e.type == "sent"), None)
        reached = set(sent.reached) if sent else set()
        for host, listener in listeners.items():
            got = listener.id in reached
            same = lab.host(host).subnet == h1.subnet
            steps.append({
                "step": f"listener on {host} ({lab.host(host).address})",
                "outcome": "received it" if got else "did not receive it",
                "ok": got == same,
                "why": ("same subnet as h1: the broadcast reaches every host on it" if same else
                        "another subnet: routers do not forward broadcasts"),
            })

    async def _mtu(self, lab, start, steps) -> None:
        h4 = lab.host("h4")
        # h1's kernel keeps a learned path MTU for minutes: forget it, so every run starts
        # from what h1 knows of its own link, as the first run did.
        await asyncio.get_running_loop().run_in_executor(None, lab.forget_path_mtus, "h1")
        await start({"kind": "listener", "where": "h4", "host": "0.0.0.0", "port": 1080})
        probe = await start({"kind": "mtu-probe", "where": "h1", "host": h4.address,
                             "port": 1080, "size": 1472})
        await self._ended(probe, timeout=10)
        mtus = [e.mtu for e in probe.history if e.type == "mtu" and e.mtu and e.payload is None]
        final = next((e for e in reversed(probe.history) if e.type == "mtu" and e.payload), None)
        steps.append({"step": "h1 sends 1472 bytes with fragmentation forbidden",
                      "outcome": f"IP_MTU read {mtus[0] if mtus else '?'} at first",
                      "ok": bool(mtus) and mtus[0] == lab.host("h1").mtu,
                      "why": "h1 only knows its own link: 1500 bytes"})
        steps.append({"step": "the router cannot forward it onto the 1280-byte link",
                      "outcome": f"IP_MTU now {mtus[-1] if mtus else '?'}",
                      "ok": bool(mtus) and mtus[-1] == h4.mtu,
                      "why": "the router sent back ICMP 'fragmentation needed' and h1's kernel "
                             "lowered its path MTU for h4"})
        steps.append({"step": "the largest payload that leaves unfragmented",
                      "outcome": final.message if final else "no answer",
                      "ok": bool(final) and final.payload == h4.mtu - 28,
                      "why": "MTU − 20 bytes of IPv4 header − 8 bytes of UDP header"})

    async def _binding(self, lab, start, steps) -> None:
        h2 = lab.host("h2")
        local_only = await start({"kind": "server", "where": "h2", "host": "127.0.0.1",
                                  "port": 1090})
        client = await start({"kind": "client", "where": "h1", "host": h2.address,
                              "port": 1090, "mode": "connected", "timeout": 0.2,
                              "give_up_after": 0.4})
        await self._ended(client)
        refused = any(e.type == "error" and e.errno == 111 for e in client.history)
        steps.append({"step": "server on h2 bound to 127.0.0.1; h1 sends to h2's address",
                      "outcome": "Connection refused" if refused else "no reply",
                      "ok": not any(e.type == "reply" for e in client.history),
                      "why": "127.0.0.1 is h2's own loopback: no other host can reach it"})
        await self.supervisor.stop(local_only.id)
        everyone = await start({"kind": "server", "where": "h2", "host": "0.0.0.0",
                                "port": 1090})
        client = await start({"kind": "client", "where": "h1", "host": h2.address,
                              "port": 1090, "mode": "connected", "timeout": 0.5})
        await self._ended(client)
        reply = next((e for e in client.history if e.type == "reply"), None)
        steps.append({"step": "server on h2 bound to 0.0.0.0; h1 sends again",
                      "outcome": reply.message if reply else "no reply", "ok": bool(reply),
                      "why": f"0.0.0.0 means every interface of h2, {h2.address} included"})
        del everyone

    # --- multicast (issue 16) -----------------------------------------------------------

    async def _multicast(self, lab, start, steps) -> None:
        group, port = "239.1.1.1", 1110
        members = {host: await start({"kind": "listener", "where": host, "port": port,
                                      "join": [group]}) for host in ("h2", "h3", "h4")}
        for ttl in (1, 5):
            sender = await start({"kind": "multicast", "where": "h1", "host": group,
                                  "port": port, "ttl": ttl, "message": f"TTL {ttl}"})
            await self._ended(sender)
            sent = next((e for e in sender.history if e.type == "sent"), None)
            reached = set(sent.reached) if sent else set()
            for host, member in members.items():
                if ttl > 1 and host != "h4":
                    continue
                got = member.id in reached
                same = lab.host(host).subnet == lab.host("h1").subnet
                steps.append({
                    "step": f"TTL {ttl}: member of {group} on {host}",
                    "outcome": "received it" if got else "did not receive it",
                    "ok": got == same,
                    "why": ("same link as h1: the switch delivers the group to its members"
                            if same else "behind the router, which forwards unicast only: it "
                            "runs no multicast routing (no PIM, no IGMP proxy), so no group "
                            "leaves its subnet, whatever its TTL" if ttl > 1 else
                            "TTL 1 means this link only, and the router does no multicast "
                            "routing anyway"),
                })

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
        reached = set(sent.reached) if sent else set()
        for host, listener in listeners.items():
            got = listener.id in reached
            same = lab.host(host).subnet == lab.host("h1").subnet
            steps.append({
                "step": f"listener on {host} bound to [::] port {port}",
                "outcome": "received it" if got else "did not receive it",
                "ok": got == same,
                "why": ("every IPv6 host is a member of ff02::1 on each link: IPv6's answer to "
                        "broadcast" if same else "ff02::1 is link-local: no router forwards it"),
            })
