"""The C receive loop of servers and listeners (webapp/engine/fastpath.c): it answers exactly
as the Python Responder would, drops what the seeded coin says in the same order, keeps the
counters exact, runs on a named thread that exists only while the worker has traffic to read,
and stops promptly. Real sockets on loopback; every loop bounded."""

import asyncio
import os
import random
import socket
import time
from pathlib import Path

import pytest

from waiting import of_type, until
from webapp.engine import Supervisor, fastpath
from webapp.engine.mmsg import SendBatch
from webapp.engine.payload import show
from webapp.engine.policy import Policy
from webapp.engine.udp import kernel_queue
from webapp.engine.workers.server import Responder

LOOPBACK = "127.0.0.1"


def thread_names() -> list[str]:
    """The names of this process's OS threads (what `top -H` shows)."""
    return [Path(f"/proc/self/task/{task}/comm").read_text().strip()
            for task in os.listdir("/proc/self/task")]


def round_trips(port: int, payloads: list[bytes], timeout: float = 1.0) -> list[bytes | None]:
    """Each payload as a request, one at a time; its reply or None (a drop)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        replies = []
        for payload in payloads:
            sock.sendto(payload, (LOOPBACK, port))
            try:
                replies.append(sock.recvfrom(70000)[0])
            except TimeoutError:
                replies.append(None)
        return replies


async def start(supervisor: Supervisor, kind: str = "server", **spec):
    return await supervisor.start({"kind": kind, "host": LOOPBACK, "port": 0, **spec})


def payloads() -> list[bytes]:
    """Requests the reply depends on: request IDs well and badly formed, sizes, bytes."""
    rng = random.Random(17)
    made = [b"", b"x", b"#ID:0123456789abcdef hello", b"#ID:0123456789abcdef ",
            b"#ID:0123456789ABCDEF hello", b"#ID:0123456789abcdeg hello",
            b"#ID:0123456789abcdef", b"#ID:0123456789abcdefhello", "caf\u00e9 \u2713".encode(),
            bytes(range(256)), b"y" * 9000]
    made += [rng.randbytes(rng.randrange(1, 1500)) for _ in range(40)]
    made += [b"#ID:" + f"{rng.getrandbits(64):016x}".encode() + b" " + rng.randbytes(rng.randrange(60))
             for _ in range(20)]
    return made


@pytest.mark.parametrize("reply", ["length", "echo"])
async def test_the_c_loop_answers_as_the_responder_does(reply):
    sent = payloads()
    async with Supervisor() as supervisor:
        server = await start(supervisor, reply=reply)
        replies = await asyncio.to_thread(round_trips, server.local[1], sent)
        expected = [Responder(reply, 0.0, None).answer(p) for p in sent]
        assert replies == expected
        assert server.counters["received"] == server.counters["replied"] == len(sent)
        assert server.counters["bytes_out"] == sum(map(len, expected))
        # and the events say the same, shown one by one (under the budget)
        said = [e.text for e in of_type(server, "sent")]
        assert said == [show(r) for r in expected]


def answered(port: int, count: int, chunk: int = 500) -> set[int]:
    """Send requests 0..count-1 (echoed back) a chunk at a time; the numbers answered."""
    got: set[int] = set()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        sock.settimeout(0.3)
        for first in range(0, count, chunk):
            for n in range(first, min(count, first + chunk)):
                sock.sendto(b"%d" % n, (LOOPBACK, port))
            try:
                while True:  # until the chunk's answers stop coming (bounded by the timeout)
                    got.add(int(sock.recvfrom(100)[0]))
            except TimeoutError:
                pass
    return got


async def test_seeded_drops_are_the_responders_in_order_across_refills():
    # more requests than the C loop's first 8 192 decisions drawn ahead: refilled on the way
    count = 10_000
    async with Supervisor(policy=Policy(events_per_second=0)) as supervisor:
        server = await start(supervisor, reply="echo", drop_rate=0.3, seed=11)
        server.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        got = await asyncio.to_thread(answered, server.local[1], count)
        coin = Responder("echo", 0.3, 11)
        expected = {n for n in range(count) if not coin.drops()}
        assert server.counters["kernel_drops"] == 0
        assert got == expected
        assert server.counters["dropped"] == count - len(expected)
        assert server.counters["replied"] == len(expected)
        # a budget of 0 shows each: the history (its last 1 000 events) has the last drops
        dropped = [str(n) for n in range(count) if n not in expected]
        shown = [e.text for e in of_type(server, "dropped")]
        assert len(shown) > 100 and shown == dropped[-len(shown):]


async def test_the_thread_starts_with_the_first_datagram_and_ends_with_the_worker():
    async with Supervisor() as supervisor:
        server = await start(supervisor, name="quiet")
        listener = await start(supervisor, "listener", name="ears")
        await asyncio.sleep(0.05)
        assert server.fast is None and listener.fast is None  # idle: no thread, no buffers
        assert "udp:quiet" not in thread_names()
        assert await asyncio.to_thread(round_trips, server.local[1], [b"hi"]) == [
            b"Your data was 2 bytes long"]
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.sendto(b"psst", (LOOPBACK, listener.local[1]))
        await until(lambda: listener.counters["received"] == 1, "the listener's datagram")
        assert {"udp:quiet", "udp:ears"} <= set(thread_names())
        began = time.monotonic()
        await supervisor.stop(server.id)
        await supervisor.stop(listener.id)
        took = time.monotonic() - began
        assert not {"udp:quiet", "udp:ears"} & set(thread_names())
        assert took < 0.5, f"stopping two workers took {took:.3f} s"
        assert [e.text for e in of_type(listener, "received")] == ["psst"]


async def test_stopping_a_reading_thread_does_not_wait_for_its_receive_timeout():
    # The thread blocks in recvmmsg with a 20 ms timeout; stopping it (on the event loop)
    # nudges it out at once instead of waiting up to 20 ms per worker.
    async with Supervisor() as supervisor:
        servers = [await start(supervisor) for _ in range(10)]
        for server in servers:
            assert await asyncio.to_thread(round_trips, server.local[1], [b"go"]) == [
                b"Your data was 2 bytes long"]
        await asyncio.sleep(0.05)  # every thread back in its blocking receive
        took = []
        for server in servers:
            began = time.perf_counter()
            server.fast.stop()
            took.append(time.perf_counter() - began)
        quick = sum(t < 0.005 for t in took)
        assert quick >= 8, f"stops took {[round(t * 1000, 1) for t in took]} ms"


def stream_to(port: int, count: int) -> int:
    """Send `count` 64-byte datagrams as fast as sendmmsg goes (64 a call); how many went."""
    batch = SendBatch(64, 64)
    sent = 0
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.connect((LOOPBACK, port))
        while sent < count:
            sent += batch.send(sock.fileno(), 0, min(64, count - sent))
    return sent


def kernel_drops(worker) -> int:
    """Datagrams the kernel dropped at the worker's socket (its receive buffer was full)."""
    return kernel_queue(worker.sock)[1]


