"""The impostor of the book's "promiscuous clients and unwelcome replies".

From a socket of its own it sends `message` (default `FAKE`) to an address or to a client
worker's port, as the book does from a third terminal. With `forge`, it builds the packet
itself on a raw socket and writes the client's server address as the source: what an
attacker on the path can do, and what `connect()` and address checks cannot catch.
"""

import asyncio

from webapp.engine import forge
from webapp.engine.events import Address, Error, Sent, format_address
from webapp.engine.payload import show
from webapp.engine.specs import SpooferSpec
from webapp.engine.udp import describe_os_error, short
from webapp.engine.workers.base import Worker


class SpooferWorker(Worker):
    """Sends impostor datagrams."""

    kind = "spoofer"
    counter_names = ("sent", "errors")
    spec: SpooferSpec
    source: Address | None = None  # for `forge`: the address to pretend to be

    def open(self) -> None:
        if self.spec.forge:
            self.sock = forge.open_raw(self.target.netns)
        else:
            self.sock = self.target.socket()
            self.sock.setblocking(False)
        self.victim = short(self.target.address)

    async def run(self) -> str:
        data = (self.spec.message or "FAKE").encode()
        for number in range(self.spec.count):
            if number:
                await asyncio.sleep(self.spec.interval)
            await self.pace(len(data))
            self._send(data, number)
        return "finished"

    def _send(self, data: bytes, number: int) -> None:
        try:
            if self.spec.forge:
                packet = forge.ipv4_udp(self.source, self.victim, data, ident=number)
                self.sock.sendto(packet, (self.victim[0], 0))
                self.local = self.source
                how = f", forged as coming from {format_address(self.source)}"
            else:
                self.sock.sendto(data, self.target.address)
                self.local = short(self.sock.getsockname())
                how = f" from {format_address(self.local)}"
        except OSError as exc:
            self.counters["errors"] += 1
            self.emit(Error, describe_os_error(exc, self.victim), error=str(exc),
                      errno=exc.errno)
            return
        self.counters["sent"] += 1
        text = show(data)
        self.emit(Sent, f"Sent {text!r} to {format_address(self.victim)}{how}",
                  local=self.local, peer=self.victim, size=len(data), text=text)
