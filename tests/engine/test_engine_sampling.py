"""Busy workers: above `events_per_second` datagrams get no events of their own, the counters
stay exact, and a `sampled` event says how many were not shown. Real sockets on loopback;
every burst is bounded in count."""

import asyncio
import os
import socket

import pytest

from waiting import of_type, until
from webapp.engine import Supervisor, udp
from webapp.engine.policy import Policy
from webapp.engine.workers import base

LOOPBACK = "127.0.0.1"
BURST = 1000


def burst(port: int, count: int, size: int = 32) -> None:
    """`count` datagrams as fast as a plain socket sends them (the kernel queues them)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
        for n in range(count):
            sock.sendto(f"{n:06d}".encode().ljust(size, b"."), (LOOPBACK, port))


async def start(supervisor: Supervisor, kind: str, **spec) -> base.Worker:
    worker = await supervisor.start({"kind": kind, "host": LOOPBACK, "port": 0, **spec})
    if kind == "server":  # a big buffer: the whole burst fits, so nothing is lost to the kernel
        worker.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    return worker


@pytest.mark.parametrize("kind", ["server", "listener"])
async def test_above_the_budget_datagrams_are_counted_not_shown(kind):
    async with Supervisor(policy=Policy(events_per_second=100)) as supervisor:
        worker = await start(supervisor, kind, **({"reply": "none"} if kind == "server" else {}))
        if kind == "listener":
            worker.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        await asyncio.to_thread(burst, worker.local[1], BURST)
        await until(lambda: worker.counters["received"] + worker.counters["kernel_drops"]
                    >= BURST, "the burst to be read", timeout=5)
        received = worker.counters["received"]
        shown = len(of_type(worker, "received"))
        # One 0.1 s window's share of the budget (10), a few windows at most for the burst.
        assert 0 < shown <= 100, f"{shown} of {received} datagrams shown with a budget of 100/s"
        await until(lambda: of_type(worker, "sampled"), "the sampled report", timeout=3)
        await supervisor.stop(worker.id)  # the last count is reported on the way out
        sampled = of_type(worker, "sampled")
        assert sum(e.unshown for e in sampled) + shown == received
        first = sampled[0]
        assert first.per_second == 100 and first.seconds > 0
        assert f"{first.unshown:,} more datagram(s)" in first.message
        assert "counters include them all" in first.message


async def test_a_server_replies_to_every_request_whether_shown_or_not():
    async with Supervisor(policy=Policy(events_per_second=50)) as supervisor:
        server = await start(supervisor, "server", reply="length")
        port = server.local[1]

        def ask_all(count: int) -> list[bytes]:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
                sock.settimeout(2)
                replies = []
                for n in range(count):
                    sock.sendto(b"x" * (n % 50 + 1), (LOOPBACK, port))
                    replies.append(sock.recvfrom(100)[0])
                return replies

        replies = await asyncio.to_thread(ask_all, 300)
        assert replies == [f"Your data was {n % 50 + 1} bytes long".encode() for n in range(300)]
        assert server.counters["received"] == server.counters["replied"] == 300
        shown_in, shown_out = len(of_type(server, "received")), len(of_type(server, "sent"))
        assert shown_in == shown_out < 300  # a request shown has its reply shown too
        await supervisor.stop(server.id)
        assert shown_in + sum(e.unshown for e in of_type(server, "sampled")) == 300


async def test_a_duplicating_server_sends_both_copies_whether_shown_or_not():
    async with Supervisor(policy=Policy(events_per_second=50)) as supervisor:
        server = await start(supervisor, "server", reply="echo", duplicate=True)
        await asyncio.to_thread(burst, server.local[1], 300)
        await until(lambda: server.counters["replied"] == 600, "two replies to each of 300")
        shown = len(of_type(server, "received"))
        assert shown < 300 and len(of_type(server, "sent")) == 2 * shown


async def test_a_budget_of_zero_shows_every_datagram():
    async with Supervisor(policy=Policy(events_per_second=0)) as supervisor:
        server = await start(supervisor, "server", reply="none")
        await asyncio.to_thread(burst, server.local[1], BURST)
        await until(lambda: server.counters["received"] >= BURST, "the burst", timeout=5)
        assert len(of_type(server, "received")) == BURST
        await supervisor.stop(server.id)
        assert not of_type(server, "sampled")


async def test_a_quiet_worker_shows_everything_and_reports_nothing():
    async with Supervisor() as supervisor:  # the default budget, 1000 a second
        server = await start(supervisor, "server", reply="echo")
        await asyncio.to_thread(burst, server.local[1], 20)
        await until(lambda: server.counters["received"] >= 20, "20 datagrams")
        await supervisor.stop(server.id)
        assert len(of_type(server, "received")) == len(of_type(server, "sent")) == 20
        assert not of_type(server, "sampled")


async def test_a_backlog_is_drained_in_batches_and_single_datagrams_still_arrive():
    """The reader takes one datagram per wake-up while they come one at a time and drains
    when they pile up; either way every datagram is read, none waits for the next."""
    async with Supervisor() as supervisor:
        server = await start(supervisor, "server", reply="none")
        supervisor.pause(server.id)
        await asyncio.to_thread(burst, server.local[1], 500)  # queued in the kernel
        supervisor.resume(server.id)
        await until(lambda: server.counters["received"] == 500, "the backlog of 500")
        drained_in = server._wakeups
        assert drained_in < 100, f"500 queued datagrams took {drained_in} wake-ups"
        # Then one at a time: each is read on its own wake-up, with nothing behind it.
        for n in range(1, 11):
            await asyncio.to_thread(burst, server.local[1], 1)
            await until(lambda: server.counters["received"] == 500 + n, f"single datagram {n}")
        assert server._batch is False  # turn by turn again: one read per wake-up
        assert server._wakeups - drained_in <= 20


def proc_net_udp(sock: socket.socket) -> tuple[int, int]:
    """(rx_queue bytes, drops) of `sock` as /proc/net/udp lists it."""
    inode = str(os.fstat(sock.fileno()).st_ino)
    with open("/proc/net/udp") as lines:
        for line in lines:
            fields = line.split()
            if len(fields) > 12 and fields[9] == inode:
                return int(fields[4].split(":")[1], 16), int(fields[12])
    raise AssertionError("the socket is not in /proc/net/udp")


def test_kernel_queue_reads_the_socket_itself_and_agrees_with_proc():
    """SO_MEMINFO gives the queue and the drops in one call per socket (reading
    /proc/net/udp for each of 1 000 idle workers every second cost a pass over all of them)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as receiver, \
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
        receiver.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a tiny buffer
        receiver.bind((LOOPBACK, 0))
        assert udp.kernel_queue(receiver) == (0, 0)
        for _ in range(100):
            sender.sendto(b"x" * 100, receiver.getsockname())
        queued, drops = udp.kernel_queue(receiver)
        assert queued > 0 and drops > 0
        assert (queued, drops) == proc_net_udp(receiver)
