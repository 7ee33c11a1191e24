"""Socket options a student can read and set on a live worker's socket.

Python's `socket` module lacks `IP_MTU_DISCOVER` and `IP_MTU` before 3.14 on some builds;
the Linux values are used where the names are missing.
"""

import socket
from dataclasses import dataclass

from webapp.engine.errors import BadSpec, Conflict

IP_MTU_DISCOVER = getattr(socket, "IP_MTU_DISCOVER", 10)
IP_PMTUDISC_DONT, IP_PMTUDISC_WANT, IP_PMTUDISC_DO, IP_PMTUDISC_PROBE = 0, 1, 2, 3
IP_MTU = getattr(socket, "IP_MTU", 14)
# The IPv6 twins (linux/in6.h); Python 3.11 has none of them.
IPV6_MTU_DISCOVER = getattr(socket, "IPV6_MTU_DISCOVER", 23)
IPV6_PMTUDISC_DO = getattr(socket, "IPV6_PMTUDISC_DO", 2)
IPV6_MTU = getattr(socket, "IPV6_MTU", 24)
PMTU_NAMES = {0: "IP_PMTUDISC_DONT", 1: "IP_PMTUDISC_WANT", 2: "IP_PMTUDISC_DO",
              3: "IP_PMTUDISC_PROBE"}
SOCK_TYPES = {socket.SOCK_DGRAM: "SOCK_DGRAM", socket.SOCK_STREAM: "SOCK_STREAM",
              socket.SOCK_RAW: "SOCK_RAW"}


@dataclass(frozen=True)
class Option:
    """One option: where it lives, what its values mean, whether it may be set."""

    name: str
    level: int
    number: int
    kind: str  # "bool", "int", "bytes" (a size), "type" or "pmtu"
    settable: bool
    help: str
    ipv4_only: bool = False
    ipv6_only: bool = False

    def describe(self, value: int) -> str:
        """The value in words."""
        if self.kind == "bool":
            return "on" if value else "off"
        if self.kind == "type":
            return SOCK_TYPES.get(value, str(value))
        if self.kind == "pmtu":
            return PMTU_NAMES.get(value, str(value))
        if self.kind == "bytes":
            return f"{value} bytes"
        return str(value)


OPTIONS = {o.name: o for o in (
    Option("SO_BROADCAST", socket.SOL_SOCKET, socket.SO_BROADCAST, "bool", True,
           "may send to broadcast addresses (off: sendto fails with Permission denied)"),
    Option("SO_DONTROUTE", socket.SOL_SOCKET, socket.SO_DONTROUTE, "bool", True,
           "send only to directly connected hosts, bypassing routing"),
    Option("SO_TYPE", socket.SOL_SOCKET, socket.SO_TYPE, "type", False,
           "the socket's type (read only): SOCK_DGRAM for UDP"),
    Option("SO_RCVBUF", socket.SOL_SOCKET, socket.SO_RCVBUF, "bytes", True,
           "receive buffer; the kernel doubles what you set, for its bookkeeping"),
    Option("SO_SNDBUF", socket.SOL_SOCKET, socket.SO_SNDBUF, "bytes", True,
           "send buffer; the kernel doubles what you set"),
    Option("SO_REUSEADDR", socket.SOL_SOCKET, socket.SO_REUSEADDR, "bool", True,
           "allow several sockets to bind the same address and port (listeners share a port)"),
    Option("IP_TTL", socket.IPPROTO_IP, socket.IP_TTL, "int", True,
           "hops a datagram may make before a router drops it (1 to 255)", ipv4_only=True),
    Option("IP_MTU_DISCOVER", socket.IPPROTO_IP, IP_MTU_DISCOVER, "pmtu", True,
           "path-MTU discovery: 2 (DO) forbids fragmenting, so a too-big send fails",
           ipv4_only=True),
    # An IPv6 socket has the IPv6 twins (an IPv4-level option is not its to read).
    Option("IPV6_UNICAST_HOPS", socket.IPPROTO_IPV6, socket.IPV6_UNICAST_HOPS, "int", True,
           "IPv6's TTL: hops a datagram may make before a router drops it (1 to 255)",
           ipv6_only=True),
    Option("IPV6_MTU_DISCOVER", socket.IPPROTO_IPV6, IPV6_MTU_DISCOVER, "pmtu", True,
           "path-MTU discovery: 2 (DO) forbids fragmenting at the sender (routers never "
           "fragment IPv6), so a too-big send fails", ipv6_only=True),
    Option("IPV6_V6ONLY", socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, "bool", False,
           "IPv6 only (read only: fixed at bind); off, a :: socket is dual-stack and sees "
           "IPv4 peers as ::ffff:a.b.c.d", ipv6_only=True),
)}


