"""Sockets: resolve names off the event loop, open non-blocking UDP sockets, and say what
went wrong in words a student can act on."""

import asyncio
import errno
import fcntl
import functools
import ipaddress
import os
import socket
import struct
import termios
from dataclasses import dataclass

from webapp.engine.errors import BadSpec, Conflict, EngineError
from webapp.engine.events import Address
from webapp.engine.netns import interface_index, new_socket

MAX_BYTES = 65535  # the book's MAX_BYTES: big enough for any UDP datagram


@dataclass(frozen=True, slots=True)
class Target:
    """A resolved address: the family to open a socket with and the (host, port) to use."""

    family: socket.AddressFamily
    address: Address
    name: str  # what the person typed, for messages
    netns: str | None = None  # the lab host's network namespace the socket lives in
    addresses: tuple[str, ...] = ()  # every address the name resolved to (all are checked)

    def socket(self, kind: int = socket.SOCK_DGRAM, proto: int = 0) -> socket.socket:
        """A new socket of this target's family, in its namespace when it has one."""
        return new_socket(self.family, kind, proto, self.netns)

    @property
    def family_name(self) -> str:
        """`ipv4` or `ipv6`, as events carry it."""
        return "ipv6" if self.family == socket.AF_INET6 else "ipv4"

    def family_note(self) -> str:
        """Which family a start used, for its first event: nothing for an IPv4 literal (the
        book's words stay as they are), the family for an IPv6 one, and what a host name
        resolved to."""
        word = "IPv6" if self.family == socket.AF_INET6 else "IPv4"
        literal = self.name.strip("[]").split("%")[0]
        try:
            ipaddress.ip_address(literal)
        except ValueError:
            if self.name in ("", "*"):
                return ""
            return f" ({self.name} resolved to {self.address[0]}: {word})"
        return " (IPv6)" if word == "IPv6" else ""


def short(address: tuple) -> Address:
    """(host, port) from any socket address, dropping IPv6 flow info and scope."""
    return (address[0], address[1])


