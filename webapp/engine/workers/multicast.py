"""A sender to a multicast group: IP_MULTICAST_IF, IP_MULTICAST_TTL and IP_MULTICAST_LOOP,
then sendto the group, as the chapter's broadcast sender does to a broadcast address.

Each send event names the workers of this app that received the datagram (the group's
members that heard it), like a broadcast's `reached`.
"""

import asyncio
import time

from webapp.engine import groups
from webapp.engine.events import BroadcastSent, Error, format_address
from webapp.engine.payload import show
from webapp.engine.specs import MulticastSpec
from webapp.engine.udp import Target, bind_error, describe_os_error, short
from webapp.engine.workers.base import Worker
from webapp.engine.workers.broadcast import HEAR_WAIT


class MulticastWorker(Worker):
    """Sends datagrams to a multicast group."""

    kind = "multicast"
    counter_names = ("sent", "reached", "errors")
    spec: MulticastSpec

    def open(self) -> None:
        spec = self.spec
        self.interface = spec.interface or groups.default_interface(self.target.family,
                                                                    bool(spec.where))
        self.sock = self.target.socket()
        try:
            self.sock.setblocking(False)
            groups.set_sender(self.sock, self.interface, spec.ttl, spec.loop)
            if spec.bind:
                where = Target(self.target.family, (spec.bind, 0), spec.bind)
                try:
                    self.sock.bind(where.address)
                except OSError as exc:
                    raise bind_error(exc, where) from None
        except Exception:
            self.sock.close()
            self.sock = None
            raise
        self.destination = short(self.target.address)

    async def run(self) -> str:
        data = (self.spec.message or "Multicast datagram!").encode()
        for number in range(self.spec.count):
            if number:
                await asyncio.sleep(self.spec.interval)
            await self._send(data)
        return "finished"

    async def _send(self, data: bytes) -> None:
        await self.pace(len(data))
        since = time.time()
        try:
            self.sock.sendto(data, self.target.address)
        except OSError as exc:
            self.counters["errors"] += 1
            message = describe_os_error(exc, self.destination)
            if exc.errno == 99 and ":" in self.destination[0]:  # EADDRNOTAVAIL
                message += (": this host's link-local address is still being checked for "
                            "duplicates (DAD, about 2 s after the link comes up): try again")
            if exc.errno == 101:  # ENETUNREACH
                message += (f": interface {self.interface} has no route for the group (Linux "
                            "gives loopback no IPv6 multicast route): send from a lab host, "
                            "such as h1, instead")
            self.emit(Error, message, error=str(exc), errno=exc.errno)
            return
        self.local = short(self.sock.getsockname())
        self.counters["sent"] += 1
        await asyncio.sleep(HEAR_WAIT)
        reached = sorted(w.id for w in self.peers()
                         if w is not self and w.heard_from(self.local[1], data, since))
        self.counters["reached"] += len(reached)
        text = show(data)
        who = ", ".join(reached) if reached else "no worker of this app"
        spec = self.spec
        self.emit(BroadcastSent,
                  f"Multicast {text!r} to group {format_address(self.destination)} (TTL "
                  f"{spec.ttl}, loop {'on' if spec.loop else 'off'}, via {self.interface}); "
                  f"heard by {who}",
                  local=self.local, peer=self.destination, size=len(data), text=text,
                  reached=reached)
