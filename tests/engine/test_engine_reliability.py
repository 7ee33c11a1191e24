"""Reliability: the book's advice on backoff (daemon, jitter, learned first wait) as plain
logic with a fake clock, then live on loopback, and the duplicate-reply trap that request IDs
cure.
"""

import asyncio
import errno
import random

import pytest

from webapp.engine import Supervisor
from webapp.engine.backoff import Attempt, Backoff, RttEstimator
from webapp.engine.requestid import split
from webapp.engine.workers import ClientWorker, Worker

BOOK = Backoff()  # 0.1 s, doubling, gives up past 2.0 s


def of_type(worker: Worker, kind: str) -> list:
    return [event for event in worker.history if event.type == kind]


def waits(attempt: Attempt, limit: int = 50) -> list[float]:
    """Every wait of one request until the attempt gives up (at most `limit`)."""
    out = [attempt.delay]
    while len(out) < limit and attempt.retry(now=float(len(out))) is not None:
        out.append(attempt.delay)
    return out


# --- backoff, without sockets ----------------------------------------------------------


def test_daemon_backoff_caps_its_wait_and_goes_on():
    daemon = Backoff(0.1, 2.0, 1.0, forever=True)
    assert daemon.delays(limit=8) == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.0, 1.0, 1.0, 1.0])
    assert len(daemon.delays()) == 100  # bounded by limit, never ending by itself
    assert Backoff(0.1, 2.0, 1.0).delays() == pytest.approx([0.1, 0.2, 0.4, 0.8])


def test_daemon_attempt_never_gives_up():
    attempt = Attempt(Backoff(0.1, 2.0, 1.0, forever=True), now=0.0)
    seen = []
    for n in range(1, 21):
        delay = attempt.retry(now=float(n))
        assert delay is not None
        seen.append(delay)
        assert attempt.deadline == pytest.approx(n + delay)
    assert seen[:4] == pytest.approx([0.2, 0.4, 0.8, 1.0])
    assert max(seen) == 1.0 and seen[-1] == 1.0
    assert attempt.tries == 21


def test_book_attempt_gives_up_after_its_five_waits():
    attempt = Attempt(BOOK, now=100.0)
    assert attempt.remaining(100.05) == pytest.approx(0.05)
    assert not attempt.expired(100.05) and attempt.expired(100.1)
    assert waits(attempt) == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.6])
    assert attempt.tries == 5


def test_jitter_spreads_each_wait_within_bounds_reproducibly():
    spread = Backoff(0.1, 2.0, 2.0, jitter=0.25)
    first = waits(Attempt(spread, 0.0, rng=random.Random(3)))
    again = waits(Attempt(spread, 0.0, rng=random.Random(3)))
    other = waits(Attempt(spread, 0.0, rng=random.Random(4)))
    assert first == again
    assert first != other
    for wait, base in zip(first, [0.1, 0.2, 0.4, 0.8, 1.6], strict=True):
        assert 0.75 * base <= wait <= 1.25 * base
    assert first != pytest.approx([0.1, 0.2, 0.4, 0.8, 1.6])  # it really spreads


def test_giving_up_ignores_the_jitter():
    # with a jitter of 90 % a wait of 1.6 s may be drawn as 3.0 s; giving up must still follow
    # the un-jittered schedule, so every seed makes the book's five tries
    for seed in range(20):
        attempt = Attempt(Backoff(jitter=0.9), 0.0, rng=random.Random(seed))
        assert len(waits(attempt)) == 5, seed
        assert attempt.base == pytest.approx(1.6)