def plain_ip(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The address `host` names, an IPv4-mapped IPv6 address as the IPv4 address it carries
    and without a scope; None for a name."""
    try:
        ip = ipaddress.ip_address(host.split("%")[0])
    except ValueError:
        return None
    if ip.version == 6 and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def same_peer(a: Address, b: Address) -> bool:
    """Whether two (host, port) pairs are one peer: `::ffff:127.0.0.1` and `127.0.0.1` are
    (a dual-stack socket sees IPv4 peers as mapped addresses), `::1` and `0::1` too."""
    if a[1] != b[1]:
        return False
    ip_a, ip_b = plain_ip(a[0]), plain_ip(b[0])
    if ip_a is None or ip_b is None:
        return a[0] == b[0]
    return ip_a == ip_b


MAPPED_NOTE = (" (an IPv4 peer: a dual-stack IPv6 socket sees IPv4 addresses as "
               "IPv4-mapped ::ffff:a.b.c.d)")


def dual_stack_note(target: Target, v6only: bool) -> str:
    """For a bind of `::` with v6only off: that it is dual-stack, and what IPv4 peers look
    like there."""
    if target.family != socket.AF_INET6 or v6only or target.address[0] != "::":
        return ""
    return ("; dual-stack (v6only off): IPv4 peers arrive too, shown as ::ffff:a.b.c.d")


def mapped_note(host: str) -> str:
    """The one-sentence explanation for a peer shown as an IPv4-mapped address, or ''."""
    try:
        ip = ipaddress.ip_address(host.split("%")[0])
    except ValueError:
        return ""
    return MAPPED_NOTE if ip.version == 6 and ip.ipv4_mapped is not None else ""


async def resolve_port(port: int | str) -> int:
    """A port number, looking up service names (`domain` → 53) in the UDP table."""
    if isinstance(port, int):
        return port
    loop = asyncio.get_running_loop()
    try:
        return await loop.run_in_executor(None, socket.getservbyname, port, "udp")
    except OSError:
        raise BadSpec(
            f"Unknown service name {port!r} for UDP: use a port number, or a name from "
            "/etc/services such as 'domain' (53)",
            field="port",
        ) from None


def _link_local(host: str) -> tuple[str, str] | None:
    """(address, scope) when `host` is an IPv6 link-local literal (scope '' if none)."""
    base, _, scope = host.partition("%")
    try:
        ip = ipaddress.ip_address(base)
    except ValueError:
        return None
    return (base, scope) if ip.version == 6 and ip.is_link_local else None


async def _scoped(base: str, scope: str, number: int, netns: str | None) -> Target:
    """A link-local target: the scope names the interface, looked up where the socket lives
    (a lab host's `eth0` exists only in its namespace)."""
    if not scope or scope == "0":
        raise BadSpec(
            f"{base} is a link-local address: every interface has its own fe80::/64, so the "
            f"address needs a scope saying which interface. Add %interface, such as "
            f"{base}%eth0",
            field="host",
        )
    loop = asyncio.get_running_loop()
    index = await loop.run_in_executor(None, interface_index, scope, netns)
    if not index:
        where = "on that lab host" if netns else "on this machine"
        raise BadSpec(
            f"There is no interface {scope!r} {where} for the scope of {base}: use one of "
            "its interface names (the Interfaces panel lists them), such as eth0",
            field="host",
        )
    return Target(socket.AF_INET6, (base, number, 0, index), f"{base}%{scope}",
                  addresses=(f"{base}%{scope}",))


async def resolve(host: str, port: int | str, *, passive: bool = False,
                  netns: str | None = None) -> Target:
    """Resolve `host` and `port` without blocking the loop; IPv4 first when a name has both.

    `passive` is for binding: an empty host then means every interface (`0.0.0.0`). IPv6
    literals may come in brackets (`[::1]`); a link-local one needs a scope (`fe80::1%eth0`),
    looked up in `netns` when the socket will live there.
    """
    number = await resolve_port(port)
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if passive and host in ("", "0.0.0.0", "*"):
        return Target(socket.AF_INET, ("0.0.0.0", number), host, addresses=("0.0.0.0",))
    link = _link_local(host)
    if link is not None:
        return await _scoped(*link, number, netns)
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, number, type=socket.SOCK_DGRAM)
    except (socket.gaierror, UnicodeError):
        raise BadSpec(
            f"The host {host!r} does not resolve: check the spelling, or use an address "
            "such as 127.0.0.1",
            field="host",
        ) from None
    infos.sort(key=lambda info: info[0] != socket.AF_INET)
    family, _, _, _, sockaddr = infos[0]
    every = tuple(dict.fromkeys(info[4][0] for info in infos))
    return Target(family, sockaddr, host, addresses=every)


def bind_error(exc: OSError, target: Target, dual_stack: bool = False) -> EngineError:
    """The person-facing error for a failed bind(); `dual_stack`: it was `::` with
    IPV6_V6ONLY off, which needs the port on IPv4 as well."""
    host, port = target.address[0], target.address[1]
    if exc.errno == errno.EADDRINUSE:
        also = (f" (:: with v6only off is dual-stack: it needs port {port} on IPv4 too, so an "
                "IPv4 socket on that port is in the way; v6only on binds IPv6 only)"
                if dual_stack else "")
        return Conflict(
            f"Port {port} on {host} is already in use by another program or worker "
            f"([Errno 98] Address already in use){also}: stop it or pick another port",
            field="port",
        )
    if exc.errno == errno.EADDRNOTAVAIL:
        return Conflict(
            f"The address {host} is not available on this machine ([Errno 99] Cannot assign "
            "requested address): pick one of its own addresses, 127.0.0.1, or 0.0.0.0 for all"
            + (" (IPv6: ::1, or :: for all)" if target.family == socket.AF_INET6 else ""),
            field="host",
        )
    if exc.errno == errno.EACCES:
        return BadSpec(
            f"Port {port} is below 1024 and only root may bind it: pick a port from 1024 up",
            field="port",
        )
    return Conflict(f"Cannot use {host} port {port}: {exc.strerror or exc}", field="host")


def host_is_any(target: Target) -> bool:
    """Whether the target is IPv6's every-address `::`."""
    return target.family == socket.AF_INET6 and target.address[0] == "::"


def open_bound(target: Target, *, reuse_addr: bool = False,
               v6only: bool | None = None) -> socket.socket:
    """A non-blocking UDP socket bound to `target`, or an `EngineError` saying why not.

    `reuse_addr` sets SO_REUSEADDR first, so several sockets may share the port. `v6only`
    sets IPV6_V6ONLY on an IPv6 socket: False makes `::` dual-stack (IPv4 peers too)."""
    if v6only and target.family != socket.AF_INET6:
        raise BadSpec(f"v6only is an IPv6 option, and {target.name or '0.0.0.0'} is IPv4: "
                      "bind :: (or another IPv6 address) to use it, or turn v6only off",
                      field="v6only")
    sock = target.socket()
    try:
        sock.setblocking(False)
        if reuse_addr:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if v6only is not None and target.family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, int(v6only))
        sock.bind(target.address)
    except OSError as exc:
        sock.close()
        dual = target.family == socket.AF_INET6 and host_is_any(target) and not v6only
        raise bind_error(exc, target, dual) from None
    return sock


