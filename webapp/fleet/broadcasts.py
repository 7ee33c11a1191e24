"""A broadcast's `reached` across the fleet: the listeners of every machine that heard it.

Each agent's broadcast worker names only the listeners of its own machine (it asks its own
supervisor's workers, `HEAR_WAIT` after sending). The dashboard sees every machine's events,
so it completes the list: a remote broadcast's `sent` event is held for `WINDOW` seconds,
then published with the workers of other machines (the dashboard's own among them: see
`hear`) whose `received` event is the same datagram (same text, from the sender's port and
one of the sender machine's addresses, at about the same time). A broadcast of the
dashboard's own machine asks its peers itself: the fleet adds the other machines' listeners
to them (`remote_listeners`), as far as their agents said by then.

Receivers publish at once while the sender waits before its `sent` event, so their reports
normally come first; a loaded machine's may not (its listener reads late, its batch comes
late). So every broadcast stays open for `LATE` seconds after its `sent` event entered the
bus: a report that comes meanwhile completes it, and a `reached` event (`BroadcastReached`)
for the broadcasting worker says who heard it too and names the whole list, so the log, the
history and the worker's count end with every listener, whichever report came last. Each
`received` completes at most one broadcast, so repeated sends of one text are told apart in
order.
"""

import asyncio
import collections
import dataclasses
import time
from typing import Callable, ClassVar

from webapp.engine import EventBus
from webapp.engine.events import Event
from webapp.engine.payload import show
from webapp.fleet import wire

WINDOW = 0.3  # seconds a broadcast's `sent` waits here for other machines' `received`
SKEW = 0.5  # seconds the machines' clocks (and the sender's HEAR_WAIT) may differ by
LATE = 2.0  # seconds a broadcast stays open to reports of hearing it that come late
KEEP = 5.0  # seconds a `received` is kept for matching


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class BroadcastReached(Event):
    """More workers said they heard a broadcast after its `sent` event went out (their
    report came late): `added` are they, `reached` the whole list now, `of` the `sent`
    event's number on this bus."""

    type: ClassVar[str] = "reached"
    text: str
    of: int
    added: list[str]
    reached: list[str]


@dataclasses.dataclass
class _Heard:
    arrived: float
    event: Event
    used: bool = False


@dataclasses.dataclass
class _Open:
    """A broadcast that went out, open to late reports of hearing it."""

    event: Event  # its `sent` event as it entered the bus
    opened: float
    port: int | None
    addresses: set[str]
    reached: list[str]

    def matches(self, other: Event) -> bool:
        """Whether `other` (a `received`) is this datagram: its source, text and time."""
        peer = other.peer
        return peer is not None and peer[1] == self.port and peer[0] in self.addresses \
            and other.text == self.event.text \
            and -SKEW <= other.time - self.event.time <= LATE


@dataclasses.dataclass
class _Ear:
    """Another machine's worker, seen by a local broadcast worker as one of its peers."""

    id: str
    events: list[Event] = dataclasses.field(default_factory=list)

    def heard_from(self, port: int, data: bytes, since: float) -> bool:
        """Whether it said it received `data` from port `port` at about `since` or after."""
        text = show(data)
        return any(e.peer[1] == port and e.text == text and e.time >= since - SKEW
                   for e in self.events)


