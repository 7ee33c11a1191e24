"""The "Two machines" recipe's steps (`"do": "machines"`): udp_remote.py's server on one
machine of the fleet and its client on another, then a broadcast every machine hears.

The engine's recipe runner knows only its supervisor; these steps are handed to it from
here, so that the engine stays free of the fleet.
"""

import asyncio
import ipaddress
from typing import Any

from webapp.engine import Conflict, EngineError

PORT = 1060  # the book's port for udp_remote.py
LISTEN_PORT = 1061  # the broadcast's listeners, beside the server
WITHIN = 5.0  # seconds a reply or a broadcast gets to arrive
NEEDS_TWO = ("This recipe needs two machines that are up: start the dashboard with --nats "
             "and 'udplab agent' on another machine (README, \"Several machines\")")


def lan_address(machine: dict[str, Any]) -> dict[str, Any] | None:
    """A machine's first IPv4 address that another machine can reach (not loopback)."""
    for address in machine.get("interfaces", ()):
        text = str(address.get("address", ""))
        if "." in text and not text.startswith("127."):
            return address
    return None


class TwoMachines:
    """The steps of the recipe, on a fleet (which may be only this machine: then it says so)."""

    def __init__(self, fleet):
        self.fleet = fleet
        self.picked: dict[str, list[dict[str, Any]]] = {}  # run id -> its two machines
        self.started: dict[str, list[str]] = {}  # run id -> the workers it started

    async def do(self, run, step: dict[str, Any], result: dict[str, Any]) -> None:
        part = step.get("part")
        if part == "pick":
            result["actual"] = self._pick(run)
            return
        first, second = self.picked.get(run.id) or self._refuse(run)
        if part == "server":
            server = await self._start(run, "server", first, kind="server",
                                       host=first["address"], port=PORT)
            host, port = server["local"] or (first["address"], PORT)
            result["actual"] = f"Listening at ('{host}', {port}) on {first['name']}"
        elif part == "client":
            client = await self._start(run, "client", second, kind="client",
                                       host=first["address"], port=PORT, count=1)
            result["actual"], result["ok"] = await self._reply(client["id"])
        elif part == "broadcast":
            result["actual"], result["ok"] = await self._broadcast(run, second)
        else:
            raise Conflict(f"Unknown part {part!r} of the two-machines recipe")

    def _refuse(self, run):
        run.stopping = True  # the remaining steps would all say the same
        raise Conflict(NEEDS_TWO, field="machine")

    def _pick(self, run) -> str:
        up = [m for m in self.fleet.status() if m["state"] == "up" and lan_address(m)]
        up.sort(key=lambda m: (m["local"], m["name"]))  # agents first, by name (not by whose
        # message came first): the dashboard's own is the spare
        if len(up) < 2:
            self._refuse(run)
        self.picked[run.id] = [{"name": m["name"], "address": lan_address(m)["address"],
                                "prefix": lan_address(m)["prefix"], "status": m}
                               for m in up[:2]]
        return " and ".join(f"{m['name']} ({m['address']})" for m in self.picked[run.id])

    async def _start(self, run, short: str, machine: dict[str, Any], **spec) -> dict:
        worker = await self.fleet.start({**spec, "machine": machine["name"],
                                         "name": f"{run.id}-{short}"})
        self.started.setdefault(run.id, []).append(worker["id"])
        run.workers[f"{short}@{machine['name']}"] = worker["id"]
        return worker

    async def _reply(self, client_id: str) -> tuple[str, bool]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + WITHIN
        while loop.time() < deadline:
            for event in await self.fleet.events(client_id):
                if event["type"] == "reply":
                    return event["message"], True
            await asyncio.sleep(0.1)
        return f"no reply to {client_id} within {WITHIN:g} s", False

    async def _broadcast(self, run, sender: dict[str, Any]) -> tuple[str, bool]:
        """A listener on every machine on the sender's subnet; one broadcast to it."""
        subnet = ipaddress.ip_network(f"{sender['address']}/{sender['prefix']}", strict=False)
        listeners = {}
        for machine in self.fleet.status():
            on_subnet = any(ipaddress.ip_address(a["address"]) in subnet
                            for a in machine["interfaces"] if "." in a["address"])
            if machine["state"] == "up" and on_subnet:
                worker = await self._start(run, "listener", machine, kind="listener",
                                           host="0.0.0.0", port=LISTEN_PORT)
                listeners[machine["name"]] = worker["id"]
        await self._start(run, "broadcast", sender, kind="broadcast",
                          host=str(subnet.broadcast_address), port=LISTEN_PORT, count=1,
                          so_broadcast=True, message="Broadcast datagram!")
        loop = asyncio.get_running_loop()
        deadline, heard = loop.time() + WITHIN, set()
        while loop.time() < deadline and len(heard) < len(listeners):
            for name, worker_id in listeners.items():
                if name not in heard and \
                        (await self.fleet.get(worker_id))["counters"].get("received"):
                    heard.add(name)
            await asyncio.sleep(0.1)
        missing = sorted(set(listeners) - heard)
        text = f"to {subnet.broadcast_address}:{LISTEN_PORT}, heard on {', '.join(sorted(heard))}"
        if missing:
            return f"{text}; not on {', '.join(missing)}", False
        return f"{text}: heard on every machine", True

    async def clean_up(self, run) -> None:
        """Stop what the run started, on every machine (one that is gone is skipped)."""
        self.picked.pop(run.id, None)
        for worker_id in self.started.pop(run.id, []):
            try:
                await self.fleet.stop(worker_id)
            except EngineError:
                pass  # ended already, or its machine is lost: nothing left to stop
