"""Events: small frozen records of what a worker did or saw, in the book's words.

Every event has `seq`, `time`, `worker`, `type` and `message` (one human line). Datagram
events add `local`, `peer`, `size` and `text`. `type` is the one string that both the JSON
and the HTML renderers switch on.
"""

from dataclasses import dataclass, fields
from typing import Any, ClassVar

Address = tuple[str, int]
_FIELD_NAMES: dict[type, tuple[str, ...]] = {}


@dataclass(frozen=True, slots=True, kw_only=True)
class Event:
    """Base of every event; subclasses set `type`."""

    type: ClassVar[str] = "event"
    seq: int
    time: float
    worker: str
    message: str

    def to_dict(self) -> dict[str, Any]:
        """The event as the JSON API shows it."""
        names = _FIELD_NAMES.get(type(self))
        if names is None:  # dataclasses.fields() is slow: once per class
            names = _FIELD_NAMES[type(self)] = tuple(f.name for f in fields(self))
        out: dict[str, Any] = {"type": self.type}
        for name in names:
            out[name] = getattr(self, name)
        return out


@dataclass(frozen=True, slots=True, kw_only=True)
class DatagramEvent(Event):
    """An event about one datagram."""

    local: Address | None
    peer: Address
    size: int
    text: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Listening(Event):
    """A server bound its socket: `Listening at ('127.0.0.1', 1060)`."""

    type: ClassVar[str] = "listening"
    local: Address
    family: str | None = None  # "ipv4" or "ipv6": the family the name or literal gave


@dataclass(frozen=True, slots=True, kw_only=True)
class Bound(Event):
    """A client learned the address the OS gave its socket."""

    type: ClassVar[str] = "bound"
    local: Address
    family: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Received(DatagramEvent):
    """A server received a request: `The client at … says …`."""

    type: ClassVar[str] = "received"


@dataclass(frozen=True, slots=True, kw_only=True)
class Dropped(DatagramEvent):
    """A server pretended to lose a request: `Pretending to drop packet from …`."""

    type: ClassVar[str] = "dropped"


@dataclass(frozen=True, slots=True, kw_only=True)
class Sent(DatagramEvent):
    """A worker sent a datagram."""

    type: ClassVar[str] = "sent"


@dataclass(frozen=True, slots=True, kw_only=True)
class BroadcastSent(DatagramEvent):
    """A broadcast went out; `reached` names the workers of this app that received it."""

    type: ClassVar[str] = "sent"
    reached: list[str]


@dataclass(frozen=True, slots=True, kw_only=True)
class Mtu(Event):
    """What an MTU probe learned: the path MTU, or the largest payload that went."""

    type: ClassVar[str] = "mtu"
    mtu: int | None
    payload: int | None = None
    size: int | None = None  # the size just tried, for a probe step
    went: bool | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Reply(DatagramEvent):
    """A client accepted a reply; `expected` is False when it came from another address, and
    `stale` is True when it repeats an earlier request (a late or duplicated answer)."""

    type: ClassVar[str] = "reply"
    expected: bool
    stale: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class Rejected(DatagramEvent):
    """A careful client refused a datagram; `reason` says why."""

    type: ClassVar[str] = "rejected"
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Paused(Event):
    """A server stopped reading: datagrams now wait in the kernel (the book's Ctrl+Z)."""

    type: ClassVar[str] = "paused"


@dataclass(frozen=True, slots=True, kw_only=True)
class Resumed(Event):
    """A paused server reads again, starting with what waited."""

    type: ClassVar[str] = "resumed"
    waiting: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Queued(Event):
    """While a server is paused: how many datagrams wait in its kernel queue."""

    type: ClassVar[str] = "queued"
    waiting: int
    queued_bytes: int


@dataclass(frozen=True, slots=True, kw_only=True)
class StreamReport(Event):
    """A receiver's figures for one stream: received, lost, duplicated, reordered, jitter."""

    type: ClassVar[str] = "stream"
    peer: Address
    stream: int
    stats: dict
    kernel_drops: int | None


@dataclass(frozen=True, slots=True, kw_only=True)
class Progress(Event):
    """A sender's progress through a stream."""

    type: ClassVar[str] = "progress"
    sent: int
    count: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Waiting(Event):
    """A client waits for a reply: `Waiting up to 0.1 seconds for a reply`."""

    type: ClassVar[str] = "waiting"
    delay: float
    attempt: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Timeout(Event):
    """No reply came within the wait."""

    type: ClassVar[str] = "timeout"
    delay: float
    attempt: int


@dataclass(frozen=True, slots=True, kw_only=True)
class GaveUp(Event):
    """A client stopped retrying: `I think the server is down`."""

    type: ClassVar[str] = "gave-up"
    attempts: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Error(Event):
    """The kernel reported an error (a refused port, a failed send) or a worker crashed."""

    type: ClassVar[str] = "error"
    error: str
    errno: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Stopped(Event):
    """A worker ended; `state` says how (`stopped`, `finished` or `failed`)."""

    type: ClassVar[str] = "stopped"
    state: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Removed(Event):
    """A worker was stopped and forgotten, events and all."""

    type: ClassVar[str] = "removed"


@dataclass(frozen=True, slots=True, kw_only=True)
class Throttled(Event):
    """A worker sending to a real network is held to the operator's caps."""

    type: ClassVar[str] = "throttled"
    caps: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Step(Event):
    """A recipe's narration: what its next step does, in plain words."""

    type: ClassVar[str] = "step"
    recipe: str
    index: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Sampled(Event):
    """A busy worker's datagrams that were counted but not shown one by one."""

    type: ClassVar[str] = "sampled"
    unshown: int  # datagrams without their own events in the last `seconds`
    seconds: float
    per_second: int  # the budget of datagrams shown one by one


def host_port(address: Address | None) -> str:
    """`127.0.0.1:1060`, or `[::1]:1060` for IPv6 (the brackets keep the port apart)."""
    if not address:
        return "—"
    host, port = address[0], address[1]
    return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"


def format_address(address: Address | None) -> str:
    """An address as the book prints it: `('127.0.0.1', 1060)`; an IPv6 one as `[::1]:1060`
    (Python would print a 4-tuple with flow info and scope id)."""
    if address is None:
        return "(unbound)"
    if ":" in str(address[0]):
        return host_port(address)
    return repr(tuple(address))