def open_client(target: Target, *, connect: bool) -> socket.socket:
    """A non-blocking UDP socket for a client, connected to `target` when asked."""
    sock = target.socket()
    try:
        sock.setblocking(False)
        if connect:
            sock.connect(target.address)
    except OSError as exc:
        sock.close()
        raise Conflict(
            f"Cannot connect a UDP socket to {target.name} port {target.address[1]}: "
            f"{exc.strerror or exc}; check the address and that this machine has a route to it",
            field="host",
        ) from None
    return sock


def describe_os_error(exc: OSError, peer: Address | None) -> str:
    """A kernel error on send or receive, in the book's words plus what to do."""
    where = f" at {peer!r}" if peer else ""
    if exc.errno == errno.ECONNREFUSED:
        return (
            f"[Errno 111] Connection refused: nothing is listening{where} "
            "(the kernel got an ICMP port-unreachable); start a server there or check the port"
        )
    if exc.errno == errno.EACCES:
        return (f"[Errno 13] Permission denied: sending to the broadcast address{where} needs "
                "SO_BROADCAST (turn so_broadcast on)")
    if exc.errno == errno.EAGAIN:
        return "The socket's send buffer is full: the datagram was not sent"
    return f"[Errno {exc.errno}] {exc.strerror or exc}"


SO_MEMINFO = 55  # Linux: the socket's memory figures, SK_MEMINFO_* (missing from Python)
MEMINFO = struct.Struct("9I")  # rmem_alloc, rcvbuf, wmem_alloc, sndbuf, fwd_alloc,
# wmem_queued, optmem, backlog, drops


def kernel_queue(sock: socket.socket) -> tuple[int, int] | None:
    """(bytes waiting in the receive queue, datagrams the kernel dropped) for a UDP socket;
    None where that is not available.

    From SO_MEMINFO: one call on the socket itself, whatever its namespace, where reading
    /proc/net/udp (the fallback, for kernels before 4.6) costs a pass over every socket of
    the namespace, per worker, every second."""
    try:
        info = MEMINFO.unpack(sock.getsockopt(socket.SOL_SOCKET, SO_MEMINFO, MEMINFO.size))
        return info[0], info[8]
    except (OSError, struct.error):
        pass
    try:
        inode = str(os.fstat(sock.fileno()).st_ino)
        table = "/proc/net/udp6" if sock.family == socket.AF_INET6 else "/proc/net/udp"
        with open(table) as lines:
            for line in lines:
                fields = line.split()
                if len(fields) > 12 and fields[9] == inode:
                    return int(fields[4].split(":")[1], 16), int(fields[12])
    except (OSError, ValueError):
        pass
    return None


@functools.lru_cache(maxsize=64)
def queued_cost(size: int) -> int:
    """Bytes of kernel memory one queued datagram of `size` bytes takes (its skb truesize),
    measured once per size with a private pair of loopback sockets."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as receiver, \
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
        receiver.bind(("127.0.0.1", 0))
        sender.sendto(b"\0" * size, receiver.getsockname())
        queue = kernel_queue(receiver)
    return queue[0] if queue and queue[0] > 0 else max(size, 1)


def waiting_datagrams(sock: socket.socket) -> tuple[int, int]:
    """(about how many datagrams wait unread, bytes of kernel memory they hold).

    The kernel counts queued memory, not datagrams: the count divides that memory by the
    cost of one datagram the size of the next one, exact when they are all alike."""
    queue = kernel_queue(sock)
    if not queue or not queue[0]:
        return 0, 0
    try:
        next_size = struct.unpack("i", fcntl.ioctl(sock.fileno(), termios.FIONREAD, b"\0" * 4))[0]
    except OSError:
        next_size = 0
    return max(1, round(queue[0] / queued_cost(next_size))), queue[0]
