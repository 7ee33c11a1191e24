"""The server of listings 2-1 and 2-2: bind, read requests, maybe pretend to drop, reply.

It can also be paused (the book's Ctrl+Z: it stops reading and datagrams queue in the
kernel), answer late or twice (the duplicate-reply trap), and count stream datagrams.
"""

import asyncio
import os
import random
import socket
import time

from webapp.engine import requestid, stream
from webapp.engine.errors import Conflict
from webapp.engine.fastpath import (
    MODE_ECHO, MODE_LENGTH, MODE_NONE, REC_ERROR, REC_SLOW, FastPath, Record,
)
from webapp.engine.events import (
    Dropped, Error, Listening, Paused, Queued, Received, Resumed, Sent, StreamReport,
    format_address,
)
from webapp.engine.payload import length_reply, show
from webapp.engine.ratelimit import TokenBucket
from webapp.engine.specs import ServerSpec
from webapp.engine.udp import (
    describe_os_error, dual_stack_note, kernel_queue, mapped_note, open_bound, short,
    waiting_datagrams,
)
from webapp.engine.workers.base import SAMPLE_WINDOW, Worker

POLL_PAUSED = 0.25  # seconds between looks at the kernel queue while paused
REPORT_STREAMS = 0.5  # seconds between stream reports while streams arrive
MAX_STREAMS = 64  # streams tracked at once; more are counted as plain datagrams


class Responder:
    """What the server does with a request: drop it (the book's coin toss) or answer it.

    Plain logic with no I/O; a fixed `seed` gives the same drops on every run. A request
    that carries a request ID gets it back at the start of the reply, whatever the mode.
    """

    def __init__(self, reply: str, drop_rate: float, seed: int | None):
        self.reply = reply
        self.drop_rate = drop_rate
        self.random = random.Random(seed)
        self._lengths: dict[int, bytes] = {}  # the book's reply by request size, made once

    def drops(self) -> bool:
        """Whether to pretend the next request was lost."""
        return self.drop_rate > 0 and self.random.random() < self.drop_rate

    def answer(self, data: bytes, size: int | None = None) -> bytes | None:
        """The reply to `data`, or None when the server is set not to reply. `size`: the
        request's whole size when `data` is only its first bytes (the length reply needs it)."""
        if self.reply == "length":
            size = len(data) if size is None else size
            body = self._lengths.get(size)
            if body is None:
                if len(self._lengths) > 1024:
                    self._lengths.clear()
                body = self._lengths[size] = length_reply(size).encode("ascii")
        elif self.reply == "echo":
            return data  # an echo repeats the request ID with everything else
        else:
            return None
        if data[:4] != requestid.MARK:
            return body
        request_id, _ = requestid.split(data)
        return requestid.tag(request_id, body) if request_id else body


