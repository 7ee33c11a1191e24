"""The event bus: workers publish without waiting; each subscriber has a bounded queue.

A subscriber that falls behind loses its oldest events and is told how many it lost, so
the UDP path never waits for a browser.
"""

import asyncio
import itertools
from collections import deque

from webapp.engine.events import Event


class Subscription:
    """One listener's bounded queue of events."""

    def __init__(self, bus: "EventBus", maxlen: int):
        self._bus = bus
        self._queue: deque[Event] = deque(maxlen=maxlen)
        self._ready = asyncio.Event()
        self.dropped = 0  # lost since the last drain()
        self.dropped_total = 0

    def push(self, event: Event) -> None:
        """Queue one event, dropping (and counting) the oldest when full."""
        queue = self._queue
        if len(queue) == queue.maxlen:
            self.dropped += 1
            self.dropped_total += 1
        queue.append(event)
        self._ready.set()

    def drain(self) -> tuple[list[Event], int]:
        """Take every queued event and the count lost since the previous drain."""
        events = list(self._queue)
        self._queue.clear()
        dropped, self.dropped = self.dropped, 0
        self._ready.clear()
        return events, dropped

    async def wait(self) -> None:
        """Return once there is something to drain."""
        if not self._queue and not self.dropped:
            self._ready.clear()
            await self._ready.wait()

    def close(self) -> None:
        """Stop receiving events."""
        self._bus.unsubscribe(self)

    def __enter__(self) -> "Subscription":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class EventBus:
    """Numbers events and hands each to every subscriber; `publish()` never awaits."""

    def __init__(self, *, recent: int = 200):
        self._seq = itertools.count(1)
        self._subscribers: set[Subscription] = set()
        self.recent: deque[Event] = deque(maxlen=recent)
        self.published = 0

    def next_seq(self) -> int:
        """The next event number; increasing for the life of the bus."""
        return next(self._seq)

    def publish(self, event: Event) -> None:
        """Give `event` to every subscriber now, without awaiting anything."""
        self.published += 1
        self.recent.append(event)
        for subscriber in self._subscribers:
            subscriber.push(event)

    def subscribe(self, maxlen: int = 10_000) -> Subscription:
        """A new subscription holding at most `maxlen` undelivered events."""
        subscription = Subscription(self, maxlen)
        self._subscribers.add(subscription)
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        """Forget a subscription; safe to call twice."""
        self._subscribers.discard(subscription)

    @property
    def subscriber_count(self) -> int:
        """How many subscriptions are live."""
        return len(self._subscribers)
