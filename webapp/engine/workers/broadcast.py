"""The sender of listing 2-4: SO_BROADCAST on, then sendto the network's broadcast address.

Each send event names the workers of this app that received the datagram, so the page can
show that every listener bound to 0.0.0.0 heard it and a server bound to 127.0.0.1 did not.
"""

import asyncio
import socket
import time

from webapp.engine.events import BroadcastSent, Error, format_address
from webapp.engine.payload import show
from webapp.engine.specs import BroadcastSpec
from webapp.engine.udp import describe_os_error, short
from webapp.engine.workers.base import Worker

HEAR_WAIT = 0.1  # seconds to let the receivers read before saying who heard it


class BroadcastWorker(Worker):
    """Sends broadcast datagrams."""

    kind = "broadcast"
    counter_names = ("sent", "reached", "errors")
    spec: BroadcastSpec

    def open(self) -> None:
        self.sock = self.target.socket()
        self.sock.setblocking(False)
        if self.spec.so_broadcast:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
        self.destination = short(self.target.address)

    default_message = "Broadcast datagram!"

    async def run(self) -> str:
        data = (self.spec.message or self.default_message).encode()
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
            self.emit(Error, self.failed(exc), error=str(exc), errno=exc.errno)
            return
        self.local = short(self.sock.getsockname())
        self.counters["sent"] += 1
        await asyncio.sleep(HEAR_WAIT)
        reached = sorted(w.id for w in self.peers()
                         if w is not self and w.heard_from(self.local[1], data, since))
        self.counters["reached"] += len(reached)
        text = show(data)
        who = ", ".join(reached) if reached else "no worker of this app"
        self.emit(BroadcastSent, self.sent(text, who), local=self.local, peer=self.destination,
                  size=len(data), text=text, reached=reached)

    def failed(self, exc: OSError) -> str:
        """What a failed send says."""
        return describe_os_error(exc, self.destination)

    def sent(self, text: str, who: str) -> str:
        """What a sent datagram says, naming the workers that heard it."""
        return f"Broadcast {text!r} to {format_address(self.destination)}; heard by {who}"
