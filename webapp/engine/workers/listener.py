"""The receiver of listing 2-4: it binds with SO_REUSEADDR so that several can share a port,
as several hosts on one LAN would, and reports every datagram without replying.

It is also a multicast member: it joins the groups of its spec (source-specific when the spec
names sources) and turns IP_MULTICAST_ALL off unless asked, so it hears only its own groups."""

import asyncio

from webapp.engine import groups
from webapp.engine.events import Listening, Received, format_address
from webapp.engine.payload import show
from webapp.engine.specs import ListenerSpec
from webapp.engine.udp import dual_stack_note, mapped_note, open_bound, short
from webapp.engine.workers.base import Worker


class ListenerWorker(Worker):
    """Receives and reports; never replies."""

    kind = "listener"
    counter_names = ("received", "bytes_in", "kernel_drops", "errors")
    spec: ListenerSpec

    def open(self) -> None:
        spec = self.spec
        interface = spec.interface or groups.default_interface(self.target.family,
                                                               bool(spec.where))
        for group in spec.join:  # before anything is opened: a refusal leaves nothing behind
            self.policy.check_group(group, spec.interface, in_lab=bool(spec.where))
        self.sock = open_bound(self.target, reuse_addr=True, v6only=spec.v6only)
        try:
            groups.set_multicast_all(self.sock, spec.multicast_all)
            for group in spec.join:
                groups.join(self.sock, group, interface, spec.sources)
        except Exception:
            self.sock.close()
            self.sock = None
            raise
        self.local = short(self.sock.getsockname())
        joined = ""
        if spec.join:
            joined = f"; member of {', '.join(spec.join)} on {interface}"
            if spec.sources:
                joined += f", only from {', '.join(spec.sources)}"
        if spec.multicast_all:
            joined += ("; IP_MULTICAST_ALL on: it also hears groups other sockets of this host "
                       "joined")
        self.emit(Listening, f"Listening for datagrams at {format_address(self.local)}"
                  f"{self.target.family_note()}{dual_stack_note(self.target, spec.v6only)}"
                  f"{joined}", local=self.local, family=self.target.family_name)

    async def run(self) -> str:
        loop = asyncio.get_running_loop()
        self._stop: asyncio.Future[None] = loop.create_future()
        loop.add_reader(self.sock.fileno(), self._on_readable)
        self.watch_kernel_drops()
        await self._stop  # runs until stopped
        return "finished"

    def _on_readable(self) -> None:
        self.read_ready(self._handle)

    def _handle(self, data: bytes, address: tuple) -> None:
        peer = short(address)
        self.hear(peer, data)
        self.counters["received"] += 1
        self.counters["bytes_in"] += len(data)
        if not self.shows():
            return
        text = show(data)
        self.emit(Received, f"The client at {format_address(peer)} says: {text!r}"
                  f"{mapped_note(peer[0])}",
                  local=self.local, peer=peer, size=len(data), text=text)
