"""Port numbers and service names: the first section of the chapter."""

import socket
from pathlib import Path

from webapp.engine.errors import BadSpec

RANGES = (
    (0, 1023, "well-known", "reserved for standard services; binding needs root on Linux"),
    (1024, 49151, "registered", "registered with IANA for particular services, but free to use"),
    (49152, 65535, "dynamic", "IANA's dynamic/private range, for ephemeral ports"),
)


def ephemeral_range() -> tuple[int, int] | None:
    """This machine's range for OS-chosen ports (Linux: ip_local_port_range)."""
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return None


def lookup(query: str) -> dict:
    """A port number or UDP service name, both ways, with the range it falls in."""
    text = str(query).strip()
    # ASCII digits only: '³'.isdigit() is true, but int('³') raises.
    if text.isascii() and text.isdigit() and len(text) <= 5:
        port = int(text)
        if port > 65535:
            raise BadSpec(f"Port {port} is out of range: ports go from 0 to 65535", field="port")
        try:
            name = socket.getservbyport(port, "udp")
        except OSError:
            name = None
    else:
        name = text
        try:
            port = socket.getservbyname(text, "udp")
        except (OSError, UnicodeError, ValueError):  # unknown, not ASCII, or holding a NUL
            raise BadSpec(f"No UDP service is named {text!r} in this machine's services "
                          "table (/etc/services): try 'domain', 'ntp' or a number",
                          field="port") from None
    low, high, label, meaning = next(r for r in RANGES if r[0] <= port <= r[1])
    ephemeral = ephemeral_range()
    return {
        "port": port,
        "name": name,
        "protocol": "udp",
        "range": label,
        "range_bounds": [low, high],
        "meaning": meaning,
        "ephemeral": list(ephemeral) if ephemeral else None,
        "in_ephemeral": bool(ephemeral and ephemeral[0] <= port <= ephemeral[1]),
    }
