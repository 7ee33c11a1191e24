"""The event bus: synchronous publish, bounded per-subscriber queues, counted losses."""

import asyncio
import dataclasses
import inspect
import time

import pytest

from webapp.engine.bus import EventBus, Subscription
from webapp.engine.events import Error, Event, Listening, Reply, Stopped, format_address


def make(bus: EventBus, n: int = 0, worker: str = "server-1") -> Event:
    return Listening(seq=bus.next_seq(), time=time.time(), worker=worker,
                     message=f"event {n}", local=("127.0.0.1", 1060))


def test_publish_is_a_plain_function():
    # the UDP path calls publish() from socket callbacks: it must never be awaitable
    assert not inspect.iscoroutinefunction(EventBus.publish)
    assert not inspect.iscoroutinefunction(Subscription.push)
    bus = EventBus()
    assert bus.publish(make(bus)) is None
    assert bus.published == 1


def test_seq_increases():
    bus = EventBus()
    seqs = [bus.next_seq() for _ in range(100)]
    assert seqs == sorted(set(seqs))
    assert seqs[0] >= 1


def test_subscriber_gets_events_in_order():
    bus = EventBus()
    with bus.subscribe() as sub:
        sent = [make(bus, n) for n in range(5)]
        for event in sent:
            bus.publish(event)
        events, dropped = sub.drain()
    assert events == sent
    assert dropped == 0
    assert [e.seq for e in events] == sorted(e.seq for e in events)


def test_full_queue_drops_the_oldest_and_counts():
    bus = EventBus()
    sub = bus.subscribe(maxlen=3)
    sent = [make(bus, n) for n in range(10)]
    for event in sent:
        bus.publish(event)
    events, dropped = sub.drain()
    assert events == sent[-3:]  # the newest survive
    assert dropped == 7
    assert sub.dropped_total == 7
    # the count resets with each drain; the total does not
    assert sub.drain() == ([], 0)
    bus.publish(make(bus))
    events, dropped = sub.drain()
    assert len(events) == 1 and dropped == 0
    assert sub.dropped_total == 7
    sub.close()


def test_subscribers_are_independent():
    bus = EventBus()
    fast, slow = bus.subscribe(maxlen=100), bus.subscribe(maxlen=2)
    sent = [make(bus, n) for n in range(5)]
    for event in sent[:3]:
        bus.publish(event)
    assert fast.drain() == (sent[:3], 0)  # draining one does not empty the other
    for event in sent[3:]:
        bus.publish(event)
    assert fast.drain() == (sent[3:], 0)
    assert slow.drain() == (sent[3:], 3)
    assert bus.subscriber_count == 2
    fast.close()
    slow.close()


def test_unsubscribe_stops_delivery():
    bus = EventBus()
    sub = bus.subscribe()
    bus.publish(make(bus, 1))
    sub.close()
    sub.close()  # twice is fine
    bus.publish(make(bus, 2))
    events, _ = sub.drain()
    assert [e.message for e in events] == ["event 1"]
    assert bus.subscriber_count == 0
    assert bus.published == 2


def test_context_manager_unsubscribes():
    bus = EventBus()
    with bus.subscribe():
        assert bus.subscriber_count == 1
    assert bus.subscriber_count == 0


def test_recent_history_is_bounded():
    bus = EventBus(recent=5)
    sent = [make(bus, n) for n in range(8)]
    for event in sent:
        bus.publish(event)
    assert list(bus.recent) == sent[-5:]


async def test_wait_wakes_on_publish():
    bus = EventBus()
    with bus.subscribe() as sub:
        loop = asyncio.get_running_loop()
        event = make(bus)
        loop.call_later(0.02, bus.publish, event)
        started = loop.time()
        async with asyncio.timeout(2):
            await sub.wait()
        assert loop.time() - started >= 0.015
        assert sub.drain() == ([event], 0)


async def test_wait_returns_at_once_when_events_are_queued():
    bus = EventBus()
    with bus.subscribe() as sub:
        bus.publish(make(bus))
        async with asyncio.timeout(0.5):
            await sub.wait()
        assert len(sub.drain()[0]) == 1


async def test_wait_blocks_while_nothing_is_published():
    bus = EventBus()
    with bus.subscribe() as sub:
        bus.publish(make(bus))
        sub.drain()  # the wake-up of that event is used up
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.05):
                await sub.wait()


def test_events_are_frozen_and_serialise():
    bus = EventBus()
    event = Reply(seq=bus.next_seq(), time=1.5, worker="client-1",
                  message="The server ('127.0.0.1', 1060) replied 'x'",
                  local=("0.0.0.0", 40000), peer=("127.0.0.1", 1060), size=1, text="x",
                  expected=True)
    with pytest.raises(dataclasses.FrozenInstanceError):
        event.size = 2  # type: ignore[misc]
    data = event.to_dict()
    assert list(data)[0] == "type"
    assert data == {
        "type": "reply", "seq": 1, "time": 1.5, "worker": "client-1",
        "message": "The server ('127.0.0.1', 1060) replied 'x'",
        "local": ("0.0.0.0", 40000), "peer": ("127.0.0.1", 1060), "size": 1, "text": "x",
        "expected": True, "stale": False,
    }
    assert Error(seq=2, time=0, worker="w", message="m", error="e").to_dict()["errno"] is None
    assert Stopped.type == "stopped"


def test_format_address_is_the_books():
    assert format_address(("127.0.0.1", 1060)) == "('127.0.0.1', 1060)"
    assert format_address(["127.0.0.1", 1060]) == "('127.0.0.1', 1060)"
    assert format_address(None) == "(unbound)"
