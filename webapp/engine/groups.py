"""Multicast socket options: join groups (any source or source-specific), choose the
interface, TTL and loopback of a sender, and IP_MULTICAST_ALL.

Python 3.11 lacks several Linux constants, so they are defined here with their Linux values.
Interfaces are given by name (`lo`, `eth0`) or, for IPv4, by one of their addresses; a name
is looked up with an ioctl on the worker's own socket, so it is the name as the socket's
network namespace (a lab host's) knows it.
"""

import errno
import fcntl
import ipaddress
import socket
import struct

from webapp.engine.errors import BadSpec, Conflict

IP_MULTICAST_ALL = 49  # Linux: deliver every group joined on this host (the default, 1)
IP_ADD_SOURCE_MEMBERSHIP = 39  # Linux: struct ip_mreq_source {group, interface, source}
IPV6_MULTICAST_ALL = 29  # Linux: IPv6's IP_MULTICAST_ALL
MCAST_JOIN_SOURCE_GROUP = 46  # Linux: struct group_source_req (any family)
SIOCGIFINDEX = 0x8933
SIOCGIFADDR = 0x8915
_IFREQ = struct.Struct("16s16s")  # struct ifreq: the name, then a union (index or sockaddr)


def default_interface(family: int, in_lab: bool) -> str:
    """Where a group is used when no interface is given: a lab host's only link, or
    loopback on this machine (so nothing reaches a real network by default)."""
    if in_lab:
        return "eth0"
    return "lo" if family == socket.AF_INET6 else "127.0.0.1"


def _is_address(interface: str) -> bool:
    try:
        ipaddress.IPv4Address(interface)
    except ValueError:
        return False
    return True


def interface_index(sock: socket.socket, name: str) -> int:
    """The index of interface `name` in the socket's namespace; `BadSpec` if none."""
    if name.isdigit():
        return int(name)
    try:
        reply = fcntl.ioctl(sock.fileno(), SIOCGIFINDEX, _IFREQ.pack(name.encode(), b""))
    except OSError:
        raise BadSpec(f"There is no interface {name!r} here: use one this host has, such as "
                      "lo (or eth0 on a lab host)", field="interface") from None
    return struct.unpack_from("i", reply, 16)[0]


def interface_ipv4(sock: socket.socket, interface: str) -> bytes:
    """The IPv4 address (packed) of `interface`, a name or already an address."""
    if _is_address(interface):
        return socket.inet_aton(interface)
    interface_index(sock, interface)  # a clear error for an unknown name
    try:
        reply = fcntl.ioctl(sock.fileno(), SIOCGIFADDR, _IFREQ.pack(interface.encode(), b""))
    except OSError:
        raise BadSpec(f"Interface {interface} has no IPv4 address: give an interface that "
                      "has one, or its address", field="interface") from None
    return reply[20:24]  # sockaddr_in: family, port, then the address


def _v4_interface(sock: socket.socket, interface: str) -> bytes:
    """ip_mreqn's address and index for IP_ADD_MEMBERSHIP / IP_MULTICAST_IF."""
    if _is_address(interface):
        return socket.inet_aton(interface) + struct.pack("@i", 0)
    return socket.inet_aton("0.0.0.0") + struct.pack("@i", interface_index(sock, interface))


def _v6_index(sock: socket.socket, interface: str) -> int:
    if _is_address(interface):
        raise BadSpec(f"An IPv6 group is joined on an interface name (lo, eth0), not on the "
                      f"IPv4 address {interface}", field="interface")
    return interface_index(sock, interface)


def _sockaddr_in6(address: str) -> bytes:
    packed = struct.pack("@H", socket.AF_INET6) + struct.pack("!HI", 0, 0) + \
        socket.inet_pton(socket.AF_INET6, address) + struct.pack("@I", 0)
    return packed.ljust(128, b"\0")  # a sockaddr_storage


def join(sock: socket.socket, group: str, interface: str, sources: tuple[str, ...] = ()) -> None:
    """Join `group` on `interface`, from any source or only from each of `sources`."""
    v6 = sock.family == socket.AF_INET6
    try:
        if v6:
            index = _v6_index(sock, interface)
            if not sources:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_JOIN_GROUP,
                                socket.inet_pton(socket.AF_INET6, group) + struct.pack("@I", index))
            for source in sources:
                # struct group_source_req: the index, padding to 8, then two sockaddr_storage
                request = struct.pack("@I4x", index) + _sockaddr_in6(group) + \
                    _sockaddr_in6(source)
                sock.setsockopt(socket.IPPROTO_IPV6, MCAST_JOIN_SOURCE_GROUP, request)
        elif sources:
            where = interface_ipv4(sock, interface)
            for source in sources:
                sock.setsockopt(socket.IPPROTO_IP, IP_ADD_SOURCE_MEMBERSHIP,
                                socket.inet_aton(group) + where + socket.inet_aton(source))
        else:
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP,
                            socket.inet_aton(group) + _v4_interface(sock, interface))
    except OSError as exc:
        raise _join_error(exc, group, interface) from None


def _join_error(exc: OSError, group: str, interface: str) -> Conflict:
    if exc.errno == errno.ENODEV or exc.errno == errno.EADDRNOTAVAIL:
        why = (f"this host has no interface {interface} (or it has no address there): "
               "give one it has, such as 127.0.0.1 or lo")
    elif exc.errno == errno.ENOBUFS:
        why = "this socket joined as many groups or sources as the kernel allows (20)"
    else:
        why = exc.strerror or str(exc)
    return Conflict(f"Cannot join {group} on {interface}: [Errno {exc.errno}] {why}",
                    field="interface")


def set_multicast_all(sock: socket.socket, on: bool) -> None:
    """IP_MULTICAST_ALL: with it on (Linux's default) a socket bound to the wildcard address
    hears every group any socket of this host joined; off, only the groups it joined."""
    if sock.family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, IPV6_MULTICAST_ALL, int(on))
    sock.setsockopt(socket.IPPROTO_IP, IP_MULTICAST_ALL, int(on))


def set_sender(sock: socket.socket, interface: str, ttl: int, loop: bool) -> None:
    """Choose the interface a group's datagrams leave by, their TTL (hop limit) and whether
    this host's own members hear them."""
    try:
        if sock.family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF,
                            _v6_index(sock, interface))
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, ttl)
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_LOOP, int(loop))
        else:
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF,
                            socket.inet_aton("0.0.0.0") + _v4_interface(sock, interface))
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, ttl)
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, int(loop))
    except OSError as exc:
        raise Conflict(f"Cannot send multicast by interface {interface}: [Errno {exc.errno}] "
                       f"{exc.strerror or exc}: give one this host has, such as 127.0.0.1",
                       field="interface") from None
