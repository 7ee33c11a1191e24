"""Listing 2-3, `big_sender.py`: forbid fragmentation, send a big datagram, learn the MTU.

Then it searches for the largest payload that leaves unfragmented and shows the header
arithmetic (IPv4: MTU − 20 − 8; IPv6: MTU − 40 − 8). Over IPv6 the same options have IPv6
twins (IPV6_MTU_DISCOVER, IPV6_MTU), and routers never fragment: a datagram too big for a
link is dropped and the router sends back an ICMPv6 Packet Too Big.
"""

import asyncio
import errno
import socket

from webapp.engine.errors import BadSpec
from webapp.engine.events import Error, Mtu, Sent, format_address
from webapp.engine.mtu import MtuSearch, largest_payload
from webapp.engine.sockopts import (
    IP_MTU, IP_MTU_DISCOVER, IP_PMTUDISC_DO, IPV6_MTU, IPV6_MTU_DISCOVER, IPV6_PMTUDISC_DO,
)
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
        self.ipv6 = self.target.family == socket.AF_INET6
        if self.ipv6:
            self.level, self.mtu_option = socket.IPPROTO_IPV6, IPV6_MTU
            discover, forbid = IPV6_MTU_DISCOVER, IPV6_PMTUDISC_DO
        else:
            self.level, self.mtu_option = socket.IPPROTO_IP, IP_MTU
            discover, forbid = IP_MTU_DISCOVER, IP_PMTUDISC_DO
        self.sock = open_client(self.target, connect=True)
        try:
            self.sock.setsockopt(self.level, discover, forbid)
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
                if exc.errno == errno.EMSGSIZE and (not mtu or size > self._largest(mtu)):
                    self.counters["too_big"] += 1
                    return False
                if exc.errno not in (errno.EMSGSIZE, errno.ECONNREFUSED):
                    raise
        return False

    def _mtu(self) -> int | None:
        try:
            return self.sock.getsockopt(self.level, self.mtu_option)
        except OSError:
            return None

    def _largest(self, mtu: int) -> int:
        return largest_payload(mtu, ipv6=self.ipv6)

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
            never = (" (over IPv6 routers never fragment: only the sender may, and it was "
                     "told not to)" if self.ipv6 else "")
            self.emit(Mtu, f"Alas, the datagram did not make it{never}", mtu=None, size=size,
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
        header = "40 (IPv6 header)" if self.ipv6 else "20 (IPv4 header)"
        arithmetic = (f"{mtu} (MTU) − {header} − 8 (UDP header) = "
                      f"{self._largest(mtu)}" if mtu else "no MTU was reported")
        if self.ipv6:
            arithmetic += ("; routers never fragment in IPv6: a bigger datagram is dropped "
                           "and the router answers with an ICMPv6 Packet Too Big")
        self.emit(Mtu, f"The largest payload that leaves unfragmented is {payload} bytes: "
                  f"{arithmetic}", mtu=mtu, payload=payload)
        return "finished"

    async def _search(self, mtu: int | None) -> int | None:
        search = MtuSearch(hint=self._largest(mtu) if mtu else None)
        while (size := search.next_size()) is not None and search.tries < 40:
            went = self._try(size)
            search.record(size, went)
            self.emit(Mtu, f"{size} bytes {'went' if went else 'is too big'}", mtu=None,
                      size=size, went=went)
            await asyncio.sleep(STEP_PAUSE)
        return search.result
