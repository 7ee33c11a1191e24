"""The fleet on the page: cards for the workers of other machines, kept from their events.

The supervisor knows only this machine's workers; another machine's come as events on the
bus (`b:client-1`, with a `machine` field) and as the answer to starting one. A `RemoteCard`
holds what a card shows of such a worker, so the page draws it like a local one.
"""

import time
from types import SimpleNamespace
from typing import Any, Callable

from webapp.engine.events import Event
from webapp.fleet.wire import SEP

# the card counter an event of each type adds one to (when the worker has that counter)
COUNTED = {"sent": "sent", "received": "received", "reply": "replies", "timeout": "timeouts",
           "gave-up": "gave_up", "rejected": "rejected", "error": "errors",
           "dropped": "dropped"}
ENDED = ("stopped", "finished", "failed", "lost")


def shown_id(worker_id: str) -> str:
    """A worker id as people read it: `b:client-1` is `b · client-1`."""
    machine, sep, rest = str(worker_id).partition(SEP)
    return f"{machine} · {rest}" if sep else str(worker_id)


def dom_id(worker_id: str) -> str:
    """A worker id fit for an element id and a CSS selector (`:` is not)."""
    return str(worker_id).replace(SEP, "--")


class RemoteCard:
    """One worker of another machine, as its card shows it."""

    history: tuple = ()  # its events stay on its machine; the card shows counters
    streams: dict = {}

    def __init__(self, worker: dict[str, Any]):
        self.id = str(worker["id"])
        self.machine = str(worker.get("machine") or self.id.partition(SEP)[0])
        self.kind = str(worker.get("kind") or self.id.partition(SEP)[2].rsplit("-", 1)[0])
        self.state = str(worker.get("state") or "running")
        self.spec = worker.get("spec") or {}
        local = worker.get("local")
        self.local = tuple(local) if local else None
        target = worker.get("target")
        self.target = SimpleNamespace(address=tuple(target) if target else None)
        self.counters = dict(worker.get("counters") or {})
        self.seen = time.time()

    @property
    def alive(self) -> bool:
        return self.state in ("running", "paused")

    def update(self, event: Event) -> None:
        """What one of its events changes on the card."""
        counter = COUNTED.get(event.type)
        if counter is not None:
            self.counters[counter] = self.counters.get(counter, 0) + 1
        if self.state == "lost" and event.type != "stopped":
            self.state = "running"  # its machine is back, and so is it
        local = getattr(event, "local", None)
        if local and self.local is None:
            self.local = tuple(local)
        if event.type == "stopped":
            self.state = getattr(event, "state", "stopped")
        elif event.type == "paused":
            self.state = "paused"
        elif event.type == "resumed":
            self.state = "running"


class RemoteCards:
    """Every card of another machine's worker the page shows, oldest first."""

    def __init__(self, describe: Callable[[str], dict | None] | None = None):
        self.cards: dict[str, RemoteCard] = {}
        self.dirty: set[str] = set()  # cards changed outside a batch of events
        # what the fleet knows of a worker it started (the API's, a script's), or None: a
        # card made from events alone would guess its kind from its id ("imp-cli-1")
        self.describe = describe
        self._guessed: set[str] = set()  # cards made from events the fleet had not described
        self.learned = False  # the last batch taught a card its kind (the pickers may change)

    def started(self, worker: dict[str, Any]) -> None:
        """The dashboard started it (the answer of its machine, which may come after its
        first events: then the card they made learns its kind, spec and counters' names)."""
        fresh = RemoteCard(worker)
        self._guessed.discard(fresh.id)
        card = self.cards.setdefault(fresh.id, fresh)
        if card is not fresh:
            counted = card.counters
            card.kind, card.spec, card.target = fresh.kind, fresh.spec, fresh.target
            card.local = card.local or fresh.local
            card.counters = {name: max(value, counted.pop(name, 0))
                             for name, value in fresh.counters.items()} | counted
        self.dirty.add(fresh.id)

    def apply(self, events: list[Event]) -> set[str]:
        """Take a batch of events in; the ids of the cards they changed (or removed)."""
        touched: set[str] = set()
        for event in events:
            machine = getattr(event, "machine", None)
            if machine is None:
                continue
            if event.type == "machine":
                if getattr(event, "state", None) == "lost":
                    for card in self.cards.values():
                        if card.machine == machine and card.alive:
                            card.state = "lost"
                            touched.add(card.id)
                continue
            if event.type == "removed":
                if self.cards.pop(event.worker, None) is not None:
                    touched.add(event.worker)
                continue
            card = self.cards.get(event.worker)
            if card is None:  # started elsewhere (the API, a script): its events tell
                card = self.cards[event.worker] = RemoteCard({"id": event.worker,
                                                              "machine": machine})
                self._guessed.add(card.id)
            card.update(event)
            touched.add(card.id)
        self.learned = self._learn()
        touched, self.dirty = touched | self.dirty, set()
        return touched

    def _learn(self) -> bool:
        """Cards made from events learn their kind, spec and target from the fleet as soon
        as it knows them (its machine's answer to the start may come after the events);
        whether one did."""
        if self.describe is None:
            self._guessed.clear()
            return False
        learned = False
        for worker_id in list(self._guessed):
            info = self.describe(worker_id) if worker_id in self.cards else None
            if info is not None:
                self.started(info)
                learned = True
            elif worker_id not in self.cards:
                self._guessed.discard(worker_id)
        return learned

    def remove_ended(self) -> None:
        """The "Clear ended" button: drop every ended card."""
        for worker_id in [i for i, c in self.cards.items() if not c.alive]:
            del self.cards[worker_id]
