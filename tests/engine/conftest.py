"""Fixtures shared by the engine tests that drive workers on real loopback sockets.

Helpers come as fixtures, not imports: `tests/conftest.py` and this file are both modules
named `conftest`, so `from conftest import ...` would depend on which one pytest loaded last.
"""

import asyncio
import os
import socket
import time
from collections.abc import Awaitable, Callable

import pytest
import waiting

from webapp.engine import forge

LOOPBACK = "127.0.0.1"

Until = Callable[..., Awaitable[None]]


@pytest.fixture
def until() -> Until:
    """`await until(predicate, what, timeout=2.0)`: a bounded wait for a condition."""
    async def until(predicate: Callable[[], bool], what: str, timeout: float = 2.0) -> None:
        await waiting.until(predicate, what, timeout)

    return until


class PlainSockets:
    """Book-style UDP sockets on loopback, outside the engine (an impostor, a bare client);
    every one is closed when the test ends."""

    def __init__(self) -> None:
        self.opened: list[socket.socket] = []

    def open(self, host: str = LOOPBACK) -> socket.socket:
        """A non-blocking UDP socket bound to `host` on a port the OS picks."""
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_DGRAM)
        self.opened.append(sock)
        sock.setblocking(False)
        sock.bind((host, 0))
        return sock

    @staticmethod
    async def receive(sock: socket.socket, count: int, timeout: float = 2.0) -> list[bytes]:
        """Exactly `count` datagrams read from `sock` within `timeout` seconds (fails if not),
        polling without blocking the loop so the workers keep running."""
        out: list[bytes] = []
        deadline = time.monotonic() + timeout
        while len(out) < count:
            try:
                out.append(sock.recv(65535))
                continue
            except BlockingIOError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"got {len(out)} of {count} datagrams within {timeout} s")
            await asyncio.sleep(0.002)
        return out

    @staticmethod
    def pending(sock: socket.socket) -> list[bytes]:
        """Whatever waits in `sock`'s queue now, without waiting."""
        out = []
        for _ in range(1000):
            try:
                out.append(sock.recv(65535))
            except BlockingIOError:
                break
        return out

    def close(self) -> None:
        for sock in self.opened:
            sock.close()


@pytest.fixture
def udp():
    """A factory of plain loopback UDP sockets, closed at the end of the test."""
    sockets = PlainSockets()
    yield sockets
    sockets.close()


@pytest.fixture
def closed_port() -> int:
    """A loopback UDP port with nothing bound to it (bound once to get it, then closed)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind((LOOPBACK, 0))
        return probe.getsockname()[1]


@pytest.fixture
def raw_capable() -> None:
    """Forged-source tests need CAP_NET_RAW. Root (as CI runs) must have it: fail, not skip."""
    if forge.can_forge():
        return
    if os.geteuid() == 0:
        pytest.fail("running as root but a raw socket cannot be opened: " + forge.NEEDS_RAW)
    pytest.skip(forge.NEEDS_RAW)
