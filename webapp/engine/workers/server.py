"""The server of listings 2-1 and 2-2: bind, read requests, maybe pretend to drop, reply."""

import asyncio
import random

from webapp.engine.events import Dropped, Error, Listening, Received, Sent, format_address
from webapp.engine.payload import length_reply, show
from webapp.engine.specs import ServerSpec
from webapp.engine.udp import MAX_BYTES, describe_os_error, open_bound, short
from webapp.engine.workers.base import Worker

READS_PER_WAKEUP = 64  # datagrams handled per readable callback before yielding to the loop


class Responder:
    """What the server does with a request: drop it (the book's coin toss) or answer it.

    Plain logic with no I/O; a fixed `seed` gives the same drops on every run.
    """

    def __init__(self, reply: str, drop_rate: float, seed: int | None):
        self.reply = reply
        self.drop_rate = drop_rate
        self.random = random.Random(seed)

    def drops(self) -> bool:
        """Whether to pretend the next request was lost."""
        return self.drop_rate > 0 and self.random.random() < self.drop_rate

    def answer(self, data: bytes) -> bytes | None:
        """The reply to `data`, or None when the server is set not to reply."""
        if self.reply == "length":
            return length_reply(len(data)).encode("ascii")
        if self.reply == "echo":
            return data
        return None


class ServerWorker(Worker):
    """A UDP server worker."""

    kind = "server"
    counter_names = ("received", "dropped", "replied", "bytes_in", "bytes_out", "errors")
    spec: ServerSpec

    def open(self) -> None:
        self.sock = open_bound(self.target)
        self.local = short(self.sock.getsockname())
        spec = self.spec
        self.responder = Responder(spec.reply, spec.drop_rate, spec.seed)

    async def run(self) -> str:
        loop = asyncio.get_running_loop()
        self._failure: asyncio.Future[None] = loop.create_future()
        self.emit(Listening, f"Listening at {format_address(self.local)}", local=self.local)
        loop.add_reader(self.sock.fileno(), self._on_readable)
        await self._failure  # only a crash in the callback ends a server; stop() cancels
        return "failed"

    def _on_readable(self) -> None:
        try:
            self._drain()
        except Exception as exc:  # a bug must fail this worker, not the loop's callback
            if not self._failure.done():
                self._failure.set_exception(exc)

    def _drain(self) -> None:
        sock, counters, local = self.sock, self.counters, self.local
        for _ in range(READS_PER_WAKEUP):
            try:
                data, address = sock.recvfrom(MAX_BYTES)
            except BlockingIOError:
                return
            except OSError as exc:
                counters["errors"] += 1
                self.emit(Error, describe_os_error(exc, None), error=str(exc), errno=exc.errno)
                continue
            peer = short(address)
            size = len(data)
            counters["received"] += 1
            counters["bytes_in"] += size
            where = format_address(peer)
            if self.responder.drops():
                counters["dropped"] += 1
                self.emit(Dropped, f"Pretending to drop packet from {where}",
                          local=local, peer=peer, size=size, text=show(data))
                continue
            text = show(data)
            self.emit(Received, f"The client at {where} says {text!r}",
                      local=local, peer=peer, size=size, text=text)
            reply = self.responder.answer(data)
            if reply is not None:
                self._reply(reply, address, peer)

    def _reply(self, reply: bytes, address: tuple, peer: tuple) -> None:
        try:
            self.sock.sendto(reply, address)
        except OSError as exc:
            self.counters["errors"] += 1
            self.emit(Error, describe_os_error(exc, peer), error=str(exc), errno=exc.errno)
            return
        self.counters["replied"] += 1
        self.counters["bytes_out"] += len(reply)
        text = show(reply)
        self.emit(Sent, f"Replied {text!r} to {format_address(peer)}",
                  local=self.local, peer=peer, size=len(reply), text=text)
