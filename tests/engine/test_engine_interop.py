"""The engine's workers talk to plain blocking sockets written the way the book writes them.

Each book-style program runs in its own thread with socket timeouts, so a lost datagram ends
the test instead of hanging it. Loopback only.
"""

import asyncio
import socket
import threading

import pytest

from waiting import ended, until
from webapp.engine import Supervisor
from webapp.engine.payload import show

LOOPBACK = "127.0.0.1"
MAX_BYTES = 65535






class BookServer(threading.Thread):
    """Listing 2-1's server, blocking, answering `requests` datagrams then returning."""

    def __init__(self, requests: int):
        super().__init__(daemon=True)
        self.requests = requests
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((LOOPBACK, 0))
        self.sock.settimeout(5)  # never block a test run for longer
        self.port = self.sock.getsockname()[1]
        self.seen: list[tuple[tuple, str]] = []
        self.failure: BaseException | None = None

    def run(self) -> None:
        try:
            for _ in range(self.requests):
                data, address = self.sock.recvfrom(MAX_BYTES)
                text = data.decode("ascii")
                self.seen.append((address, text))
                text = "Your data was {} bytes long".format(len(data))
                self.sock.sendto(text.encode("ascii"), address)
        except BaseException as exc:  # reported by the test, not lost in the thread
            self.failure = exc
        finally:
            self.sock.close()


@pytest.mark.parametrize("mode", ["promiscuous", "connected"])
async def test_engine_client_with_a_book_server(mode):
    server = BookServer(requests=2)
    server.start()
    try:
        async with Supervisor() as sup:
            client = await sup.start({"kind": "client", "port": server.port, "mode": mode,
                                      "message": "from the engine", "count": 2, "interval": 0})
            await ended(client)
    finally:
        server.join(timeout=6)
    assert not server.is_alive()
    assert server.failure is None
    assert [text for _, text in server.seen] == ["from the engine"] * 2
    assert {address[1] for address, _ in server.seen} == {client.local[1]}
    replies = [e for e in client.history if e.type == "reply"]
    assert [e.text for e in replies] == ["Your data was 15 bytes long"] * 2
    assert all(e.peer == (LOOPBACK, server.port) for e in replies)
    assert client.counters["replies"] == 2
    assert client.state == "finished"


def book_client(port: int, data: bytes) -> tuple[tuple, bytes, tuple]:
    """Listing 2-1's client: sendto, then recvfrom with a timeout."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.settimeout(2)
        sock.sendto(data, (LOOPBACK, port))
        local = sock.getsockname()
        reply, address = sock.recvfrom(MAX_BYTES)
        return local, reply, address
    finally:
        sock.close()


async def test_book_client_with_the_engine_server():
    async with Supervisor() as sup:
        server = await sup.start({"kind": "server", "port": 0})
        port = server.local[1]
        message = "The time is 2026-11-24 16:53:41.123456".encode("ascii")
        local, reply, address = await asyncio.to_thread(book_client, port, message)
        assert reply.decode("ascii") == "Your data was 38 bytes long"
        assert address == (LOOPBACK, port)
        await until(lambda: server.counters["replied"] == 1, "the reply event")
        received = [e for e in server.history if e.type == "received"][0]
        assert received.message == (
            f"The client at ('127.0.0.1', {local[1]}) says "
            "'The time is 2026-11-24 16:53:41.123456'"
        )


def book_remote_client(port: int, data: bytes) -> tuple[list[float], bytes]:
    """Listing 2-2's client: connect, then send with exponential backoff until a reply."""
    waits = []
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.connect((LOOPBACK, port))
        delay = 0.1  # seconds
        while True:
            sock.send(data)
            waits.append(delay)
            sock.settimeout(delay)
            try:
                reply = sock.recv(MAX_BYTES)
            except socket.timeout:
                delay *= 2  # wait even longer for the next request
                if delay > 2.0:
                    raise RuntimeError("I think the server is down") from None
            else:
                return waits, reply
    finally:
        sock.close()


async def test_book_remote_client_with_the_lossy_engine_server():
    # seed 7 drops the first two requests and answers the third (see the sans-I/O tests):
    # the book's client must back off 0.1 s, 0.2 s, then get its answer
    async with Supervisor() as sup:
        server = await sup.start({"kind": "server", "port": 0, "drop_rate": 0.5, "seed": 7})
        waits, reply = await asyncio.to_thread(book_remote_client, server.local[1], b"x" * 10)
        assert waits == [0.1, 0.2, 0.4]
        assert reply == b"Your data was 10 bytes long"
        await until(lambda: server.counters["replied"] == 1, "the reply")
        assert [e.type for e in server.history] == [
            "listening", "dropped", "dropped", "received", "sent"
        ]


async def test_binary_payload_is_echoed_byte_for_byte():
    payload = b"\xff\xfe\x00" + "ok ✓".encode() + bytes(range(256))
    async with Supervisor() as sup:
        server = await sup.start({"kind": "server", "port": 0, "reply": "echo"})
        _, reply, _ = await asyncio.to_thread(book_client, server.local[1], payload)
        assert reply == payload
        await until(lambda: server.counters["replied"] == 1, "the echo")
        received = [e for e in server.history if e.type == "received"][0]
        assert received.size == len(payload)
        assert received.text == show(payload)
        assert "\\xff\\xfe" in received.text
        received.text.encode("utf-8")  # safe for JSON and HTML
        assert received.message.startswith("The client at ('127.0.0.1', ")


async def test_largest_datagram_is_echoed_and_shown_short():
    payload = b"A" * 65507  # the largest UDP payload over IPv4
    async with Supervisor() as sup:
        server = await sup.start({"kind": "server", "port": 0, "reply": "echo"})
        _, reply, _ = await asyncio.to_thread(book_client, server.local[1], payload)
        assert reply == payload
        await until(lambda: server.counters["replied"] == 1, "the echo")
        received = [e for e in server.history if e.type == "received"][0]
        assert received.size == 65507
        assert received.text == "A" * 200 + "…"
        assert server.counters["bytes_in"] == server.counters["bytes_out"] == 65507
