"""The receiver of listing 2-4: it binds with SO_REUSEADDR so that several can share a port,
as several hosts on one LAN would, and reports every datagram without replying.

It is also a multicast member: it joins the groups of its spec (source-specific when the spec
names sources) and turns IP_MULTICAST_ALL off unless asked, so it hears only its own groups."""

import asyncio
import os

from webapp.engine import groups
from webapp.engine.events import Error, Listening, Received, format_address
from webapp.engine.fastpath import MODE_LISTEN, REC_ERROR, FastPath, Record
from webapp.engine.payload import show
from webapp.engine.specs import ListenerSpec
from webapp.engine.udp import describe_os_error, dual_stack_note, mapped_note, open_bound, short
from webapp.engine.workers.base import SAMPLE_WINDOW, Worker


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
        self.read_in_c()
        self.watch_kernel_drops()
        await self._stop  # runs until stopped
        return "finished"

    # --- reading (the C loop reads and counts; see fastpath.py) ---------------------------

    def make_fast(self) -> FastPath:
        return FastPath(self.sock, MODE_LISTEN, budget=self.per_window, window=SAMPLE_WINDOW)

    def on_record(self, record: Record) -> None:
        if record.kind == REC_ERROR:
            exc = OSError(record.errno, os.strerror(record.errno))
            self.emit(Error, describe_os_error(exc, None), error=str(exc), errno=record.errno)
            return
        peer = short(record.address)
        text = show(record.data, size=record.size)
        self.emit(Received, f"The client at {format_address(peer)} says: {text!r}"
                  f"{mapped_note(peer[0])}",
                  local=self.local, peer=peer, size=record.size, text=text)
