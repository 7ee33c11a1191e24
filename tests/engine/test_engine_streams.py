"""Streams like iperf's UDP mode: the datagram format and the receiver's statistics as plain
logic with fake times, then real streams on loopback, where a small receive buffer makes the
kernel drop datagrams for real.
"""

import asyncio
import errno
import os
import socket
import sys
import time
import tracemalloc
from pathlib import Path

import pytest

from webapp.engine import Supervisor
from webapp.engine import stream as streams
from webapp.engine.mmsg import SendBatch
from webapp.engine.stream import HEADER_SIZE, MAGIC, StreamStats, pack, unpack
from webapp.engine.udp import kernel_queue
from webapp.engine.workers import ServerWorker, StreamWorker, Worker
from webapp.engine.workers.stream import CATCH_UP, FIXED, MAX_BURST, NUMBERED

LOOPBACK = "127.0.0.1"


def of_type(worker: Worker, kind: str) -> list:
    return [event for event in worker.history if event.type == kind]


# --- the format and the statistics, without sockets -----------------------------------


def test_pack_and_unpack_round_trip():
    data = pack(7, 3, 1700000000.25, 100)
    assert len(data) == 100 and data.startswith(MAGIC)
    assert unpack(data) == (7, 3, 1700000000.25)
    assert len(pack(1, 0, 0.0, 10)) == HEADER_SIZE == 28  # never shorter than the header
    assert unpack(pack(2**32 - 1, streams.MAX_SEQ, 5.0, 28)) == (2**32 - 1, streams.MAX_SEQ, 5.0)


@pytest.mark.parametrize("data", [
    b"", b"FAKE", b"The time is 2026-01-01 00:00:00", MAGIC, pack(1, 2, 3.0, 40)[:27],
    b"UDPLAB-X" + pack(1, 2, 3.0, 40)[8:],  # the wrong magic
    pack(1, streams.MAX_SEQ + 1, 3.0, 40),  # a sequence number no stream of ours reaches
])
def test_other_data_is_not_a_stream(data):
    assert unpack(data) is None


def test_stats_count_loss_duplicates_and_reordering():
    stats = StreamStats()
    outcomes = [stats.receive(seq, sent=seq * 0.01, size=100, now=seq * 0.01 + 0.001)
                for seq in (0, 1, 3, 2, 3, 5, 6, 6)]
    assert outcomes == ["new", "new", "new", "reordered", "duplicate", "new", "new",
                        "duplicate"]
    assert stats.received == 6  # 0 1 3 2 5 6
    assert stats.duplicates == 2
    assert stats.reordered == 1
    assert stats.highest == 6
    assert stats.lost == 1  # 4 never came
    assert stats.loss_rate == pytest.approx(1 / 7)
    assert stats.bytes == 600
    assert stats.to_dict() == {"received": 6, "lost": 1, "duplicates": 2, "reordered": 1,
                               "loss_rate": round(1 / 7, 6), "jitter_ms": 0.0, "bytes": 600}


def test_a_late_datagram_stops_counting_as_lost():
    stats = StreamStats()
    for seq in (0, 2):
        stats.receive(seq, 0.0, 50, 0.0)
    assert stats.lost == 1
    stats.receive(1, 0.0, 50, 0.0)
    assert (stats.lost, stats.reordered) == (0, 1)
    assert StreamStats().loss_rate == 0.0  # nothing expected yet


def test_jitter_is_zero_for_constant_transit_and_follows_rfc_3550_otherwise():
    steady = StreamStats()
    for seq in range(50):
        steady.receive(seq, sent=seq * 0.01, size=64, now=seq * 0.01 + 0.002)
    assert steady.jitter == pytest.approx(0.0, abs=1e-12)
    shaky = StreamStats()
    transits = [0.001, 0.003, 0.001, 0.004]
    expected = 0.0
    for seq, transit in enumerate(transits):
        shaky.receive(seq, sent=10.0 + seq, size=64, now=10.0 + seq + transit)
        if seq:
            expected += (abs(transit - transits[seq - 1]) - expected) / 16
    assert shaky.jitter == pytest.approx(expected)
    assert shaky.jitter > 0
    assert shaky.to_dict()["jitter_ms"] == round(expected * 1000, 3)


