"""Worker specs: what a person asks for, checked field by field before anything is opened.

`parse_spec(raw)` takes the JSON object of `POST /api/workers` (or a form's strings) and gives
a frozen spec, or raises `BadSpec` naming the field, the cause and the fix.
"""

import ipaddress
import math
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, ClassVar

from webapp.engine.backoff import Backoff
from webapp.engine.errors import BadSpec

CLIENT_MODES = ("promiscuous", "check-address", "connected", "request-id")
# Each kind as the page's panels and messages name it (the spoofer is the book's impostor).
KIND_NAMES = {"server": "server", "client": "client", "spoofer": "impostor",
              "stream": "stream", "listener": "listener", "broadcast": "broadcast",
              "mtu-probe": "MTU probe"}
_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,47}")
_SERVICE = re.compile(r"[A-Za-z][A-Za-z0-9._+-]{0,31}")
_MAX_MESSAGE = 65507  # the largest UDP payload over IPv4


def _name(field: str, value: Any) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str) or not _NAME.fullmatch(value):
        raise BadSpec(
            f"The {field} {value!r} is not usable: use up to 48 lower-case letters, digits, "
            "'-' or '_', starting with a letter or digit",
            field=field,
        )
    return value


def _host(field: str, value: Any) -> str:
    if not isinstance(value, str) or len(value) > 253 or any(c.isspace() for c in value.strip()):
        raise BadSpec(
            f"The {field} must be an address or a host name such as 127.0.0.1 or localhost, "
            f"not {value!r}",
            field=field,
        )
    return value.strip()


def _port(field: str, value: Any) -> int | str:
    if isinstance(value, str) and value.strip().isdigit():
        try:
            value = int(value.strip())
        except ValueError:  # a digit int() refuses ('²'), or more than 4300 digits
            pass
    if isinstance(value, int) and not isinstance(value, bool):
        if 0 <= value <= 65535:
            return value
        raise BadSpec(
            f"Port {value} is out of range: UDP ports go from 0 (the OS picks one) to 65535",
            field=field,
        )
    if isinstance(value, str) and _SERVICE.fullmatch(value.strip()):
        return value.strip()  # a service name, looked up when the worker starts
    raise BadSpec(
        f"The {field} must be a number from 0 to 65535 or a service name such as 'domain', "
        f"not {value!r}",
        field=field,
    )


def _plain(number: float) -> str:
    """A bound as people write it: 10,000,000 rather than 1e+07."""
    return f"{int(number):,}" if float(number).is_integer() else f"{number:g}"


def _number(lo: float, hi: float, *, integer: bool = False) -> Callable[[str, Any], Any]:
    def check(field: str, value: Any) -> Any:
        if isinstance(value, str):
            try:
                value = int(value) if integer else float(value)
            except ValueError:
                value = None
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        if ok and isinstance(value, int) and not lo <= value <= hi:
            ok = False  # before any float(): an int past 1e308 raises OverflowError there
        if integer:
            ok = ok and float(value).is_integer()
        if not ok or not math.isfinite(value) or not lo <= value <= hi:
            kind = "a whole number" if integer else "a number"
            raise BadSpec(f"The {field} must be {kind} from {_plain(lo)} to {_plain(hi)}",
                          field=field)
        return int(value) if integer else float(value)

    return check


def _optional(check: Callable[[str, Any], Any]) -> Callable[[str, Any], Any]:
    def optional(field: str, value: Any) -> Any:
        return None if value is None or value == "" else check(field, value)

    return optional


def _choice(*options: str) -> Callable[[str, Any], str]:
    def check(field: str, value: Any) -> str:
        if value not in options:
            raise BadSpec(
                f"Unknown {field} {value!r}: use one of {', '.join(options)}", field=field
            )
        return value

    return check


def _flag(field: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "on", "yes", "1", "false", "off",
                                                     "no", "0"):
        return value.lower() in ("true", "on", "yes", "1")
    raise BadSpec(f"The {field} must be true or false, not {value!r}", field=field)


def _message(field: str, value: Any) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str) or len(value.encode()) > _MAX_MESSAGE:
        raise BadSpec(
            f"The {field} must be text of at most {_MAX_MESSAGE} bytes (the largest UDP payload)",
            field=field,
        )
    return value


