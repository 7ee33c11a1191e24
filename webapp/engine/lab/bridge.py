"""The lab's switch as a multicast switch: IGMP/MLD snooping on its bridge, the group members
it learned (`bridge mdb show`), and which hosts' links a group's datagrams reach.

These run `ip` and `bridge` commands in the lab's namespaces: call them off the event loop.
"""

import json
import socket
import struct
import subprocess

from webapp.engine.errors import Conflict
from webapp.engine.netns import new_socket

BRIDGE = "br0"
# What the lab's bridge starts with (the kernel's defaults), restored after a scenario.
DEFAULTS = {"mcast_snooping": 1, "mcast_querier": 0, "mcast_query_response_interval": 1000}


def _run(*args: str) -> str:
    try:
        done = subprocess.run(list(args), capture_output=True, text=True, timeout=10)
    except FileNotFoundError:
        raise Conflict(f"The lab's multicast switch needs the '{args[0]}' command (Debian: "
                       "apt-get install iproute2)") from None
    if done.returncode != 0:
        raise Conflict(f"'{' '.join(args)}' failed: {done.stderr.strip() or done.returncode}")
    return done.stdout


def set_bridge(lab, **options: int) -> None:
    """`ip link set br0 type bridge OPTION VALUE` in the switch, one option per command:
    the kernel applies them in its own order, and a querier switched on before a shorter
    response interval is set would wait the old, longer one before it starts filtering."""
    for option, value in options.items():
        _run("ip", "-n", lab.ns("switch"), "link", "set", BRIDGE, "type", "bridge", option,
             str(value))


def members(lab, group: str) -> list[str]:
    """The lab hosts the bridge learned as members of `group` (from `bridge mdb show`)."""
    ports = {f"p{n}": f"h{n}" for n in (1, 2, 3)} | {"p0": "router"}
    raw = json.loads(_run("bridge", "-n", lab.ns("switch"), "-j", "mdb", "show") or "[]")
    found = {ports.get(entry.get("port"), entry.get("port")) for table in raw
             for entry in table.get("mdb", []) if entry.get("grp") == group}
    return sorted(found)


ETH_P_IP = 0x0800


class Tap:
    """What reaches one lab host's link, before its kernel decides whether anyone wants it:
    a packet socket on the host's eth0 that counts the UDP datagrams for a group and port
    (the link's own counters include IGMP, MLD and neighbour discovery too)."""

    def __init__(self, lab, host: str):
        self.sock = new_socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(ETH_P_IP),
                               lab.host(host).namespace)
        self.sock.setblocking(False)
        self.sock.bind(("eth0", ETH_P_IP))

    def count(self, group: str, port: int) -> int:
        """UDP datagrams to `group`:`port` that arrived since the last call (or the start)."""
        want = socket.inet_aton(group)
        seen = 0
        for _ in range(100_000):  # bounded: the socket's buffer holds far fewer
            try:
                packet = self.sock.recv(65535)
            except BlockingIOError:
                break
            header = (packet[0] & 0x0F) * 4
            if len(packet) >= header + 4 and packet[9] == socket.IPPROTO_UDP \
                    and packet[16:20] == want \
                    and struct.unpack_from("!H", packet, header + 2)[0] == port:
                seen += 1
        return seen

    def close(self) -> None:
        """Close the packet socket."""
        self.sock.close()