# --- real streams on loopback ---------------------------------------------------------


async def run_stream(sup: Supervisor, server: ServerWorker, **fields) -> StreamWorker:
    sender = await sup.start({"kind": "stream", "port": server.local[1], **fields})
    await asyncio.wait([sender.task], timeout=5)
    assert sender.state == "finished", sender.state
    return sender


async def final_report(until, server: ServerWorker, sender: StreamWorker):
    """The server's stream report that covers everything it counted of `sender`'s stream."""
    key = (sender.local, sender.stream_id)
    await until(lambda: key in server.streams, "the server to see the stream")
    stats = server.streams[key]

    def reported():
        reports = [e for e in of_type(server, "stream") if e.stream == sender.stream_id]
        return reports and reports[-1].stats["received"] == stats.received and reports[-1]

    await until(reported, "a stream report with the final figures", 2.0)
    return stats, reported()


async def test_stream_through_a_normal_buffer(until):
    # 50 000 datagrams/s of 200 bytes is 10 MB/s, easy for loopback and for a default receive
    # buffer (212 992 bytes: about 166 such datagrams) as long as the sender paces itself: a
    # sender that made up a late wake-up with one long burst would overflow it every time
    # (test_a_late_sender_makes_up_in_spaced_bursts checks that it does not).
    # The sender runs on its own thread and the server's C loop on another, as two programs
    # would, so a reader held off its CPU for a few milliseconds can also lose datagrams to the
    # kernel: each stream's loss is the kernel's (counted exactly), and up to three streams
    # are sent for one that goes through whole (a pacing fault loses in every one).
    async with Supervisor() as sup:
        server = await sup.start({"kind": "server", "port": 0})
        # The server's C loop starts on the first datagram (an idle worker has no thread):
        # start it before the streams, whose first milliseconds would otherwise meet a
        # reader that is not reading yet.
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
            client.setblocking(False)
            client.sendto(b"wake up", ("127.0.0.1", server.local[1]))
            await until(lambda: server.counters["replied"] == 1, "the server to answer")
        attempts = []
        for attempt in range(3):
            sender = await run_stream(sup, server, count=2000, size=200, rate=50000)
            assert sender.counters["sent"] == 2000
            assert sender.counters["bytes_out"] == 2000 * 200
            assert of_type(sender, "progress")[-1].message.startswith(
                "Sent 2000 of 2000 datagrams of 200 bytes")
            stats, report = await final_report(until, server, sender)
            assert list(server.streams)[-1] == (sender.local, sender.stream_id)
            print(f"\nnormal buffer: {stats.to_dict()}, kernel drops {report.kernel_drops}")
            assert stats.duplicates == 0
            assert stats.received + stats.lost == stats.highest + 1 <= 2000
            assert report.peer == sender.local
            assert report.stats == stats.to_dict()
            assert f"Stream {sender.stream_id} from" in report.message
            assert server.counters["replied"] == 1  # stream datagrams are counted, not answered
            assert server.to_dict()["streams"][-1]["received"] == stats.received
            attempts.append((stats.received, report.kernel_drops))
            if stats.received >= 1980:
                break
        assert attempts[-1][0] >= 1980, (
            f"each of {len(attempts)} streams lost datagrams through a default buffer "
            f"(received, kernel drops): {attempts}: the sender's bursts overflow it")


SO_RCVBUFFORCE = 33  # asm-generic/socket.h; not in Python's socket module. Root (CI) may use it


