"""Listing 2-3, `big_sender.py`: forbid fragmentation, send a big datagram, learn the MTU.

Then it searches for the largest payload that leaves unfragmented and shows the header
arithmetic (IPv4: MTU − 20 − 8).
"""

import asyncio
import errno
import socket

from webapp.engine.errors import BadSpec
from webapp.engine.events import Error, Mtu, Sent, format_address
from webapp.engine.mtu import MtuSearch, largest_payload
from webapp.engine.sockopts import IP_MTU, IP_MTU_DISCOVER, IP_PMTUDISC_DO
from webapp.engine.specs import MtuProbeSpec
from webapp.engine.udp import describe_os_error, open_client, short
from webapp.engine.workers.base import Worker

STEP_PAUSE = 0.01  # seconds between probes, for a router's ICMP "too big" to come back


class MtuProbeWorker(Worker):
    """Probes the path MTU to a host."""

    kind = "mtu-probe"
    counter_names = ("sent", "too_big", "errors")
    spec: MtuProbeSpec

    def open(self) -> None:
        if self.target.family != socket.AF_INET:
            raise BadSpec("The MTU probe works on IPv4 (IP_MTU_DISCOVER is an IPv4 option): "
                          "use an IPv4 address such as 127.0.0.1", field="host")
        self.sock = open_client(self.target, connect=True)
        try:
            self.sock.setsockopt(socket.IPPROTO_IP, IP_MTU_DISCOVER, IP_PMTUDISC_DO)
        except OSError:
            self.close()
            raise BadSpec("This operating system has no IP_MTU_DISCOVER option, so it cannot "
                          "forbid fragmentation: the MTU probe needs Linux",
                          field="kind") from None
        self.local = short(self.sock.getsockname())
        self.server = short(self.target.address)

    def _try(self, size: int) -> bool:
        """Send `size` bytes; True if it left, False if too big for the path MTU."""
        for _ in range(3):
            try:
                self.sock.send(b"#" * size)
                self.counters["sent"] += 1
                return True
            except OSError as exc:
                # A connected socket reports an ICMP error about an *earlier* datagram on
                # the next send: "port unreachable" as ECONNREFUSED, and a router's
                # "fragmentation needed" as EMSGSIZE. Only an EMSGSIZE for a size above
                # the path MTU is about this one; for the others, send again.
                mtu = self._mtu()
                if exc.errno == errno.EMSGSIZE and (not mtu or size > largest_payload(mtu)):
                    self.counters["too_big"] += 1
                    return False
                if exc.errno not in (errno.EMSGSIZE, errno.ECONNREFUSED):
                    raise
        return False

    def _mtu(self) -> int | None:
        try:
            return self.sock.getsockopt(socket.IPPROTO_IP, IP_MTU)
        except OSError:
            return None

    async def run(self) -> str:
        size = self.spec.size
        before = self._mtu()
        self.emit(Mtu, f"Before the first send, IP_MTU is {before}: the MTU of the first link "
                  "on the route, all the kernel knows so far", mtu=before)
        try:
            went = self._try(size)
        except OSError as exc:
            self.counters["errors"] += 1
            self.emit(Error, describe_os_error(exc, self.server), error=str(exc),
                      errno=exc.errno)
            return "finished"
        where = format_address(self.server)
        if went:
            self.emit(Sent, f"The big datagram was sent! ({size} bytes to {where})",
                      local=self.local, peer=self.server, size=size, text="#" * 20 + "…")
        else:
            self.emit(Mtu, "Alas, the datagram did not make it", mtu=None, size=size,
                      went=False)
        await asyncio.sleep(STEP_PAUSE)
        mtu = self._mtu()
        self.emit(Mtu, f"Actual MTU: {mtu}", mtu=mtu)
        for _ in range(2):  # again if a router's ICMP lowered the MTU during the search
            payload = await self._search(mtu)
            now = self._mtu()
            if now == mtu:
                break
            self.emit(Mtu, f"The path MTU changed during the search: Actual MTU: {now}",
                      mtu=now)
            mtu = now
        arithmetic = (f"{mtu} (MTU) − 20 (IPv4 header) − 8 (UDP header) = "
                      f"{largest_payload(mtu)}" if mtu else "no MTU was reported")
        self.emit(Mtu, f"The largest payload that leaves unfragmented is {payload} bytes: "
                  f"{arithmetic}", mtu=mtu, payload=payload)
        return "finished"

    async def _search(self, mtu: int | None) -> int | None:
        search = MtuSearch(hint=largest_payload(mtu) if mtu else None)
        while (size := search.next_size()) is not None and search.tries < 40:
            went = self._try(size)
            search.record(size, went)
            self.emit(Mtu, f"{size} bytes {'went' if went else 'is too big'}", mtu=None,
                      size=size, went=went)
            await asyncio.sleep(STEP_PAUSE)
        return search.result
