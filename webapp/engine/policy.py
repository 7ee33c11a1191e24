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
SENDING_KINDS = frozenset({"client", "spoofer", "stream", "broadcast", "mtu-probe"})
LOOPBACK = (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128"))
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


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
    lab_networks: tuple[Network, ...] = ()
    _shared: tuple[TokenBucket, TokenBucket] | None = field(default=None, repr=False)

    def is_local(self, address: str, in_lab: bool = False) -> bool:
        """Loopback, or (for a worker placed on a lab host) the virtual LAN: no caps there."""
        ip = ipaddress.ip_address(address.split("%")[0])
        nets = (*LOOPBACK, *self.lab_networks) if in_lab else LOOPBACK
        return any(ip in net for net in nets if ip.version == net.version)

    def in_lab_network(self, address: str) -> bool:
        """Whether `address` belongs to the virtual LAN's subnets."""
        ip = ipaddress.ip_address(address.split("%")[0])
        return any(ip in net for net in self.lab_networks if ip.version == net.version)

    def check(self, kind: str, addresses: list[str] | str, *, in_lab: bool = False) -> bool:
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
            ip = ipaddress.ip_address(address.split("%")[0])
            allowed = any(ip in net for net in self.allowed_networks if ip.version == net.version)
            if not allowed and not self.lab_networks and any(ip in net for net in (LAN, FAR)):
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
