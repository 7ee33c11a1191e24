"""The client of listings 2-1 and 2-2: send, wait with backoff, report the reply.

Modes, from the most trusting to the most careful:
- `promiscuous`: sendto/recvfrom and takes a reply from anyone (the book's "Danger!");
- `check-address`: sendto/recvfrom, but refuses a reply whose source is not the server;
- `connected`: connect(), so the kernel passes only datagrams from the server's address;
- `request-id`: a random ID in each request; only a reply carrying it is the answer.
"""

import asyncio
import random
from collections import deque

from webapp.engine import requestid
from webapp.engine.backoff import Attempt, RttEstimator
from webapp.engine.events import (
    Bound, Error, GaveUp, Rejected, Reply, Sent, Timeout, Waiting, format_address,
)
from webapp.engine.payload import show, time_message
from webapp.engine.specs import ClientSpec
from webapp.engine.udp import describe_os_error, open_client, same_peer, short
from webapp.engine.workers.base import Worker

MAX_QUEUED_REPLIES = 1000
REMEMBERED_REQUESTS = 64  # earlier requests kept to recognise a stale reply


class ClientWorker(Worker):
    """A UDP client worker."""

    kind = "client"
    counter_names = ("sent", "replies", "timeouts", "retries", "gave_up", "rejected",
                     "unexpected", "stale", "errors")
    spec: ClientSpec

    def open(self) -> None:
        spec = self.spec
        self.connected = spec.mode == "connected"
        self.sock = open_client(self.target, connect=self.connected)
        self.server = short(self.target.address)
        self.random = random.Random(spec.seed) if spec.seed is not None else random.SystemRandom()
        self.ids = requestid.RequestIds(self.random) if spec.mode == "request-id" else None
        self.rtt = RttEstimator(ceiling=spec.give_up_after) if spec.adaptive else None
        self._replies: deque[tuple[bytes, tuple]] = deque(maxlen=MAX_QUEUED_REPLIES)
        self._earlier: deque[bytes] = deque(maxlen=REMEMBERED_REQUESTS)
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
            body = (spec.message or time_message()).encode()
            data = requestid.tag(self.ids.new(), body) if self.ids else body
            answered = await self._exchange(loop, data)
            self._earlier.append(data)
            if not answered:
                break
        return "finished"

    async def _exchange(self, loop: asyncio.AbstractEventLoop, data: bytes) -> bool:
        """Send `data` until a reply comes; False once the backoff gives up."""
        first = self.rtt.timeout(self.spec.timeout) if self.rtt else None
        attempt = Attempt(self.spec.schedule, loop.time(), first=first, rng=self.random)
        while True:
            await self.pace(len(data))
            sent_at = loop.time()
            self._send(data)
            learned = ""
            if self.rtt and self.rtt.samples and attempt.tries == 1:
                trips = self.rtt.samples
                learned = f" (learned from {trips} round trip{'s' if trips > 1 else ''})"
            self.emit(Waiting, f"Waiting up to {attempt.delay:.4g} seconds for a reply{learned}",
                      delay=attempt.delay, attempt=attempt.tries)
            reply = await self._next_answer(loop, attempt, data)
            if reply is not None:
                if self.rtt and attempt.tries == 1:  # Karn's rule: only unambiguous samples
                    self.rtt.sample(loop.time() - sent_at)
                self._accept(*reply, request=data)
                return True
            self.counters["timeouts"] += 1
            self.emit(Timeout, f"No reply within {attempt.delay:.4g} seconds",
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
        self.emit(Bound, template.format(format_address(self.local))
                  + self.target.family_note(), local=self.local,
                  family=self.target.family_name)

    async def _next_answer(self, loop: asyncio.AbstractEventLoop, attempt: Attempt,
                           request: bytes) -> tuple[bytes, tuple] | None:
        """The first datagram this mode accepts before the wait ends; refusals are reported."""
        while True:
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
            data, address = self._replies.popleft()
            reason = self._refusal(data, short(address))
            if reason is None:
                return data, address
            self._reject(data, short(address), reason)

    def _refusal(self, data: bytes, peer: tuple) -> str | None:
        """Why this mode refuses the datagram, or None to accept it."""
        # Family-correct: a mapped ::ffff:127.0.0.1 is the same peer as 127.0.0.1.
        if self.spec.mode == "check-address" and not same_peer(peer, self.server):
            return (f"it came from {format_address(peer)}, not from the server "
                    f"{format_address(self.server)}")
        if self.ids is not None:
            return self.ids.judge(data)
        return None

    def _reject(self, data: bytes, peer: tuple, reason: str) -> None:
        self.counters["rejected"] += 1
        text = show(data)
        self.emit(Rejected, f"Refused {text!r} from {format_address(peer)}: {reason}",
                  local=self.local, peer=peer, size=len(data), text=text, reason=reason)

    def _accept(self, data: bytes, address: tuple, request: bytes) -> None:
        peer = short(address)
        expected = same_peer(peer, self.server)
        stale = data != request and data in self._earlier
        text = show(data)
        self.counters["replies"] += 1
        if self.connected:
            message = f"The server says {text!r}"
        else:
            message = f"The server {format_address(peer)} replied {text!r}"
        if not expected:
            self.counters["unexpected"] += 1
            message += f" (not the address we sent to, {format_address(self.server)}!)"
        if stale:
            self.counters["stale"] += 1
            message += " (it repeats an earlier request: a late or duplicate reply taken as "
            message += "this request's answer!)"
        self.emit(Reply, message, local=self.local, peer=peer, size=len(data), text=text,
                  expected=expected, stale=stale)

    def _on_readable(self) -> None:
        # An ICMP port unreachable comes back as an error on a connected socket.
        self.read_ready(self._queue_reply, error_peer=self.server)

    def _queue_reply(self, data: bytes, address: tuple) -> None:
        self._replies.append((data, address))
        self._arrived.set()