_SEED = _optional(_number(-(2**63), 2**63 - 1, integer=True))
COMMON_RULES: dict[str, Callable[[str, Any], Any]] = {"where": _name}  # every kind takes these
# Rules every kind lists: the worker's name, and the address it binds to or sends to.
_ADDRESS: dict[str, Callable[[str, Any], Any]] = {"name": _name, "host": _host, "port": _port}
# Rules of the senders that repeat one message (impostor, broadcast, multicast): which, how
# many times, how far apart.
_REPEATS: dict[str, Callable[[str, Any], Any]] = {
    "message": _message,
    "count": _number(1, 10_000, integer=True),
    "interval": _number(0, 3600),
}


@dataclass(frozen=True, slots=True, kw_only=True)
class Spec:
    """Fields every worker kind shares."""

    kind: ClassVar[str]
    rules: ClassVar[dict[str, Callable[[str, Any], Any]]] = {"name": _name}
    name: str | None = None
    host: str = "127.0.0.1"
    port: int | str = 1060
    where: str | None = None  # a host of the virtual LAN; None: this machine itself

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> "Spec":
        """Check every field of `raw` and build the spec; unknown fields are refused."""
        values = {}
        for key, value in raw.items():
            if key == "kind":
                continue
            rule = cls.rules.get(key) or COMMON_RULES.get(key)
            if rule is None:
                known = ", ".join(sorted(["kind", *cls.rules, *COMMON_RULES]))
                raise BadSpec(
                    f"Unknown field {key!r} for a {cls.kind}: the fields are {known}", field=key
                )
            checked = rule(key, value)
            if checked is not None:
                values[key] = checked
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        """The spec as JSON, `kind` first."""
        return {"kind": self.kind, **asdict(self)}


@dataclass(frozen=True, slots=True, kw_only=True)
class ServerSpec(Spec):
    """A server of listings 2-1 and 2-2: bind, answer, maybe pretend to drop."""

    kind: ClassVar[str] = "server"
    rules: ClassVar[dict[str, Callable[[str, Any], Any]]] = {
        **_ADDRESS,
        "reply": _choice("length", "echo", "none"),
        "drop_rate": _number(0, 1),
        "seed": _SEED,
        "delay": _number(0, 60),
        "duplicate": _flag,
        "rcvbuf": _optional(_number(1, 64 * 1024 * 1024, integer=True)),
        "reuse_addr": _flag,
        "v6only": _flag,
    }
    reply: str = "length"
    drop_rate: float = 0.0
    seed: int | None = None
    delay: float = 0.0  # answer this many seconds late (the duplicate-reply trap)
    duplicate: bool = False  # answer every request twice
    rcvbuf: int | None = None  # SO_RCVBUF in bytes (the kernel doubles it); small = real drops
    reuse_addr: bool = False  # SO_REUSEADDR: share the port with listeners
    v6only: bool = False  # IPV6_V6ONLY on an IPv6 bind; off: `::` is dual-stack


@dataclass(frozen=True, slots=True, kw_only=True)
class ClientSpec(Spec):
    """A client of listings 2-1 and 2-2: send, wait with backoff, report the reply."""

    kind: ClassVar[str] = "client"
    rules: ClassVar[dict[str, Callable[[str, Any], Any]]] = {
        **_ADDRESS,
        "mode": _choice(*CLIENT_MODES),
        "message": _message,
        "count": _number(1, 1_000_000, integer=True),
        "interval": _number(0, 3600),
        "timeout": _number(0.001, 60),
        "backoff": _number(1, 10),
        "give_up_after": _number(0.001, 3600),
        "daemon": _flag,
        "jitter": _number(0, 1),
        "adaptive": _flag,
        "seed": _SEED,
    }
    mode: str = "promiscuous"
    message: str | None = None  # None: the book's `The time is …`, fresh for each request
    count: int = 1
    interval: float = 1.0
    timeout: float = 0.1
    backoff: float = 2.0
    give_up_after: float = 2.0
    daemon: bool = False  # retry forever, the wait capped at give_up_after
    jitter: float = 0.0  # spread each wait by up to this fraction
    adaptive: bool = False  # learn the first wait from recent round trips
    seed: int | None = None  # for the request IDs' and the jitter's random numbers

    def __post_init__(self) -> None:
        if not self.host:
            raise BadSpec(
                "The host is empty: a client needs the server's address, such as 127.0.0.1",
                field="host",
            )

    @property
    def schedule(self) -> Backoff:
        """The retry timing this client uses."""
        return Backoff(self.timeout, self.backoff, self.give_up_after, self.daemon, self.jitter)