def _option(name: str) -> Option:
    option = OPTIONS.get(name.upper())
    if option is None:
        raise BadSpec(f"Unknown socket option {name!r}: use one of {', '.join(OPTIONS)}",
                      field="option")
    return option


def read_all(sock: socket.socket | None) -> list[dict]:
    """Every option's current value on `sock`, as JSON rows."""
    if sock is None:
        raise Conflict("This worker has no open socket (it has ended): options need a live one")
    rows = []
    for option in OPTIONS.values():
        if option.ipv4_only and sock.family != socket.AF_INET or \
                option.ipv6_only and sock.family != socket.AF_INET6:
            continue
        try:
            value = sock.getsockopt(option.level, option.number)
        except OSError as exc:
            rows.append({"name": option.name, "value": None, "text": exc.strerror,
                         "settable": False, "help": option.help})
            continue
        rows.append({"name": option.name, "value": value, "text": option.describe(value),
                     "settable": option.settable, "help": option.help})
    return rows


def set_option(sock: socket.socket | None, name: str, value) -> dict:
    """Set one option and return what the kernel really holds afterwards."""
    option = _option(name)
    if sock is None:
        raise Conflict("This worker has no open socket (it has ended): options need a live one")
    if not option.settable:
        raise BadSpec(f"{option.name} can only be read: {option.help}", field="value")
    if option.ipv4_only and sock.family != socket.AF_INET:
        raise BadSpec(f"{option.name} is an IPv4 option; this socket is IPv6", field="option")
    if option.ipv6_only and sock.family != socket.AF_INET6:
        raise BadSpec(f"{option.name} is an IPv6 option; this socket is IPv4", field="option")
    number = _value(option, value)
    try:
        sock.setsockopt(option.level, option.number, number)
    except OSError as exc:
        raise BadSpec(f"The kernel refused {option.name} = {value!r}: {exc.strerror}",
                      field="value") from None
    real = sock.getsockopt(option.level, option.number)
    return {"name": option.name, "asked": number, "value": real, "text": option.describe(real),
            "settable": True, "help": option.help}


def _value(option: Option, value) -> int:
    if isinstance(value, str):
        text = value.strip().upper()
        if option.kind == "bool" and text in ("ON", "TRUE", "1", "OFF", "FALSE", "0"):
            return int(text in ("ON", "TRUE", "1"))
        if option.kind == "pmtu":
            names = {v: k for k, v in PMTU_NAMES.items()}
            if text in names or f"IP_PMTUDISC_{text}" in names:
                return names.get(text, names.get(f"IP_PMTUDISC_{text}"))
        try:
            value = int(text)
        except ValueError:
            value = None
    if isinstance(value, bool):
        value = int(value)
    limits = {"bool": (0, 1), "pmtu": (0, 3), "int": (1, 255), "bytes": (1, 1 << 30)}
    low, high = limits.get(option.kind, (0, 1 << 30))
    if not isinstance(value, int) or not low <= value <= high:
        raise BadSpec(f"{option.name} takes a value from {low} to {high}", field="value")
    return value
