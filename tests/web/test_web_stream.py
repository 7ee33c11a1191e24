"""WS /api/events against a live udplab: the first message, events as they happen, batching."""

import asyncio
import json
import time

import pytest
from websockets.asyncio.client import connect

RECV_TIMEOUT = 5.0


async def receive_json(ws, timeout: float = RECV_TIMEOUT) -> dict:
    async with asyncio.timeout(timeout):
        return json.loads(await ws.recv())


async def start(http, **spec) -> dict:
    response = await http.post("/api/workers", json=spec)
    assert response.status_code == 201, response.text
    return response.json()


async def collect_until(ws, done, *, limit: int = 500, timeout: float = 10.0):
    """Receive messages until `done(events)` holds; [(arrival time, message)], bounded."""
    messages, events = [], []
    deadline = time.monotonic() + timeout
    for _ in range(limit):
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"gave up waiting; got {[e['type'] for e in events]}"
        message = await receive_json(ws, remaining)
        messages.append((time.monotonic(), message))
        events.extend(message["events"])
        if done(events):
            return messages, events
    raise AssertionError(f"no end after {limit} messages")


async def test_first_message_is_empty_with_the_workers(live):
    async with live.async_client() as http:
        server = await start(http, kind="server", host="127.0.0.1", port=0)
        try:
            async with connect(f"{live.ws_base}/api/events", additional_headers=live.bearer,
                               open_timeout=5) as ws:
                first = await receive_json(ws)
            assert first["events"] == []
            assert first["dropped"] == 0
            listed = {w["id"]: w for w in first["workers"]}
            assert listed[server["id"]]["state"] == "running"
            assert listed[server["id"]]["local"] == server["local"]
        finally:
            await http.delete(f"/api/workers/{server['id']}")


async def test_events_arrive_as_they_happen(live):
    async with live.async_client() as http, connect(
        f"{live.ws_base}/api/events", additional_headers=live.bearer, open_timeout=5
    ) as ws:
        await receive_json(ws)
        server = await start(http, kind="server", host="127.0.0.1", port=0)
        try:
            client = await start(http, kind="client", host="127.0.0.1",
                                 port=server["local"][1], message="ping")
            ours = {server["id"], client["id"]}

            def finished(events):
                return any(e["type"] == "stopped" and e["worker"] == client["id"]
                           for e in events)

            messages, events = await collect_until(ws, finished)
        finally:
            await http.delete(f"/api/workers/{server['id']}")
    for _, message in messages:
        assert set(message) == {"events", "dropped"}
        assert message["dropped"] == 0
    mine = [e for e in events if e["worker"] in ours]
    seqs = [e["seq"] for e in mine]
    assert seqs == sorted(seqs)
    types = {e["type"] for e in mine}
    assert {"listening", "received", "sent", "waiting", "reply", "stopped"} <= types, types
    received = next(e for e in mine if e["type"] == "received")
    assert received["text"] == "ping" and received["size"] == 4
    reply = next(e for e in mine if e["type"] == "reply")
    assert reply["text"] == "Your data was 4 bytes long"


@pytest.mark.parametrize(("count", "interval"), [(20, 0), (30, 0.01)])
async def test_messages_are_batched(live, count, interval):
    """One WebSocket message per ≤50 ms however fast the events come: a burst (interval 0)
    comes in one or two messages, a steady stream in one message per flush interval."""
    async with live.async_client() as http, connect(
        f"{live.ws_base}/api/events", additional_headers=live.bearer, open_timeout=5
    ) as ws:
        await receive_json(ws)
        server = await start(http, kind="server", host="127.0.0.1", port=0, reply="echo")
        try:
            client = await start(http, kind="client", host="127.0.0.1",
                                 port=server["local"][1], count=count, interval=interval,
                                 message="burst")

            def finished(events):
                return any(e["type"] == "stopped" and e["worker"] == client["id"]
                           for e in events)

            messages, events = await collect_until(ws, finished)
        finally:
            await http.delete(f"/api/workers/{server['id']}")
    ours = {server["id"], client["id"]}
    mine = [e for e in events if e["worker"] in ours]
    replies = [e for e in mine if e["type"] == "reply" and e["worker"] == client["id"]]
    assert len(replies) == count
    # Per exchange: client sent + waiting + reply, server received + sent = 5 events.
    assert len(mine) >= 5 * count
    with_events = [(t, m) for t, m in messages if m["events"]]
    assert len(with_events) * 5 <= len(mine), (len(with_events), len(mine))
    # The server waits out the flush interval after each send. One arrival gap can shrink
    # (a message delivered late, the next on time: 35 ms seen on a busy machine), so the
    # check is on their mean: unbatched, these messages would come microseconds apart.
    gaps = [b[0] - a[0] for a, b in zip(with_events, with_events[1:], strict=False)]
    assert sum(gaps) >= 0.025 * len(gaps), gaps  # half the 50 ms: one late delivery fits


def test_piled_up_batches_merge_into_messages_a_client_takes():
    # A slow watcher's piled-up batches went out as one message; under a flood of every
    # datagram as an event that passed 1 MiB, websockets' default max_size, and the client
    # closed with 1009 (tests/hardening/test_faults.py's stuck watcher saw it on a busy machine).
    from webapp.web.stream import MERGED_MAX, merged_groups

    pending = [("x" * 200_000, n, 1) for n in range(8)] + [("y" * 600_000, 8, 1), ("z", 9, 1)]
    groups = list(merged_groups(pending))
    assert [parts for group in groups for _, parts, _ in group] == list(range(10))
    for group in groups:
        assert len(group) == 1 or sum(len(text) for text, _, _ in group) <= MERGED_MAX
    assert MERGED_MAX < 2**20
    assert len(groups) == 10  # two 200 kB batches would pass the cap: one a message
    small = [("s" * 50_000, n, 1) for n in range(8)]  # small ones still go out merged
    assert [len(g) for g in merged_groups(small)] == [5, 3]


def test_a_late_flush_goes_out_in_messages_of_bounded_events():
    # A flush late on a busy machine held thousands of events in one JSON message, past a
    # client's 1 MiB; now it is cut into messages of JSON_EVENTS, the dropped count on the first.
    from webapp.engine.events import Received
    from webapp.web.stream import JSON_EVENTS, Hub

    hub = Hub.__new__(Hub)
    hub.max_events = JSON_EVENTS
    events = [Received(seq=n, time=0.0, worker="s", message="m", local=("127.0.0.1", 1),
                       peer=("127.0.0.1", 2), size=1, text="x") for n in range(2 * JSON_EVENTS + 1)]
    parts = hub._parts(events)
    assert [len(p) for p in parts] == [JSON_EVENTS, JSON_EVENTS, 1]
    assert [e for p in parts for e in p] == events
    hub.max_events = None
    assert hub._parts(events) == [events]