async def test_a_late_sender_makes_up_in_spaced_bursts(until):
    # A sender held off for 10–25 ms (here: this thread keeps the GIL; a thread already
    # waiting for it may get it once, after the old 5 ms switch interval) owes 500–1 250
    # datagrams at 50 000/s. It makes them up at most at twice its rate, in bursts of
    # MAX_BURST: in any millisecond at most 2 × 50 datagrams plus one burst, not the whole
    # debt at once (which a default receive buffer of ~166 such datagrams could not hold).
    # The datagrams' send times say when each burst left; a receive buffer big enough for
    # all of them keeps them until the stream is over.
    rate, count, size = 50_000, 5000, 200  # 0.1 s: the hold comes while it sends
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sink:
        sink.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 16 * 1024 * 1024)
        sink.bind(("127.0.0.1", 0))
        sink.setblocking(False)
        async with Supervisor() as sup:
            sender = await sup.start({"kind": "stream", "port": sink.getsockname()[1],
                                      "count": count, "size": size, "rate": rate})
            await until(lambda: sender.counters["sent"] > 0, "the first burst", 2.0)
            interval = sys.getswitchinterval()
            sys.setswitchinterval(1.0)  # hold the GIL: the sending thread waits for it
            try:
                held_until = time.monotonic() + 0.025
                while time.monotonic() < held_until:
                    pass
            finally:
                sys.setswitchinterval(interval)
            await asyncio.wait([sender.task], timeout=5)
            assert sender.state == "finished", sender.state
        sent = []
        while True:
            try:
                sent.append(unpack(sink.recv(2048))[2])
            except BlockingIOError:
                break
    assert len(sent) == count  # the buffer held every one
    sent.sort()
    busiest, first = 0, 0
    for last, at in enumerate(sent):
        while at - sent[first] > 0.001:
            first += 1
        busiest = max(busiest, last - first + 1)
    print(f"\nthe busiest millisecond carried {busiest} datagrams; "
          f"the stream took {(sent[-1] - sent[0]) * 1000:.1f} ms; ", end="")
    # A burst's send time is read just before it leaves: a sending thread preempted between
    # its schedule's clock and that read brings two bursts' times together, hence a margin.
    assert busiest <= CATCH_UP * rate // 1000 + 3 * MAX_BURST, (
        f"{busiest} datagrams left within one millisecond: a late sender made up in one burst")
    # It was held off (nothing left for 10 ms or more: a debt of 500, which one burst would
    # make up at far above the bound), and made up for it at twice its rate: the whole stream
    # still took about 5000 / 50 000 s.
    held = max(b - a for a, b in zip(sent, sent[1:]))
    print(f"the sender was held off for {held * 1000:.1f} ms")
    assert held >= 0.010
    assert 0.099 <= sent[-1] - sent[0] < 1.0


async def test_small_receive_buffer_drops_datagrams_for_real(until):
    async with Supervisor() as sup:
        server = await sup.start({"kind": "server", "port": 0, "rcvbuf": 2048})
        sender = await run_stream(sup, server, count=20000, size=200, rate=200000)
        stats, report = await final_report(until, server, sender)
        print(f"\nrcvbuf 2048: sent {sender.counters['sent']}, {stats.to_dict()}, "
              f"kernel drops {report.kernel_drops}")
        assert stats.lost > 0
        assert report.stats["lost"] == stats.lost > 0
        assert report.kernel_drops is not None and report.kernel_drops > 0
        assert server.counters["kernel_drops"] == report.kernel_drops
        assert f"the kernel dropped {report.kernel_drops} datagram(s)" in report.message
        assert stats.duplicates == 0
        assert stats.received + stats.lost == stats.highest + 1 <= 20000
        # every datagram the sender sent either arrived or the kernel dropped it
        await until(lambda: kernel_queue(server.sock)[0] == 0, "the queue to be read")
        assert stats.received + kernel_queue(server.sock)[1] == sender.counters["sent"] == 20000


