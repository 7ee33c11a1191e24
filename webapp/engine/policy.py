"""The destination policy and the send limits: where workers may send, and how fast.

By default workers may send only to loopback and to the virtual LAN, at full speed: that
harms no one. The operator adds real networks with `--allow-net CIDR`; towards those, each
sending worker is throttled (1000 datagrams/s and 1 MB/s by default, the whole app 10×),
and servers never answer with more bytes than they received (no amplification) and answer
each source at most `replies_per_source` times a second. 255.255.255.255 needs its own flag.
"""

import ipaddress
from dataclasses import dataclass, field

from webapp.engine.errors import Refused
from webapp.engine.lab import FAR, LAN
from webapp.engine.ratelimit import Throttle, TokenBucket

LIMITED_BROADCAST = "255.255.255.255"
SENDING_KINDS = frozenset({"client", "spoofer", "stream", "broadcast", "mtu-probe",
                           "multicast"})
LOOPBACK = (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128"))
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def _ip(address: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """The address to judge: without its scope, and an IPv4-mapped IPv6 address
    (`::ffff:10.0.0.1`, what a dual-stack socket sends to for IPv4) as the IPv4 it carries."""
    ip = ipaddress.ip_address(address.split("%")[0])
    if ip.version == 6 and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


@dataclass
class Policy:
    """What the operator allows; `lab_networks` is kept up to date by the supervisor."""

    allow_limited_broadcast: bool = False
    allowed_networks: tuple[Network, ...] = ()
    worker_rate: float = 1000.0  # datagrams/s per sending worker towards real networks
    worker_bytes: float = 1_000_000.0  # bytes/s per sending worker towards real networks
    app_factor: float = 10.0  # the whole app may send this many times one worker's cap
    max_workers: int = 64  # live workers at once
    amplification: bool = False  # may servers answer real networks with more than they got?
    replies_per_source: float = 100.0  # replies/s to one source on a real network
    events_per_second: int = 1000  # datagrams a worker shows one by one a second; 0 = all
    max_multicast_ttl: int = 1  # the TTL a group may be sent with towards a real network
    lab_networks: tuple[Network, ...] = ()
    _shared: tuple[TokenBucket, TokenBucket] | None = field(default=None, repr=False)

    def is_local(self, address: str, in_lab: bool = False) -> bool:
        """Loopback, or (for a worker placed on a lab host) the virtual LAN: no caps there."""
        ip = _ip(address)
        nets = (*LOOPBACK, *self.lab_networks) if in_lab else LOOPBACK
        return any(ip in net for net in nets if ip.version == net.version)

    def in_lab_network(self, address: str) -> bool:
        """Whether `address` belongs to the virtual LAN's subnets (link-local fe80::/10
        belongs to every link, the machine's too, so it is judged as a real network here)."""
        ip = _ip(address)
        if ip.is_link_local:
            return False
        return any(ip in net for net in self.lab_networks if ip.version == net.version)

    def check(self, kind: str, addresses: list[str] | str, *, in_lab: bool = False,
              interface: str | None = None, ttl: int | None = None) -> bool:
        """Raise `Refused` (403) unless a worker of `kind` may send to every address.

        `in_lab` says the worker sits on a lab host: it may reach the lab's subnets, and
        nothing else but its own loopback (the lab has no route out). A worker on the machine
        itself may not send into the lab: the machine has no route there, so it would leave
        by the default route. Returns True when every address is local: no throttling."""
        if kind not in SENDING_KINDS:
            return True
        if isinstance(addresses, str):
            addresses = [addresses]
        local = True
        for address in addresses:
            if address == LIMITED_BROADCAST:
                if not self.allow_limited_broadcast:
                    raise Refused(
                        "Sending to 255.255.255.255 (the book's <broadcast>) is refused: it "
                        "reaches every host on every LAN this machine is attached to. Use a "
                        "subnet's broadcast address such as 127.255.255.255, or start udplab "
                        "with --allow-limited-broadcast", field="host")
                local = False
                continue
            # Only the multicast kind chooses the interface a group leaves by (loopback unless
            # told otherwise); any other kind would send it by the default route.
            if kind == "multicast":
                local = self.check_group(address, interface, ttl or 1, in_lab=in_lab) and local
                continue
            if self.is_local(address, in_lab):
                continue
            if self.in_lab_network(address) and not in_lab:
                raise Refused(
                    f"{address} is in the virtual LAN, which only its own hosts can reach: "
                    "place the worker on a lab host (the 'where' field, such as h1)",
                    field="where")
            if in_lab:
                raise Refused(
                    f"A worker on a lab host can reach only the virtual LAN ("
                    f"{', '.join(str(n) for n in self.lab_networks)}) and its own loopback, "
                    f"not {address}", field="host")
            ip = _ip(address)
            allowed = any(ip in net for net in self.allowed_networks if ip.version == net.version)
            if not allowed and not self.lab_networks and any(
                    ip in net for net in (LAN, FAR) if ip.version == net.version):
                raise Refused(
                    f"{address} is an address of the virtual LAN, and the virtual LAN is "
                    "down: build it first (the Lab panel, or POST /api/lab), then place the "
                    "worker on one of its hosts", field="where")
            if not allowed:
                width = 32 if ip.version == 4 else 128
                raise Refused(
                    f"Sending to {address} is refused: by default workers send only to "
                    "loopback and the virtual LAN. To allow it, start udplab with "
                    f"--allow-net {ip}/{width} (or the whole network, such as "
                    f"--allow-net {ipaddress.ip_network(f'{ip}/24' if ip.version == 4 else f'{ip}/64', strict=False)})",
                    field="host")
            local = False
        return local

    def check_group(self, group: str, interface: str | None, ttl: int = 1, *,
                    in_lab: bool = False) -> bool:
        """Raise `Refused` unless a group may be joined or sent to on `interface`; True when
        that stays local (loopback, or a lab host, whose only link is the virtual LAN).

        A group goes wherever its interface leads: on loopback it stays on this machine, on a
        real interface it reaches that LAN (IGMP reports for a join, datagrams for a send), so
        there it needs `--allow-net` covering the group and a TTL of at most
        `max_multicast_ttl` (1 by default: routers never forward it)."""
        if in_lab or interface is None or interface == "lo":
            return True
        try:
            if ipaddress.ip_address(interface) in LOOPBACK[0]:
                return True
        except ValueError:
            pass  # an interface name other than lo: a real one
        ip = ipaddress.ip_address(group.split("%")[0])
        if not any(ip in net for net in self.allowed_networks if ip.version == net.version):
            raise Refused(
                f"The group {group} on interface {interface} would reach a real network: by "
                "default groups are used only on loopback and the virtual LAN. Leave the "
                f"interface empty (loopback), or start udplab with --allow-net {ip}/"
                f"{32 if ip.version == 4 else 128}", field="interface")
        if ttl > self.max_multicast_ttl:
            raise Refused(
                f"A TTL of {ttl} towards a real network is refused: multicast there is capped "
                f"at TTL {self.max_multicast_ttl} (it would cross {ttl - 1} router(s) that "
                "forward multicast). Use TTL 1, or start udplab with --max-multicast-ttl "
                f"{ttl}", field="ttl")
        return False

    def throttle(self) -> Throttle:
        """Buckets for one worker sending to a real network, sharing the app-wide ones."""
        if self._shared is None:
            self._shared = (
                TokenBucket(self.worker_rate * self.app_factor, self.worker_rate * self.app_factor),
                TokenBucket(self.worker_bytes * self.app_factor,
                            self.worker_bytes * self.app_factor),
            )
        mine = (TokenBucket(self.worker_rate, max(1.0, self.worker_rate / 10)),
                TokenBucket(self.worker_bytes, max(65507.0, self.worker_bytes / 10)))
        return Throttle(mine, self._shared)

    def describe_caps(self) -> str:
        """The caps in words, for events and cards."""
        return (f"{self.worker_rate:g} datagrams/s and {self.worker_bytes / 1e6:g} MB/s per "
                f"worker, {self.app_factor:g}× that for the whole app")