class ServerWorker(Worker):
    """A UDP server worker."""

    kind = "server"
    counter_names = ("received", "dropped", "replied", "bytes_in", "bytes_out", "waiting",
                     "kernel_drops", "held_back", "errors")
    spec: ServerSpec

    def open(self) -> None:
        spec = self.spec
        self.sock = open_bound(self.target, reuse_addr=spec.reuse_addr,
                               v6only=spec.v6only)
        if spec.rcvbuf:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, spec.rcvbuf)
        self.local = short(self.sock.getsockname())
        self.responder = Responder(spec.reply, spec.drop_rate, spec.seed)
        self.streams: dict[tuple, stream.StreamStats] = {}
        self._fresh_streams: set[tuple] = set()
        self._timers: set[asyncio.TimerHandle] = set()
        self._poller: asyncio.TimerHandle | None = None
        self._reporter: asyncio.TimerHandle | None = None
        self._local_peers: dict[str, bool] = {}
        self._per_source: dict[str, TokenBucket] = {}
        self._failure: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.emit(Listening, f"Listening at {format_address(self.local)}"
                  f"{self.target.family_note()}{dual_stack_note(self.target, spec.v6only)}",
                  local=self.local, family=self.target.family_name)

    async def run(self) -> str:
        if self.state == "running":  # it may have been paused before its task first ran
            self.read_in_c()
        self.watch_kernel_drops()
        await self._failure  # only a crash in a callback ends a server; stop() cancels
        return "failed"

    # --- pause and resume (the book's Ctrl+Z) -----------------------------------------

    def pause(self) -> None:
        """Stop reading: requests queue in the kernel until `resume()`."""
        if self.state != "running":
            raise Conflict(f"Server {self.id} is {self.state}: only a running server can pause")
        self.stop_reading()  # not reading yet is fine
        self.state = "paused"
        self.emit(Paused, f"Paused: {self.id} stops reading, so datagrams wait in the kernel's "
                  "queue (the book's Ctrl+Z)")
        self._poll()

    def resume(self) -> None:
        """Read again, starting with everything that waited."""
        if self.state != "paused":
            raise Conflict(f"Server {self.id} is {self.state}: only a paused server can resume")
        if self._poller:
            self._poller.cancel()
        waiting, _ = waiting_datagrams(self.sock)
        self._counters["waiting"] = 0
        self.state = "running"
        self.emit(Resumed, f"Resumed: reading the {waiting} datagram(s) that waited; their "
                  "clients may have given up long ago", waiting=waiting)
        self.read_in_c()

    def _poll(self) -> None:
        waiting, queued_bytes = waiting_datagrams(self.sock)
        self._update_kernel_drops()
        if waiting != self._counters["waiting"]:
            self._counters["waiting"] = waiting
            self.emit(Queued, f"{waiting} datagram(s) wait unread in the kernel's queue "
                      f"({queued_bytes} bytes of kernel memory)",
                      waiting=waiting, queued_bytes=queued_bytes)
        self._poller = asyncio.get_running_loop().call_later(POLL_PAUSED, self._poll)

    def _update_kernel_drops(self) -> int | None:
        queue = kernel_queue(self.sock) if self.sock else None
        if queue is None:
            return None
        self._counters["kernel_drops"] = queue[1]
        return queue[1]

    # --- reading (the C loop reads, counts and answers; see fastpath.py) ---------------

    def make_fast(self) -> FastPath:
        spec = self.spec
        mode = {"length": MODE_LENGTH, "echo": MODE_ECHO}.get(spec.reply, MODE_NONE)
        fast = FastPath(self.sock, mode, copies=2 if spec.duplicate else 1,
                        budget=self.per_window, window=SAMPLE_WINDOW,
                        drops=self.responder.drops if self.responder.drop_rate > 0 else None)
        fast.set_slow_all(bool(spec.delay))  # late answers are timers on the loop
        return fast

    def crashed(self, exc: Exception) -> None:
        if not self._failure.done():
            self._failure.set_exception(exc)

    def on_record(self, record: Record) -> None:
        peer = short(record.address) if record.address else None
        if record.kind == REC_ERROR:
            exc = OSError(record.errno, os.strerror(record.errno))
            self.emit(Error, describe_os_error(exc, peer), error=str(exc), errno=record.errno)
        elif record.kind == REC_SLOW:
            self._handle(record.data, record.address, record.shown, record.dropped)
        elif record.dropped:
            self.emit(Dropped, f"Pretending to drop packet from {format_address(peer)}",
                      local=self.local, peer=peer, size=record.size,
                      text=show(record.data, size=record.size))
        else:  # shown, answered by the C loop
            text = show(record.data, size=record.size)
            self.emit(Received, f"The client at {format_address(peer)} says {text!r}"
                      f"{mapped_note(peer[0])}",
                      local=self.local, peer=peer, size=record.size, text=text)
            if record.copies:
                said = text if self.spec.reply == "echo" else show(
                    self.responder.answer(record.data, record.size))
                for _ in range(record.copies):
                    self.emit(Sent, f"Replied {said!r} to {format_address(peer)}",
                              local=self.local, peer=peer, size=record.reply, text=said)

    def _handle(self, data: bytes, address: tuple, shown: bool, dropped: bool) -> None:
        """A datagram the C loop left to Python (counted and heard there already): a stream's,
        a peer not known to be local (the policy decides), or any when answering late."""
        counters = self._counters
        peer = short(address)
        size = len(data)
        if data[:8] == stream.MAGIC:
            if self._count_stream(data, peer):
                return
            shown, dropped = self.shows(), self.responder.drops()  # not a stream after all
        if dropped:
            counters["dropped"] += 1
            if shown:
                self.emit(Dropped, f"Pretending to drop packet from {format_address(peer)}",
                          local=self.local, peer=peer, size=size, text=show(data))
            return
        if shown:
            text = show(data)
            self.emit(Received, f"The client at {format_address(peer)} says {text!r}"
                      f"{mapped_note(peer[0])}",
                      local=self.local, peer=peer, size=size, text=text)
        reply = self.responder.answer(data)
        if reply is not None and self._may_reply(reply, size, peer):
            self._schedule_replies(reply, address, peer, shown)

    # --- replying ---------------------------------------------------------------------

    def _may_reply(self, reply: bytes, size: int, peer: tuple) -> bool:
        """Towards a real network: no reply bigger than the request, and a rate per source.
        Loopback and the virtual LAN get every answer at full speed."""
        local = self._local_peers.get(peer[0])
        if local is None:
            if len(self._local_peers) > 4096:
                self._local_peers.clear()
            local = self._local_peers[peer[0]] = self.policy.is_local(
                peer[0], in_lab=bool(self.spec.where))
        if local:
            if self.fast is not None and not self.spec.delay:
                self.fast.allow(peer[0])  # the C loop answers it from now on
            return True
        reason = None
        if len(reply) > size and not self.policy.amplification:
            reason = (f"the reply ({len(reply)} bytes) is bigger than the request ({size} "
                      "bytes), and servers do not amplify towards real networks")
        else:
            bucket = self._per_source.get(peer[0])
            if bucket is None:
                if len(self._per_source) > 4096:
                    self._per_source.clear()
                rate = self.policy.replies_per_source
                bucket = self._per_source[peer[0]] = TokenBucket(rate, rate)
            now = asyncio.get_running_loop().time()
            if bucket.wait(1, now) > 0:
                reason = (f"{peer[0]} already got {self.policy.replies_per_source:g} replies "
                          "this second, the cap per source on a real network")
            else:
                bucket.take(1, now)
        if reason is None:
            return True
        self._counters["held_back"] += 1
        if self._counters["held_back"] == 1 or self._counters["held_back"] % 1000 == 0:
            self.emit(Error, f"Not replying to {format_address(peer)}: {reason} "
                      f"({self._counters['held_back']} held back so far)", error=reason)
        return False

    def _schedule_replies(self, reply: bytes, address: tuple, peer: tuple,
                          shown: bool) -> None:
        copies = 2 if self.spec.duplicate else 1
        delay = self.spec.delay
        if not delay:
            self._reply(reply, address, peer, shown=shown)
            if copies == 2:
                self._reply(reply, address, peer, shown=shown)
            return
        loop = asyncio.get_running_loop()
        for copy in range(copies):
            handle = loop.call_later(delay * (copy + 1), self._reply_later, reply, address, peer,
                                     shown)
            self._timers.add(handle)

    def _reply_later(self, reply: bytes, address: tuple, peer: tuple, shown: bool) -> None:
        now = asyncio.get_running_loop().time()
        self._timers = {t for t in self._timers if t.when() > now}  # forget the fired ones
        if self.sock is not None:
            self._reply(reply, address, peer, late=True, shown=shown)

    def _reply(self, reply: bytes, address: tuple, peer: tuple, late: bool = False,
               shown: bool = True) -> None:
        try:
            # MSG_DONTWAIT: the socket blocks while the C loop reads it; a full send buffer
            # is an error here, as it always was
            self.sock.sendto(reply, socket.MSG_DONTWAIT, address)
        except OSError as exc:
            self._counters["errors"] += 1
            self.emit(Error, describe_os_error(exc, peer), error=str(exc), errno=exc.errno)
            return
        self._counters["replied"] += 1
        self._counters["bytes_out"] += len(reply)
        if not shown:
            return
        text = show(reply)
        when = f" {self.spec.delay:g} s late" if late else ""
        self.emit(Sent, f"Replied {text!r} to {format_address(peer)}{when}",
                  local=self.local, peer=peer, size=len(reply), text=text)

    # --- streams ----------------------------------------------------------------------

    def _count_stream(self, data: bytes, peer: tuple) -> bool:
        header = stream.unpack(data)
        if header is None:
            return False
        stream_id, seq, sent = header
        key = (peer, stream_id)
        stats = self.streams.get(key)
        if stats is None:
            if len(self.streams) >= MAX_STREAMS:
                return False
            stats = self.streams[key] = stream.StreamStats()
        stats.receive(seq, sent, len(data), time.time())
        self._fresh_streams.add(key)
        if self._reporter is None:
            self._reporter = asyncio.get_running_loop().call_later(
                REPORT_STREAMS, self._report_streams)
        return True

    def _report_streams(self) -> None:
        self._reporter = None
        drops = self._update_kernel_drops()
        for key in sorted(self._fresh_streams, key=repr):
            peer, stream_id = key
            figures = self.streams[key].to_dict()
            self.emit(
                StreamReport,
                f"Stream {stream_id} from {format_address(peer)}: {figures['received']} "
                f"received, {figures['lost']} lost ({figures['loss_rate']:.1%}), "
                f"{figures['duplicates']} duplicated, {figures['reordered']} reordered, "
                f"jitter {figures['jitter_ms']:.3f} ms"
                + (f"; the kernel dropped {drops} datagram(s) at this socket" if drops else ""),
                peer=peer, stream=stream_id, stats=figures, kernel_drops=drops,
            )
        self._fresh_streams.clear()

    def close(self) -> None:
        self.stop_reading()  # the C loop's last records first: streams among them
        for handle in (*getattr(self, "_timers", ()), getattr(self, "_poller", None),
                       getattr(self, "_reporter", None)):
            if handle is not None:
                handle.cancel()
        if getattr(self, "_fresh_streams", None) and self.sock is not None:
            self._report_streams()  # the last figures before the socket goes
        super().close()

    def to_dict(self) -> dict:
        out = super().to_dict()
        out["streams"] = [
            {"peer": list(peer), "stream": stream_id, **stats.to_dict()}
            for (peer, stream_id), stats in self.streams.items()
        ]
        return out
