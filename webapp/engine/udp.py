"""Sockets: resolve names off the event loop, open non-blocking UDP sockets, and say what
went wrong in words a student can act on."""

import asyncio
import errno
import fcntl
import functools
import os
import socket
import struct
import termios
from dataclasses import dataclass

from webapp.engine.errors import BadSpec, Conflict, EngineError
from webapp.engine.events import Address
from webapp.engine.netns import new_socket

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


def short(address: tuple) -> Address:
    """(host, port) from any socket address, dropping IPv6 flow info and scope."""
    return (address[0], address[1])


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


async def resolve(host: str, port: int | str, *, passive: bool = False) -> Target:
    """Resolve `host` and `port` without blocking the loop; IPv4 first when a name has both.

    `passive` is for binding: an empty host then means every interface (`0.0.0.0`).
    """
    number = await resolve_port(port)
    if passive and host in ("", "0.0.0.0", "*"):
        return Target(socket.AF_INET, ("0.0.0.0", number), host, addresses=("0.0.0.0",))
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


def bind_error(exc: OSError, target: Target) -> EngineError:
    """The person-facing error for a failed bind()."""
    host, port = target.address[0], target.address[1]
    if exc.errno == errno.EADDRINUSE:
        return Conflict(
            f"Port {port} on {host} is already in use by another program or worker "
            f"([Errno 98] Address already in use): stop it or pick another port",
            field="port",
        )
    if exc.errno == errno.EADDRNOTAVAIL:
        return Conflict(
            f"The address {host} is not available on this machine ([Errno 99] Cannot assign "
            "requested address): pick one of its own addresses, 127.0.0.1, or 0.0.0.0 for all",
            field="host",
        )
    if exc.errno == errno.EACCES:
        return BadSpec(
            f"Port {port} is below 1024 and only root may bind it: pick a port from 1024 up",
            field="port",
        )
    return Conflict(f"Cannot use {host} port {port}: {exc.strerror or exc}", field="host")


def open_bound(target: Target, *, reuse_addr: bool = False) -> socket.socket:
    """A non-blocking UDP socket bound to `target`, or an `EngineError` saying why not.

    `reuse_addr` sets SO_REUSEADDR first, so several sockets may share the port."""
    sock = target.socket()
    try:
        sock.setblocking(False)
        if reuse_addr:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(target.address)
    except OSError as exc:
        sock.close()
        raise bind_error(exc, target) from None
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