async def test_stream_to_a_closed_port_counts_errors_and_finishes(closed_port):
    async with Supervisor() as sup:
        sender = await sup.start({"kind": "stream", "port": closed_port, "count": 200,
                                  "rate": 20000})
        await asyncio.wait([sender.task], timeout=3)
        assert sender.state == "finished"
        errors = of_type(sender, "error")
        assert sender.counters["errors"] == len(errors) > 0
        assert all("Connection refused" in e.message for e in errors)
        # each of the 200 datagrams was either sent or refused, and `sent` counts the former
        assert sender.counters["bytes_out"] == sender.counters["sent"] * 100
        assert sender.counters["sent"] + sender.counters["errors"] == 200


async def test_plain_requests_are_still_answered_beside_a_stream(until, udp):
    async with Supervisor() as sup:
        server = await sup.start({"kind": "server", "port": 0})
        sender = await sup.start({"kind": "stream", "port": server.local[1], "count": 500,
                                  "size": 64, "rate": 5000})
        plain = udp.open()
        await until(lambda: server.streams, "the stream to arrive")
        plain.sendto(b"hello", server.local)
        not_ours = pack(1, streams.MAX_SEQ + 1, 0.0, 40)  # magic, but not a stream of ours
        plain.sendto(not_ours, server.local)
        assert await udp.receive(plain, 2) == [b"Your data was 5 bytes long",
                                               b"Your data was 40 bytes long"]
        await asyncio.wait([sender.task], timeout=3)
        assert len(server.streams) == 1
        assert server.counters["replied"] == 2
        assert [e.text for e in of_type(server, "received")][0] == "hello"


async def test_a_huge_sequence_number_costs_the_server_no_megabytes(until, udp):
    # A server may face the LAN (remote labs). A datagram with the stream magic and a
    # sequence number near MAX_SEQ must not make it allocate a bitmap of MAX_SEQ bits
    # (12.5 MB) per stream: 64 such datagrams would then pin 800 MB.
    async with Supervisor() as sup:
        server = await sup.start({"kind": "server", "port": 0})
        plain = udp.open()
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            for stream_id in range(4):
                plain.sendto(pack(stream_id, streams.MAX_SEQ, 0.0, 40), server.local)
            await until(lambda: server.counters["received"] == 4, "four datagrams")
            grown = tracemalloc.get_traced_memory()[0] - before
        finally:
            tracemalloc.stop()
        assert len(server.streams) == 4
        assert grown < 1_000_000, f"4 datagrams of 40 bytes cost the server {grown:,} bytes"


# --- the sending thread and its batches ------------------------------------------------


def test_a_send_batch_sends_what_the_kernel_takes_and_says_how_many():
    """sendmmsg on a datagram socket pair whose receiver is not read: the queue fills, one
    call sends part of its batch (and says how many), the next raises EAGAIN; every datagram
    received is a whole one (the shared prefix, its own head, the shared tail)."""
    sender, receiver = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    with sender, receiver:
        sender.setblocking(False)
        batch = SendBatch(8, 4, b"-tail", prefix=b"P:")
        for i in range(8):
            batch.heads[i * 4:(i + 1) * 4] = b"%04d" % i
        assert batch.size == 11
        counts = []
        for _ in range(10_000):  # the queue (max_dgram_qlen, or the buffer) fills long before
            try:
                counts.append(batch.send(sender.fileno(), 0, 8))
            except BlockingIOError:
                break
        else:
            pytest.fail("the receive queue never filled")
        assert counts[0] == 8 and all(0 < n <= 8 for n in counts)
        partial = counts[-1]
        got = []
        receiver.setblocking(False)
        while True:
            try:
                got.append(receiver.recv(100))
            except BlockingIOError:
                break
        assert len(got) == sum(counts)
        expected = [b"P:%04d-tail" % i for i in range(8)] * len(counts)
        assert got == expected[:len(got)]
        print(f"\nbatches sent: {len(counts)}, the last {partial} of 8")
        with pytest.raises(ValueError):
            batch.send(sender.fileno(), 3, 9)
        with pytest.raises(OSError) as refused:  # not a socket at all
            batch.send(-1, 0, 1)
        assert refused.value.errno == errno.EBADF


