"""A broadcast's `reached` across the fleet: the listeners of every machine that heard it.

Each agent's broadcast worker names only the listeners of its own machine (it asks its own
supervisor's workers). The dashboard sees every machine's events, so it completes the list:
a broadcast's `sent` event is held for `WINDOW` seconds, then published with the workers of
other machines (the dashboard's own among them: see `hear`) whose `received` event is the
same datagram (same text, from the sender's
port and one of the sender machine's addresses, at about the same time). Each `received`
completes at most one broadcast, so repeated sends of one text are told apart in order.
Receivers publish at once while the sender waits `HEAR_WAIT` before its `sent` event, so
their batches normally come first; the window covers the rest. A broadcast of the
dashboard's own machine asks its peers itself: the fleet adds the other machines' listeners
to them (`remote_listeners`), as far as their agents said within the sender's `HEAR_WAIT`.
"""

import asyncio
import collections
import dataclasses
import time
from typing import Callable

from webapp.engine import EventBus
from webapp.engine.events import Event
from webapp.engine.payload import show

WINDOW = 0.3  # seconds a broadcast's `sent` waits here for other machines' `received`
SKEW = 0.5  # seconds the machines' clocks (and the sender's HEAR_WAIT) may differ by
KEEP = 5.0  # seconds a `received` is kept for matching


@dataclasses.dataclass
class _Heard:
    arrived: float
    event: Event
    used: bool = False


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
    """Completes remote broadcasts' `reached` before they enter the bus."""

    def __init__(self, bus: EventBus, addresses: Callable[[str], set[str]],
                 window: float = WINDOW):
        self.bus = bus
        self.addresses = addresses  # a machine's name -> its addresses
        self.window = window
        self.heard: collections.deque[_Heard] = collections.deque(maxlen=50_000)
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
        machine's workers (its listeners hear the agents' subnet broadcasts too)."""
        now = time.monotonic()
        self.heard.append(_Heard(now, event))
        while self.heard and now - self.heard[0].arrived > KEEP:
            self.heard.popleft()

    async def hear_local(self) -> None:
        """Until cancelled: keep the local workers' `received` events (they enter the bus
        directly, not through `hold`)."""
        with self.bus.subscribe() as sub:
            while True:
                await sub.wait()
                for event in sub.drain()[0]:
                    if event.type == "received" and getattr(event, "machine", None) is None:
                        self.hear(event)

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
        self.held -= 1
        sender = event.machine
        port = event.local[1] if event.local else None
        if event.local and event.local[0] not in ("0.0.0.0", "::", ""):
            addresses = {event.local[0]}
        else:
            addresses = self.addresses(sender)
        reached = list(event.reached)
        for heard in self.heard:
            other = heard.event
            if heard.used or getattr(other, "machine", None) == sender \
                    or other.worker in reached or other.peer is None:
                continue
            if other.peer[1] == port and other.peer[0] in addresses \
                    and other.text == event.text and abs(other.time - event.time) <= SKEW:
                heard.used = True
                reached.append(other.worker)
        reached.sort()
        head = event.message.split("; heard by ")[0]
        who = ", ".join(reached) if reached else "no worker of the fleet"
        self.bus.publish(dataclasses.replace(event, seq=self.bus.next_seq(), reached=reached,
                                             message=f"{head}; heard by {who}"))
