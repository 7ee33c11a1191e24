"""Forged-source datagrams: an IPv4 + UDP packet built by hand and sent on a raw socket.

This is what a real impostor on the path can do: put the server's address in the source
field, so that `connect()` and address checks accept the lie; only a request ID the impostor
cannot guess still protects the client. Needs CAP_NET_RAW (root).
"""

import socket
import struct

from webapp.engine.errors import Refused
from webapp.engine.events import Address
from webapp.engine.netns import new_socket

NEEDS_RAW = (
    "Forging the source address needs a raw socket, which needs CAP_NET_RAW: run udplab as "
    "root, or give Python the capability (sudo setcap cap_net_raw+ep <path of the venv's "
    "python, resolved>)"
)


def checksum(data: bytes) -> int:
    """The Internet checksum (RFC 1071) of `data`."""
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def ipv4_udp(source: Address, destination: Address, payload: bytes, ident: int = 0) -> bytes:
    """An IPv4 packet carrying one UDP datagram from `source` to `destination`."""
    src, dst = socket.inet_aton(source[0]), socket.inet_aton(destination[0])
    length = 8 + len(payload)
    pseudo = struct.pack("!4s4sBBH", src, dst, 0, socket.IPPROTO_UDP, length)
    udp = struct.pack("!HHHH", source[1], destination[1], length, 0) + payload
    udp_sum = checksum(pseudo + udp) or 0xFFFF  # 0 means "no checksum" in UDP over IPv4
    udp = udp[:6] + struct.pack("!H", udp_sum) + udp[8:]
    header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + length, ident & 0xFFFF, 0x4000, 64,
                         socket.IPPROTO_UDP, 0, src, dst)
    header = header[:10] + struct.pack("!H", checksum(header)) + header[12:]
    return header + udp


def open_raw(namespace: str | None = None) -> socket.socket:
    """A raw socket that sends packets with our own IP header; `Refused` without privilege."""
    try:
        sock = new_socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW, namespace)
    except PermissionError:
        raise Refused(NEEDS_RAW, field="forge") from None
    sock.setblocking(False)
    return sock


def can_forge() -> bool:
    """Whether this process may open a raw socket (CAP_NET_RAW)."""
    try:
        open_raw().close()
    except Refused:
        return False
    return True