@dataclass(frozen=True, slots=True, kw_only=True)
class SpooferSpec(Spec):
    """An impostor: sends `message` to an address, or to a client worker named by `target`."""

    kind: ClassVar[str] = "spoofer"
    rules: ClassVar[dict[str, Callable[[str, Any], Any]]] = {
        **_ADDRESS,
        "target": _name,
        **_REPEATS,
        "forge": _flag,
    }
    port: int | str | None = None  # no default: an impostor sent nowhere in particular
    target: str | None = None  # a client worker: send to its address, and forge its server's
    message: str | None = "FAKE"
    count: int = 1
    interval: float = 0.1
    forge: bool = False  # raw socket with the server's address as source (needs CAP_NET_RAW)

    def __post_init__(self) -> None:
        if self.forge and not self.target:
            raise BadSpec(
                "Forging needs a target client: its server's address is the lie the forged "
                "datagram tells. Name the client in 'target'",
                field="target",
            )
        if not self.target and self.port is None:
            # Without this it would quietly go to 127.0.0.1:1060, a port nobody chose.
            raise BadSpec(
                "An impostor needs somewhere to send: name a target client, or give a host "
                "and a port",
                field="target",
            )


@dataclass(frozen=True, slots=True, kw_only=True)
class StreamSpec(Spec):
    """A stream like iperf's UDP mode: `count` datagrams of `size` bytes at `rate` per second."""

    kind: ClassVar[str] = "stream"
    rules: ClassVar[dict[str, Callable[[str, Any], Any]]] = {
        **_ADDRESS,
        "count": _number(1, 10_000_000, integer=True),
        "size": _number(28, _MAX_MESSAGE, integer=True),
        "rate": _number(1, 1_000_000),
    }
    count: int = 1000
    size: int = 100  # bytes per datagram, the 28-byte stream header included
    rate: float = 1000.0  # datagrams per second


_MAX_GROUPS = 20  # groups (or sources) one listener joins; the kernel's default is 20


def _addresses(*, multicast: bool) -> Callable[[str, Any], tuple[str, ...]]:
    """A list of IP literals (a JSON list, or a form's text split at commas or spaces)."""
    what = "multicast group" if multicast else "unicast address"

    def check(field: str, value: Any) -> tuple[str, ...]:
        if isinstance(value, str):
            value = value.replace(",", " ").split()
        if not isinstance(value, list | tuple) or len(value) > _MAX_GROUPS:
            raise BadSpec(f"The {field} must be a list of at most {_MAX_GROUPS} addresses",
                          field=field)
        out = []
        for item in value:
            try:
                ip = ipaddress.ip_address(item.strip() if isinstance(item, str) else item)
            except ValueError:
                ip = None
            if not isinstance(item, str) or ip is None or ip.is_multicast != multicast:
                example = "239.255.0.1 or ff02::1" if multicast else "127.0.0.1"
                raise BadSpec(f"{item!r} in {field} is not a {what}: use an address such "
                              f"as {example}", field=field)
            out.append(str(ip))
        return tuple(dict.fromkeys(out))

    return check


def _interface(field: str, value: Any) -> str | None:
    """An interface: an IPv4 address of it, or its name (lo, eth0)."""
    if value is None or value == "":
        return None
    if isinstance(value, str) and re.fullmatch(r"[A-Za-z0-9_.:@-]{1,15}", value.strip()):
        return value.strip()
    raise BadSpec(f"The {field} must be an interface name such as lo or eth0, or its IPv4 "
                  f"address such as 127.0.0.1, not {value!r}", field=field)


def _literal(field: str, value: Any) -> str | None:
    """An IP address literal (no name: binding must not wait on a DNS lookup)."""
    if value is None or value == "":
        return None
    try:
        return str(ipaddress.ip_address(value.strip() if isinstance(value, str) else None))
    except ValueError:
        raise BadSpec(f"The {field} must be an address of this host such as 127.0.0.1, "
                      f"not {value!r}", field=field) from None


def _groups_need_family(spec: "Spec", groups: tuple[str, ...]) -> None:
    """A socket joins groups of its own family only: say which bind address fits."""
    v6 = ":" in spec.host
    for group in groups:
        if (":" in group) != v6:
            fix = "'::' (IPv6)" if ":" in group else "'0.0.0.0' (IPv4)"
            raise BadSpec(f"The group {group} is of the other IP family than the bind address "
                          f"{spec.host!r}: bind to {fix} to join it", field="host")