def paced_to(port: int, count: int, gap: float) -> int:
    """Send `count` 64-byte datagrams one at a time, `gap` seconds apart (a busy wait: the
    sender's own sleep would be longer); how many went."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.connect((LOOPBACK, port))
        due = time.perf_counter()
        for _ in range(count):
            sock.send(bytes(64))
            due += gap
            while time.perf_counter() < due:
                pass
    return count


async def test_a_sink_under_a_stream_naps_between_reads_and_still_counts_every_datagram():
    # A listener or a server that does not reply, fed faster than one datagram per 200 µs
    # but slower than it reads (here one every 10 µs, 100 000/s), pauses 50 µs between reads
    # instead of blocking for each datagram, so neither side pays for a wake-up per datagram:
    # several datagrams per read (about 5; without the nap about one), every one counted.
    count = 4000
    async with Supervisor() as supervisor:
        sink = await start(supervisor, reply="none", rcvbuf=4 << 20)
        ears = await start(supervisor, "listener")
        for worker in (sink, ears):
            await asyncio.to_thread(paced_to, worker.local[1], 1, 0)  # its thread starts
            await until(lambda: worker.counters["received"] == 1, "the first datagram")
            reads, naps = worker.fast.reads(), worker.fast.naps()
            began = time.monotonic()
            sent = await asyncio.to_thread(paced_to, worker.local[1], count, 10e-6)
            await until(lambda: worker.counters["received"] + kernel_drops(worker)
                        >= 1 + sent, "the stream counted")
            reads, naps = worker.fast.reads() - reads, worker.fast.naps() - naps
            taken = worker.counters["received"] - 1
            print(f"\n{worker.kind}: {reads} reads, {naps} naps for {taken} datagrams")
            assert taken + kernel_drops(worker) == sent, "every datagram counted"
            assert naps > 0 and taken >= 3 * reads, (
                f"{worker.kind}: {reads} reads and {naps} naps for {taken} datagrams in "
                f"{time.monotonic() - began:.3f} s: it did not nap")
        assert kernel_drops(sink) == 0  # 4 MiB: room for the whole stream


async def test_a_sink_whose_reads_come_back_full_reads_on_without_napping():
    # A read that brought a whole batch (32) means more waits: the sink reads on at once.
    # Napping after every read would cap it at 32 datagrams a nap (on a Xeon, 289 000/s
    # against the plain loop's 604 000). Here 4 000 datagrams wait while it is paused.
    count = 4000
    async with Supervisor() as supervisor:
        sink = await start(supervisor, reply="none", rcvbuf=4 << 20)
        await asyncio.to_thread(paced_to, sink.local[1], 1, 0)  # its thread starts
        await until(lambda: sink.counters["received"] == 1, "the first datagram")
        supervisor.pause(sink.id)
        sent = await asyncio.to_thread(stream_to, sink.local[1], count)
        reads, naps = sink.fast.reads(), sink.fast.naps()
        supervisor.resume(sink.id)
        await until(lambda: sink.counters["received"] == 1 + sent, "the queue read")
        reads, naps = sink.fast.reads() - reads, sink.fast.naps() - naps
        print(f"\n{reads} reads, {naps} naps for {sent} datagrams that waited")
        assert sent == count and kernel_drops(sink) == 0
        assert reads <= count // 32 + 2, f"{reads} reads for {count} datagrams"
        assert naps <= 1, f"{naps} naps while whole batches waited ({reads} reads)"


async def test_a_server_that_replies_never_naps_under_a_stream():
    # Its clients wait for the replies: a pause would add to every round trip.
    async with Supervisor() as supervisor:
        server = await start(supervisor, reply="length", rcvbuf=4 << 20)
        await asyncio.to_thread(stream_to, server.local[1], 1)  # its thread starts
        await until(lambda: server.counters["received"] == 1, "the first datagram")
        sent = await asyncio.to_thread(stream_to, server.local[1], 4000)
        await until(lambda: server.counters["received"] == 1 + sent, "the stream counted")
        assert server.fast.naps() == 0


async def test_a_reply_in_hand_has_its_events_and_counts_without_the_loop_running():
    # The C loop writes a shown request's record before its reply goes: reading the worker's
    # history or counters takes the records, even before the loop has run the eventfd's
    # callback (here it cannot: the exchange blocks the loop's own thread).
    async with Supervisor() as supervisor:
        server = await start(supervisor)
        assert await asyncio.to_thread(round_trips, server.local[1], [b"warm"]) == [
            b"Your data was 4 bytes long"]  # the thread runs from the first datagram on
        await asyncio.sleep(0.05)
        for n in range(1, 21):  # no await in here: the loop sits still
            assert round_trips(server.local[1], [b"x" * n]) == [
                f"Your data was {n} bytes long".encode()]
            assert server.history[-1].text == f"Your data was {n} bytes long"
            assert server.history[-2].text == "x" * n
        assert server.counters["replied"] == 21


async def test_a_paused_server_reads_nothing_and_resumes_with_what_waited():
    async with Supervisor() as supervisor:
        server = await start(supervisor)
        port = server.local[1]
        assert await asyncio.to_thread(round_trips, port, [b"one"]) == [
            b"Your data was 3 bytes long"]
        supervisor.pause(server.id)
        assert "udp:" + server.id not in thread_names()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            for n in range(5):
                sock.sendto(b"w%d" % n, (LOOPBACK, port))
            await asyncio.sleep(0.1)
            assert server.counters["received"] == 1  # they wait in the kernel
            supervisor.resume(server.id)
            sock.settimeout(2)
            got = [sock.recvfrom(100)[0] for _ in range(5)]
        assert got == [b"Your data was 2 bytes long"] * 5
        await until(lambda: server.counters["replied"] == 6, "the waiting five answered")


async def test_a_listener_remembers_what_it_heard_for_broadcasts():
    # and once stopped it has heard nothing (its C loop's memory is freed, never read)
    async with Supervisor() as supervisor:
        listener = await start(supervisor, "listener")
        since = time.time()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.bind((LOOPBACK, 0))
            sock.sendto(b"hello, LAN", (LOOPBACK, listener.local[1]))
            port = sock.getsockname()[1]
        await until(lambda: listener.counters["received"] == 1, "the datagram")
        assert listener.heard_from(port, b"hello, LAN", since)
        assert not listener.heard_from(port, b"hello, WAN", since)
        assert not listener.heard_from(port + 1 if port < 65535 else 1, b"hello, LAN", since)
        assert not listener.heard_from(port, b"hello, LAN", time.time() + 1)
        await supervisor.stop(listener.id)
        assert not listener.heard_from(port, b"hello, LAN", since)


async def test_a_long_datagram_is_shown_as_python_shows_it():
    long = ("\u00e9" * 500).encode()  # 1 000 bytes: the C loop hands over its first 801
    async with Supervisor() as supervisor:
        listener = await start(supervisor, "listener")
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.sendto(long, (LOOPBACK, listener.local[1]))
        await until(lambda: of_type(listener, "received"), "its event")
        event = of_type(listener, "received")[0]
        assert event.text == show(long) and event.text.endswith("\u2026") and event.size == 1000


def test_a_missing_library_says_how_to_build_it(monkeypatch, tmp_path):
    monkeypatch.setattr(fastpath, "LIBRARY", tmp_path / "libfastpath.so.1")
    with pytest.raises(ImportError, match="run `make setup`"):
        fastpath._load()