def test_rtt_estimator_follows_rfc_6298():
    rtt = RttEstimator()
    assert rtt.timeout(0.7) == 0.7  # nothing learned yet
    rtt.sample(0.1)
    assert (rtt.srtt, rtt.rttvar) == pytest.approx((0.1, 0.05))
    assert rtt.timeout(0.7) == pytest.approx(0.1 + 4 * 0.05)
    rtt.sample(0.2)
    assert rtt.rttvar == pytest.approx(0.75 * 0.05 + 0.25 * 0.1)  # 0.0625
    assert rtt.srtt == pytest.approx(0.875 * 0.1 + 0.125 * 0.2)  # 0.1125
    assert rtt.timeout(0.7) == pytest.approx(0.1125 + 4 * 0.0625)
    assert rtt.samples == 2


def test_rtt_estimator_is_clamped():
    fast = RttEstimator(floor=0.005, ceiling=2.0)
    fast.sample(0.0001)
    assert fast.timeout(1.0) == 0.005
    slow = RttEstimator(floor=0.005, ceiling=2.0)
    slow.sample(1.5)
    assert slow.timeout(0.1) == 2.0


def test_attempt_starts_from_a_learned_first_wait():
    rtt = RttEstimator()
    rtt.sample(0.01)
    attempt = Attempt(BOOK, now=5.0, first=rtt.timeout(BOOK.initial))
    assert attempt.delay == pytest.approx(0.03)
    assert attempt.deadline == pytest.approx(5.03)
    assert attempt.retry(now=5.03) == pytest.approx(0.06)  # and doubles from there


# --- live backoff on loopback ----------------------------------------------------------


async def silent_server(sup: Supervisor):
    return await sup.start({"kind": "server", "port": 0, "reply": "none"})


async def test_daemon_client_retries_past_where_the_book_gives_up(until):
    async with Supervisor() as sup:
        server = await silent_server(sup)
        client = await sup.start({"kind": "client", "port": server.local[1], "daemon": True,
                                  "timeout": 0.02, "give_up_after": 0.05})
        # the book's schedule (0.02, 0.04) would give up after 0.06 s and 2 tries
        await until(lambda: client.counters["retries"] > 8, "nine retries", 3.0)
        assert client.counters["gave_up"] == 0
        assert client.state == "running"
        delays = [e.delay for e in of_type(client, "waiting")]
        assert delays[:4] == pytest.approx([0.02, 0.04, 0.05, 0.05])
        assert max(delays) == pytest.approx(0.05)
        await until(lambda: server.counters["received"] >= 9, "the server to see the tries")
        await sup.stop(client.id)
        assert client.state == "stopped"
        assert of_type(client, "gave-up") == []


async def test_adaptive_client_learns_a_short_first_wait():
    async with Supervisor() as sup:
        server = await sup.start({"kind": "server", "port": 0})
        client = await sup.start({"kind": "client", "port": server.local[1], "adaptive": True,
                                  "count": 4, "interval": 0, "timeout": 1.0})
        await asyncio.wait([client.task], timeout=3)
        assert client.state == "finished"
        assert client.counters["replies"] == 4 and client.counters["timeouts"] == 0
        first, *later = of_type(client, "waiting")
        assert first.delay == 1.0 and "learned" not in first.message
        assert len(later) == 3
        for n, event in enumerate(later, start=1):
            assert event.delay < 0.1, event.message  # loopback answers in well under 0.1 s
            assert f"learned from {n} round trip" in event.message
        assert client.rtt.samples == 4


async def test_jittered_client_waits_the_same_on_every_run():
    spec = {"kind": "client", "timeout": 0.01, "give_up_after": 0.08, "jitter": 0.5,
            "seed": 11}

    async def run_once() -> list[float]:
        async with Supervisor() as sup:
            server = await silent_server(sup)
            client = await sup.start({**spec, "port": server.local[1]})
            await asyncio.wait([client.task], timeout=2)
            assert client.state == "finished" and client.counters["gave_up"] == 1
            return [e.delay for e in of_type(client, "waiting")]

    first = await run_once()
    assert first == await run_once()
    expected = waits(Attempt(Backoff(0.01, 2.0, 0.08, jitter=0.5), 0.0,
                             rng=random.Random(11)))
    assert first == pytest.approx(expected)
    assert len(first) == 4  # 0.01, 0.02, 0.04, 0.08, each spread
    assert first != pytest.approx([0.01, 0.02, 0.04, 0.08])


