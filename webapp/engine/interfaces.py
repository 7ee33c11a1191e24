"""This machine's own addresses, for the page's host pickers."""

import fcntl
import socket
import struct

SIOCGIFADDR = 0x8915  # Linux ioctl: the IPv4 address of an interface


def ipv4_addresses() -> list[tuple[str, str]]:
    """(interface, IPv4 address) for every interface that has one; empty off Linux."""
    out = []
    try:
        names = [name for _, name in socket.if_nameindex()]
    except OSError:
        return out
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        for name in names:
            request = struct.pack("256s", name.encode()[:15])
            try:
                answer = fcntl.ioctl(probe.fileno(), SIOCGIFADDR, request)
            except OSError:
                continue  # no IPv4 address on this interface
            out.append((name, socket.inet_ntoa(answer[20:24])))
    return out


def host_choices() -> list[tuple[str, str]]:
    """(address, label) for the host fields: loopback, all interfaces, then each interface."""
    choices = [("127.0.0.1", "loopback"), ("0.0.0.0", "all interfaces (servers only)")]
    for name, address in ipv4_addresses():
        if address != "127.0.0.1":
            choices.append((address, name))
    choices.append(("::1", "IPv6 loopback"))
    return choices
