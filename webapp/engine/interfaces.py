"""This machine's interfaces as the kernel reports them: names, state, MTU, addresses with
their netmasks and broadcast addresses (getifaddrs(3) through ctypes, the MTU by ioctl)."""

import ctypes
import ctypes.util
import fcntl
import ipaddress
import socket
import struct
from dataclasses import asdict, dataclass, field
from pathlib import Path

SIOCGIFMTU = 0x8921  # Linux ioctl: an interface's MTU
IFF_UP, IFF_BROADCAST, IFF_LOOPBACK, IFF_RUNNING = 0x1, 0x2, 0x8, 0x40


class _Sockaddr(ctypes.Structure):
    _fields_ = [("family", ctypes.c_ushort), ("data", ctypes.c_ubyte * 14)]


class _Ifaddrs(ctypes.Structure):
    pass


_Ifaddrs._fields_ = [
    ("next", ctypes.POINTER(_Ifaddrs)),
    ("name", ctypes.c_char_p),
    ("flags", ctypes.c_uint),
    ("addr", ctypes.POINTER(_Sockaddr)),
    ("netmask", ctypes.POINTER(_Sockaddr)),
    ("broadaddr", ctypes.POINTER(_Sockaddr)),
    ("data", ctypes.c_void_p),
]


@dataclass
class Address:
    """One address of an interface."""

    family: str  # "ipv4" or "ipv6"
    address: str
    netmask: str
    prefix: int
    broadcast: str | None = None


@dataclass
class Interface:
    """One network interface."""

    name: str
    index: int
    state: str  # "up" or "down", with the kernel's operstate in `operstate`
    operstate: str
    mtu: int | None
    loopback: bool
    addresses: list[Address] = field(default_factory=list)

    def to_dict(self) -> dict:
        """The interface as JSON."""
        return asdict(self)


def _ip(pointer) -> str | None:
    if not pointer:
        return None
    family = pointer.contents.family
    raw = ctypes.string_at(ctypes.addressof(pointer.contents), 28)
    if family == socket.AF_INET:
        return socket.inet_ntop(socket.AF_INET, raw[4:8])
    if family == socket.AF_INET6:
        return socket.inet_ntop(socket.AF_INET6, raw[8:24])
    return None


def _mtu(name: str) -> int | None:
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            answer = fcntl.ioctl(probe.fileno(), SIOCGIFMTU, struct.pack("16si", name.encode(), 0))
        return struct.unpack("16si", answer)[1]
    except OSError:
        return None


def _operstate(name: str) -> str:
    try:
        return Path(f"/sys/class/net/{name}/operstate").read_text().strip()
    except OSError:
        return "unknown"


def interfaces() -> list[Interface]:
    """Every interface with its addresses, in the kernel's order; empty where unsupported."""
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    head = ctypes.POINTER(_Ifaddrs)()
    if libc.getifaddrs(ctypes.byref(head)) != 0:
        return []
    found: dict[str, Interface] = {}
    try:
        node = head
        while node:
            entry = node.contents
            name = entry.name.decode(errors="replace")
            if name not in found:
                up = bool(entry.flags & IFF_UP)
                try:
                    index = socket.if_nametoindex(name)
                except OSError:
                    index = 0
                found[name] = Interface(
                    name=name, index=index, state="up" if up else "down",
                    operstate=_operstate(name), mtu=_mtu(name),
                    loopback=bool(entry.flags & IFF_LOOPBACK),
                )
            address, netmask = _ip(entry.addr), _ip(entry.netmask)
            if address and netmask:
                version = 4 if ":" not in address else 6
                prefix = bin(int(ipaddress.ip_address(netmask.split("%")[0]))).count("1")
                broadcast = _ip(entry.broadaddr) if entry.flags & IFF_BROADCAST else None
                found[name].addresses.append(Address(
                    family=f"ipv{version}", address=address.split("%")[0], netmask=netmask,
                    prefix=prefix, broadcast=broadcast if version == 4 else None,
                ))
            node = entry.next
    finally:
        libc.freeifaddrs(head)
    return list(found.values())


def ipv4_addresses() -> list[tuple[str, str]]:
    """(interface, IPv4 address) for every IPv4 address of this machine."""
    return [(i.name, a.address) for i in interfaces() for a in i.addresses
            if a.family == "ipv4"]


def loopback_broadcast() -> str:
    """The broadcast address of the loopback network (127.0.0.0/8): 127.255.255.255."""
    return "127.255.255.255"


def host_choices() -> list[tuple[str, str]]:
    """(address, label) for the host fields: loopback, all interfaces, then each interface."""
    choices = [("127.0.0.1", "loopback"), ("0.0.0.0", "all interfaces (servers only)")]
    ipv6 = [("::1", "IPv6 loopback"), ("::", "all interfaces, IPv6 (dual-stack unless v6only)")]
    for interface in interfaces():
        for a in interface.addresses:
            if a.family == "ipv4" and a.address != "127.0.0.1":
                choices.append((a.address, interface.name))
            elif a.family == "ipv6" and a.address != "::1":
                # A link-local address is the same on every link: it needs its scope.
                scoped = ipaddress.ip_address(a.address).is_link_local
                ipv6.append((f"{a.address}%{interface.name}" if scoped else a.address,
                             f"{interface.name} (link-local)" if scoped else interface.name))
    return choices + ipv6


def broadcast_choices(limited: bool = False) -> list[tuple[str, str]]:
    """(broadcast address, label): loopback's, then each interface's subnet broadcast, then
    255.255.255.255 when the operator allows it (`limited`)."""
    choices = [(loopback_broadcast(), "loopback network 127.0.0.0/8")]
    for interface in interfaces():
        for address in interface.addresses:
            if address.broadcast:
                choices.append((address.broadcast,
                                f"{interface.name} {address.address}/{address.prefix}"))
    if limited:
        choices.append(("255.255.255.255", "every host on every attached LAN"))
    return choices
