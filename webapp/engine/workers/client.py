"""The client of listings 2-1 and 2-2: send, wait with exponential backoff, report the reply.

`promiscuous` uses sendto/recvfrom and takes a reply from anyone (the book's "Danger!");
`connected` calls connect() so the kernel passes only the server's replies.
"""

import asyncio
from collections import deque

from webapp.engine.backoff import Attempt
from webapp.engine.events import (
    Bound, Error, GaveUp, Reply, Sent, Timeout, Waiting, format_address,
)
from webapp.engine.payload import show, time_message
from webapp.engine.specs import ClientSpec
from webapp.engine.udp import MAX_BYTES, describe_os_error, open_client, short
from webapp.engine.workers.base import Worker

MAX_QUEUED_REPLIES = 1000


class ClientWorker(Worker):
    """A UDP client worker."""

    kind = "client"
    counter_names = ("sent", "replies", "timeouts", "retries", "gave_up", "errors")
    spec: ClientSpec

    def open(self) -> None:
        self.connected = self.spec.mode == "connected"
        self.sock = open_client(self.target, connect=self.connected)
        self.server = short(self.target.address)
        self._replies: deque[tuple[bytes, tuple]] = deque(maxlen=MAX_QUEUED_REPLIES)
        self._arrived = asyncio.Event()

    async def run(self) -> str:
        loop = asyncio.get_running_loop()
        spec = self.spec
        if self.connected:
            self._report_bound("Client socket name is {}")
        loop.add_reader(self.sock.fileno(), self._on_readable)
        for number in range(spec.count):
            if number:
                await asyncio.sleep(spec.interval)
            data = (spec.message or time_message()).encode()
            if not await self._exchange(loop, data):
                return "finished"
        return "finished"

    async def _exchange(self, loop: asyncio.AbstractEventLoop, data: bytes) -> bool:
        """Send `data` until a reply comes; False once the backoff gives up."""
        attempt = Attempt(self.spec.schedule, loop.time())
        while True:
            self._send(data)
            self.emit(Waiting, f"Waiting up to {attempt.delay:g} seconds for a reply",
                      delay=attempt.delay, attempt=attempt.tries)
            reply = await self._next_reply(loop, attempt)
            if reply is not None:
                self._accept(*reply)
                return True
            self.counters["timeouts"] += 1
            self.emit(Timeout, f"No reply within {attempt.delay:g} seconds",
                      delay=attempt.delay, attempt=attempt.tries)
            if attempt.retry(loop.time()) is None:
                self.counters["gave_up"] += 1
                self.emit(GaveUp, "I think the server is down", attempts=attempt.tries)
                return False
            self.counters["retries"] += 1

    def _send(self, data: bytes) -> None:
        first = self.local is None
        try:
            if self.connected:
                self.sock.send(data)
            else:
                self.sock.sendto(data, self.target.address)
        except OSError as exc:
            self.counters["errors"] += 1
            self.emit(Error, describe_os_error(exc, self.server), error=str(exc),
                      errno=exc.errno)
            return
        self.counters["sent"] += 1
        if first:
            self._report_bound("The OS assigned me the address {}")
        text = show(data)
        self.emit(Sent, f"Sent {text!r} to {format_address(self.server)}",
                  local=self.local, peer=self.server, size=len(data), text=text)

    def _report_bound(self, template: str) -> None:
        self.local = short(self.sock.getsockname())
        self.emit(Bound, template.format(format_address(self.local)), local=self.local)

    async def _next_reply(self, loop: asyncio.AbstractEventLoop,
                          attempt: Attempt) -> tuple[bytes, tuple] | None:
        while not self._replies:
            remaining = attempt.remaining(loop.time())
            if remaining <= 0:
                return None
            self._arrived.clear()
            try:
                async with asyncio.timeout(remaining):
                    await self._arrived.wait()
            except TimeoutError:
                pass
        return self._replies.popleft()

    def _accept(self, data: bytes, address: tuple) -> None:
        peer = short(address)
        expected = peer == self.server
        text = show(data)
        self.counters["replies"] += 1
        if self.connected:
            message = f"The server says {text!r}"
        else:
            message = f"The server {format_address(peer)} replied {text!r}"
            if not expected:
                message += f" (not the address we sent to, {format_address(self.server)}!)"
        self.emit(Reply, message, local=self.local, peer=peer, size=len(data), text=text,
                  expected=expected)

    def _on_readable(self) -> None:
        for _ in range(64):
            try:
                data, address = self.sock.recvfrom(MAX_BYTES)
            except BlockingIOError:
                return
            except OSError as exc:  # e.g. ICMP port unreachable on a connected socket
                self.counters["errors"] += 1
                self.emit(Error, describe_os_error(exc, self.server), error=str(exc),
                          errno=exc.errno)
                continue
            self._replies.append((data, address))
            self._arrived.set()