def thread_names() -> set[str]:
    """The OS names of this process's threads (what `ps -L` and `top -H` show)."""
    names = set()
    for task in os.listdir("/proc/self/task"):
        try:
            names.add(Path(f"/proc/self/task/{task}/comm").read_text().strip())
        except FileNotFoundError:
            pass  # a thread that just ended
    return names


async def test_the_sending_thread_is_named_and_ends_with_the_worker(until):
    async with Supervisor() as sup:
        server = await sup.start({"kind": "server", "port": 0, "reply": "none"})
        sender = await sup.start({"kind": "stream", "port": server.local[1], "count": 3000,
                                  "size": 64, "rate": 5000})
        await until(lambda: sender.counters["sent"] > 0, "the first datagrams")
        assert sender.thread.is_alive()
        assert f"udp:{sender.id}" in thread_names()
        assert sender.thread.name == f"udp:{sender.id}"
        await run_to_end(sender)
        assert sender.state == "finished"
        assert not sender.thread.is_alive()  # ended before the worker did
        assert f"udp:{sender.id}" not in thread_names()
        assert sender.counters["sent"] == 3000


async def run_to_end(sender: StreamWorker) -> None:
    done, _ = await asyncio.wait([sender.task], timeout=5)
    assert done, f"{sender.id} still {sender.state}"


async def test_a_fast_stream_stops_promptly_and_its_counters_are_exact(until):
    """Stopped in the middle of a stream at its fastest: the stop takes well under a second,
    the thread is gone before the socket closes, and `sent` is exact: every datagram counted
    was received by the server or dropped by its kernel."""
    async with Supervisor() as sup:
        server = await sup.start({"kind": "server", "port": 0, "reply": "none"})
        sender = await sup.start({"kind": "stream", "port": server.local[1],
                                  "count": 10_000_000, "size": 64, "rate": 1_000_000})
        await until(lambda: sender.counters["sent"] > 20_000, "a fast stream under way")
        thread = sender.thread
        started = time.monotonic()
        await sup.stop(sender.id)
        took = time.monotonic() - started
        assert sender.state == "stopped"
        assert not thread.is_alive()
        assert took < 0.5, f"the stop took {took:.2f} s"
        sent = sender.counters["sent"]
        assert 20_000 < sent < 10_000_000
        assert sender.counters["bytes_out"] == 64 * sent
        assert sender.counters["errors"] == 0
        assert not any(e.message.startswith("Sent ") for e in of_type(sender, "progress"))
        await asyncio.sleep(0.05)
        assert sender.counters["sent"] == sent  # nothing moves after the stop
        key = (sender.local, sender.stream_id)
        await until(lambda: kernel_queue(server.sock)[0] == 0, "the queue to be read")
        stats = server.streams[key]
        assert stats.received + kernel_queue(server.sock)[1] == sent
        assert stats.duplicates == 0


async def test_each_datagram_carries_its_own_number_and_send_time(udp):
    """The sending thread writes the header in two parts (what stays and what changes): a
    plain socket reads the datagrams as stream.unpack does, numbered 0, 1, 2, ... with send
    times within the stream's life, never going back."""
    assert FIXED.size + NUMBERED.size == HEADER_SIZE
    assert streams.HEADER.format == "!" + FIXED.format[1:] + NUMBERED.format[1:]
    sink = udp.open()
    sink.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    async with Supervisor() as sup:
        before = time.time()
        sender = await sup.start({"kind": "stream", "port": sink.getsockname()[1],
                                  "count": 300, "size": 100, "rate": 100_000})
        await run_to_end(sender)
        after = time.time()
    data = await udp.receive(sink, 300)
    assert all(len(d) == 100 for d in data)
    headers = [unpack(d) for d in data]
    assert [h[1] for h in headers] == list(range(300))
    assert {h[0] for h in headers} == {sender.stream_id}
    times = [h[2] for h in headers]
    assert before <= times[0] and times[-1] <= after
    assert times == sorted(times)
