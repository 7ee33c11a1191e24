"""One-click experiments on the virtual LAN, as the chapter describes them between machines.

Each returns its steps with what happened and why; the workers it starts are removed at the
end (their events stay in the log). Traffic stays inside the lab's namespaces.
"""

import asyncio
import itertools
from typing import Any

from webapp.engine.errors import BadSpec, EngineError
from webapp.engine.lab.multicast import MULTICAST_SCENARIOS, MulticastScenarios
from webapp.engine.lab.steps import reach_step, reached

SCENARIOS = {
    "exchange": "a client on h1 and a server on h2 exchange the book's datagrams",
    "broadcast": "a broadcast from h1 reaches listeners on h2 and h3, not h4 (another subnet)",
    "mtu": "an MTU probe from h1 to h4 learns the smaller MTU from the router's ICMP",
    "binding": "a server on h2 bound to 127.0.0.1 is unreachable from h1; bound to 0.0.0.0 it is",
    "ipv6": "h1 reaches h2 over IPv6: its 2001:2:0:1:: address, then its fe80:: link-local "
            "one, which needs a %scope",
    "mtu6": "IPv6 path-MTU discovery from h1 to h4: the router never fragments, it answers "
            "with ICMPv6 Packet Too Big",
}

SCENARIOS |= MULTICAST_SCENARIOS


class LabScenarios(MulticastScenarios):
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
        got = reached(sender)
        for host, listener in listeners.items():
            steps.append(reach_step(
                lab, host, listener.id in got, f"listener on {host} ({lab.host(host).address})",
                "same subnet as h1: the broadcast reaches every host on it",
                "another subnet: routers do not forward broadcasts"))

    async def _mtu(self, lab, start, steps) -> None:
        await self._path_mtu(lab, start, steps, ipv6=False)

    async def _mtu6(self, lab, start, steps) -> None:
        await self._path_mtu(lab, start, steps, ipv6=True)

    async def _path_mtu(self, lab, start, steps, *, ipv6: bool) -> None:
        """h1 → h4 through the router's 1280-byte link: the path MTU learned on IPv4 from ICMP
        'fragmentation needed', on IPv6 from ICMPv6 Packet Too Big."""
        h1, h4 = lab.host("h1"), lab.host("h4")
        headers, option, port = (48, "IPV6_MTU", 1081) if ipv6 else (28, "IP_MTU", 1080)
        # h1's kernel keeps a learned path MTU for minutes: forget it, so every run starts
        # from what h1 knows of its own link, as the first run did.
        await asyncio.get_running_loop().run_in_executor(None, lab.forget_path_mtus, "h1")
        await start({"kind": "listener", "where": "h4", "host": "::" if ipv6 else "0.0.0.0",
                     "port": port})
        probe = await start({"kind": "mtu-probe", "where": "h1",
                             "host": h4.address6 if ipv6 else h4.address, "port": port,
                             "size": h1.mtu - headers})
        await self._ended(probe, timeout=10)
        mtus = [e.mtu for e in probe.history if e.type == "mtu" and e.mtu and e.payload is None]
        final = next((e for e in reversed(probe.history) if e.type == "mtu" and e.payload), None)
        steps.append({"step": (f"h1 sends {h1.mtu - headers} bytes ({h1.mtu} − {headers}) to h4 "
                               "over IPv6") if ipv6 else
                              f"h1 sends {h1.mtu - headers} bytes with fragmentation forbidden",
                      "outcome": f"{option} read {mtus[0] if mtus else '?'} at first",
                      "ok": bool(mtus) and mtus[0] == h1.mtu,
                      "why": "h1 only knows its own link: 1500 bytes"})
        steps.append({"step": "the router cannot forward it onto the 1280-byte link",
                      "outcome": f"{option} now {mtus[-1] if mtus else '?'}",
                      "ok": bool(mtus) and mtus[-1] == h4.mtu,
                      "why": "routers never fragment in IPv6: it dropped the datagram and sent "
                             "back ICMPv6 Packet Too Big, and h1's kernel lowered its path MTU"
                             if ipv6 else
                             "the router sent back ICMP 'fragmentation needed' and h1's kernel "
                             "lowered its path MTU for h4"})
        steps.append({"step": "the largest payload that leaves unfragmented",
                      "outcome": final.message if final else "no answer",
                      "ok": bool(final) and final.payload == h4.mtu - headers,
                      "why": f"MTU − {headers - 8} bytes of IPv{6 if ipv6 else 4} header "
                             "− 8 bytes of UDP header"})

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

    async def _ipv6(self, lab, start, steps) -> None:
        h2 = lab.host("h2")
        await start({"kind": "server", "where": "h2", "host": "::", "port": 1100})
        client = await start({"kind": "client", "where": "h1", "host": h2.address6,
                              "port": 1100, "mode": "connected", "timeout": 0.5})
        await self._ended(client)
        reply = next((e for e in client.history if e.type == "reply"), None)
        steps.append({"step": f"h1 sends to h2's IPv6 address {h2.address6}",
                      "outcome": reply.message if reply else "no reply", "ok": bool(reply),
                      "why": "the server bound :: hears every IPv6 address of h2"})
        bare = (h2.link_local or "fe80::").split("%")[0]
        try:
            await start({"kind": "client", "where": "h1", "host": bare, "port": 1100})
        except BadSpec as exc:
            outcome, ok = exc.message, "%interface" in exc.message
        else:
            outcome, ok = "it was accepted", False
        steps.append({"step": f"h1 sends to h2's link-local {bare} without a scope",
                      "outcome": outcome, "ok": ok,
                      "why": "every link has its own fe80::/64: without a scope the kernel "
                             "cannot tell which interface to send from"})
        # The scope names h1's interface (its eth0), not h2's: the link the datagram leaves by.
        scoped = f"{bare}%eth0"
        client = await start({"kind": "client", "where": "h1", "host": scoped, "port": 1100,
                              "mode": "connected", "timeout": 0.5})
        await self._ended(client)
        reply = next((e for e in client.history if e.type == "reply"), None)
        steps.append({"step": f"h1 sends to {scoped}",
                      "outcome": reply.message if reply else "no reply", "ok": bool(reply),
                      "why": "%eth0 says which link: h1's eth0, the one h2 is on"})