@dataclass(frozen=True, slots=True, kw_only=True)
class ListenerSpec(Spec):
    """A receiver of listing 2-4: binds with SO_REUSEADDR, reports, never replies.

    With `join` it is a multicast member: it joins each group (only from `sources`, when
    given: a source-specific join) on `interface`."""

    kind: ClassVar[str] = "listener"
    rules: ClassVar[dict[str, Callable[[str, Any], Any]]] = {
        **_ADDRESS,
        "join": _addresses(multicast=True),
        "sources": _addresses(multicast=False),
        "interface": _interface,
        "multicast_all": _flag,
        "v6only": _flag,
    }
    host: str = "0.0.0.0"
    v6only: bool = False  # IPV6_V6ONLY on an IPv6 bind; off: `::` is dual-stack
    join: tuple[str, ...] = ()  # multicast groups to join
    sources: tuple[str, ...] = ()  # only these senders (source-specific multicast)
    interface: str | None = None  # where to join: None = loopback here, eth0 on a lab host
    multicast_all: bool = False  # IP_MULTICAST_ALL: hear groups other sockets joined too

    def __post_init__(self) -> None:
        if self.sources and not self.join:
            raise BadSpec("Sources filter a group's senders: give the group in 'join' too",
                          field="sources")
        _groups_need_family(self, self.join)
        v6 = ":" in self.host
        if any((":" in source) != v6 for source in self.sources):
            family = "IPv6" if v6 else "IPv4"
            raise BadSpec(f"The sources of an {family} group must be {family} addresses",
                          field="sources")


@dataclass(frozen=True, slots=True, kw_only=True)
class BroadcastSpec(Spec):
    """The sender of listing 2-4."""

    kind: ClassVar[str] = "broadcast"
    rules: ClassVar[dict[str, Callable[[str, Any], Any]]] = {
        **_ADDRESS,
        **_REPEATS,
        "so_broadcast": _flag,
    }
    host: str = "127.255.255.255"  # loopback's broadcast address
    message: str | None = "Broadcast datagram!"
    count: int = 1
    interval: float = 1.0
    so_broadcast: bool = True


@dataclass(frozen=True, slots=True, kw_only=True)
class MulticastSpec(Spec):
    """A sender to a multicast group: `ttl` hops at most, looped back to this host or not."""

    kind: ClassVar[str] = "multicast"
    rules: ClassVar[dict[str, Callable[[str, Any], Any]]] = {
        **_ADDRESS,
        "ttl": _number(0, 255, integer=True),
        "loop": _flag,
        "interface": _interface,
        "bind": _literal,
        **_REPEATS,
    }
    host: str = "239.255.0.1"  # a group of the organisation-local scope
    ttl: int = 1  # IP_MULTICAST_TTL: 1 = this link only
    loop: bool = True  # IP_MULTICAST_LOOP: members on this host hear it too
    interface: str | None = None  # where it leaves: None = loopback here, eth0 on a lab host
    bind: str | None = None  # the local address to send from (a source for SSM joins)
    message: str | None = "Multicast datagram!"
    count: int = 1
    interval: float = 1.0

    def __post_init__(self) -> None:
        try:
            group = ipaddress.ip_address(self.host.split("%")[0])
        except ValueError:
            group = None
        if group is None or not group.is_multicast:
            raise BadSpec(f"The host of a multicast sender must be a group address such as "
                          f"239.255.0.1 or ff02::1, not {self.host!r}", field="host")


@dataclass(frozen=True, slots=True, kw_only=True)
class MtuProbeSpec(Spec):
    """Listing 2-3: a big datagram with fragmentation forbidden, then a search."""

    kind: ClassVar[str] = "mtu-probe"
    rules: ClassVar[dict[str, Callable[[str, Any], Any]]] = {
        **_ADDRESS,
        "size": _number(1, 65507, integer=True),
    }
    size: int = 65000  # the book's big datagram


KINDS: dict[str, type[Spec]] = {
    cls.kind: cls for cls in (ServerSpec, ClientSpec, SpooferSpec, StreamSpec, ListenerSpec,
                              BroadcastSpec, MtuProbeSpec, MulticastSpec)
}


def kind_name(kind: str, *, first: bool = False) -> str:
    """A worker kind in words: `mtu-probe` → `MTU probe`; `first` capitalises a sentence's
    first word (`Impostor`, never `Mtu-probe`)."""
    name = KIND_NAMES.get(kind, kind)
    return name[:1].upper() + name[1:] if first else name


def parse_spec(raw: Any) -> Spec:
    """Check a worker spec (a dict with `kind`) and return it, or raise `BadSpec`."""
    if not isinstance(raw, dict):
        raise BadSpec("A worker spec must be a JSON object such as {\"kind\": \"server\"}")
    kind = raw.get("kind")
    cls = KINDS.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise BadSpec(
            f"Unknown kind {kind!r}: use one of {', '.join(KINDS)}", field="kind"
        )
    return cls.from_dict(raw)