class Broadcasts:
    """Completes broadcasts' `reached` with every machine's listeners, late ones too."""

    def __init__(self, bus: EventBus, addresses: Callable[[str], set[str]],
                 window: float = WINDOW, *, local: str = "local", late: float = LATE,
                 count: Callable[[str, int], None] = lambda worker, more: None):
        self.bus = bus
        self.addresses = addresses  # a machine's name -> its addresses
        self.window = window
        self.local = local  # the dashboard's own machine's name
        self.late = late
        self.count = count  # a broadcast worker's `reached` counter: add `more`
        self.heard: collections.deque[_Heard] = collections.deque(maxlen=50_000)
        self.open: collections.deque[_Open] = collections.deque(maxlen=10_000)
        self.held = 0

    def hold(self, event: Event) -> bool:
        """See a remote event before it enters the bus; True if it is held (a broadcast)."""
        if event.type == "received":
            self.hear(event)
            return False
        if event.type != "sent" or not hasattr(event, "reached"):
            return False
        self.held += 1
        asyncio.get_running_loop().call_later(self.window, self._release, event)
        return True

    def hear(self, event: Event) -> None:
        """Keep a `received` event for matching: a remote one, or one of the dashboard's own
        machine's workers (its listeners hear the agents' subnet broadcasts too); if it is
        a late report of an open broadcast, complete that one."""
        now = time.monotonic()
        heard = _Heard(now, event)
        self.heard.append(heard)
        while self.heard and now - self.heard[0].arrived > KEEP:
            self.heard.popleft()
        while self.open and now - self.open[0].opened > self.late:
            self.open.popleft()
        for sent in self.open:
            if event.worker not in sent.reached and sent.matches(event):
                heard.used = True
                sent.reached.append(event.worker)
                self._completed(sent, [event.worker])
                return

    async def hear_local(self) -> None:
        """Until cancelled: keep the local workers' `received` events (they enter the bus
        directly, not through `hold`), and open the local broadcasts to late reports."""
        with self.bus.subscribe() as sub:
            while True:
                await sub.wait()
                for event in sub.drain()[0]:
                    if getattr(event, "machine", None) is not None:
                        continue
                    if event.type == "received":
                        self.hear(event)
                    elif event.type == "sent" and hasattr(event, "reached"):
                        self._open(event)

    def remote_listeners(self, local: str) -> list["_Ear"]:
        """For a broadcast of the dashboard's own machine (`local`): the other machines'
        workers as its broadcast worker asks its peers (`id`, `heard_from`); what their
        agents said they heard by now (the sender waits `HEAR_WAIT` before it asks)."""
        ours = self.addresses(local)
        ears: dict[str, _Ear] = {}
        for heard in self.heard:
            event = heard.event
            if getattr(event, "machine", None) is None or event.peer is None \
                    or event.peer[0] not in ours:
                continue
            ears.setdefault(event.worker, _Ear(event.worker)).events.append(event)
        return list(ears.values())

    def _release(self, event: Event) -> None:
        """A held remote `sent`: into the bus with every listener heard by now."""
        self.held -= 1
        sent = self._opening(event)
        sent.reached.sort()
        if len(sent.reached) > len(event.reached):  # its agent counted its own machine's
            self.count(event.worker, len(sent.reached) - len(event.reached))
        head = event.message.split("; heard by ")[0]
        who = ", ".join(sent.reached) if sent.reached else "no worker of the fleet"
        sent.event = dataclasses.replace(event, seq=self.bus.next_seq(),
                                         reached=list(sent.reached),
                                         message=f"{head}; heard by {who}")
        self.bus.publish(sent.event)

    def _open(self, event: Event) -> None:
        """A local `sent`, already in the bus: completed with what came meanwhile."""
        before = set(event.reached)
        sent = self._opening(event)
        added = [w for w in sent.reached if w not in before]
        if added:
            self._completed(sent, added)

    def _opening(self, event: Event) -> _Open:
        """Open `event` to late reports, after matching the reports already here: each
        `received` completes one broadcast (the first it matches), once per worker."""
        machine = getattr(event, "machine", None) or self.local
        if event.local and event.local[0] not in ("0.0.0.0", "::", ""):
            addresses = {event.local[0]}
        else:
            addresses = self.addresses(machine)
        sent = _Open(event, time.monotonic(), event.local[1] if event.local else None,
                     addresses, list(event.reached))
        credited: set[str] = set()
        for heard in self.heard:
            other = heard.event
            if heard.used or other.worker in credited or not sent.matches(other):
                continue
            heard.used = True  # named by the sender itself, or found here
            credited.add(other.worker)
            if other.worker not in sent.reached:
                sent.reached.append(other.worker)
        self.open.append(sent)
        return sent

    def _completed(self, sent: _Open, added: list[str]) -> None:
        """Say that `added` heard the broadcast `sent` too, naming the whole list."""
        sent.reached.sort()
        event = sent.event
        head = event.message.split("; heard by ")[0]
        fields = dict(seq=self.bus.next_seq(), time=time.time(), worker=event.worker,
                      message=f"{head}; heard by {', '.join(sent.reached)} ("
                              f"{', '.join(added)} said so late)",
                      text=event.text, of=event.seq, added=added, reached=list(sent.reached))
        machine = getattr(event, "machine", None)
        self.count(event.worker, len(added))
        if machine is None:
            self.bus.publish(BroadcastReached(**fields))
        else:
            self.bus.publish(wire.remote_class(BroadcastReached)(
                machine=machine, boot=getattr(event, "boot", ""), **fields))