async def test_connected_daemon_client_to_a_closed_port_keeps_reporting_refusals(
        until, closed_port):
    async with Supervisor() as sup:
        client = await sup.start({"kind": "client", "port": closed_port, "mode": "connected",
                                  "daemon": True, "timeout": 0.01, "give_up_after": 0.02})
        await until(lambda: client.counters["errors"] >= 3, "three refusals")
        errors = of_type(client, "error")
        assert {e.errno for e in errors} == {errno.ECONNREFUSED}
        assert all("[Errno 111] Connection refused" in e.message for e in errors)
        assert client.state == "running"  # the network's errors are events, not a crash
        assert client.counters["replies"] == 0
        await sup.stop(client.id)
        assert client.state == "stopped"


# --- the duplicate-reply trap ----------------------------------------------------------

# The server answers 0.15 s late; the client waits 0.1 s, so it sends request 1 again. The
# answer to the first copy comes while it waits the second time; the answer to the second
# copy arrives when nobody waits and stays queued until request 2 is sent 0.3 s later.
TRAP_SERVER = {"kind": "server", "port": 0, "reply": "echo", "delay": 0.15}
TRAP_CLIENT = {"kind": "client", "count": 2, "interval": 0.3, "timeout": 0.1,
               "give_up_after": 2.0}


async def trapped(mode: str) -> tuple[ClientWorker, dict]:
    async with Supervisor() as sup:
        server = await sup.start(TRAP_SERVER)
        client = await sup.start({**TRAP_CLIENT, "mode": mode, "port": server.local[1]})
        await asyncio.wait([client.task], timeout=3)
        assert client.state == "finished"
        return client, dict(server.counters)


async def test_promiscuous_client_takes_a_late_reply_as_the_next_answer():
    client, server = await trapped("promiscuous")
    first, second = of_type(client, "reply")
    requests = [e.text for e in of_type(client, "sent")]
    assert first.stale is False and first.text == requests[0]
    assert second.stale is True
    assert second.text == requests[0] != requests[-1]  # request 1's echo taken for request 2
    assert "late or duplicate reply" in second.message
    assert client.counters["stale"] >= 1
    assert server["replied"] >= 2


async def test_request_id_client_is_immune_to_late_replies():
    client, _ = await trapped("request-id")
    assert client.counters["stale"] == 0
    assert client.counters["replies"] == 2
    rejected = of_type(client, "rejected")
    assert rejected and all("earlier request" in e.reason for e in rejected)
    # every accepted reply carries the ID of the request being sent just before it
    current = None
    for event in client.history:
        if event.type == "sent":
            current, _ = split(event.text.encode())
        elif event.type == "reply":
            assert current is not None and split(event.text.encode())[0] == current
            assert event.stale is False


async def test_duplicate_server_answers_every_request_twice(udp):
    async with Supervisor() as sup:
        server = await sup.start({"kind": "server", "port": 0, "duplicate": True})
        late = await sup.start({"kind": "server", "port": 0, "duplicate": True,
                                "delay": 0.02, "reply": "echo"})
        plain = udp.open()
        for n in range(3):
            plain.sendto(b"x" * (n + 1), server.local)
            plain.sendto(b"late", late.local)
        replies = await udp.receive(plain, 12)
        await asyncio.sleep(0.05)
        assert udp.pending(plain) == []  # twice, not more
        assert sorted(replies) == sorted([b"Your data was 1 bytes long"] * 2
                                         + [b"Your data was 2 bytes long"] * 2
                                         + [b"Your data was 3 bytes long"] * 2
                                         + [b"late"] * 6)
        for worker in (server, late):
            assert worker.counters["received"] == 3
            assert worker.counters["replied"] == 2 * worker.counters["received"]
        assert sum("0.02 s late" in e.message for e in of_type(late, "sent")) == 6
