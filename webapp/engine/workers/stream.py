"""A stream sender like iperf's UDP mode: `count` datagrams of `size` bytes at `rate` per
second, each carrying a sequence number and its send time, for the receiver to count loss,
duplicates, reordering and jitter."""

import asyncio
import random
import time

from webapp.engine import stream
from webapp.engine.events import Error, Progress, format_address
from webapp.engine.specs import StreamSpec
from webapp.engine.udp import describe_os_error, open_client, short
from webapp.engine.workers.base import Worker

REPORT_EVERY = 0.5  # seconds between progress events
MAX_BURST = 64  # datagrams per wake-up at most: a receiver in this loop reads in between


class StreamWorker(Worker):
    """Sends a paced stream of numbered datagrams."""

    kind = "stream"
    counter_names = ("sent", "bytes_out", "blocked", "errors")
    spec: StreamSpec

    def open(self) -> None:
        self.sock = open_client(self.target, connect=True)
        self.local = short(self.sock.getsockname())
        self.stream_id = random.getrandbits(32)
        self.server = short(self.target.address)

    async def run(self) -> str:
        spec, counters, sock = self.spec, self.counters, self.sock
        loop = asyncio.get_running_loop()
        padding = b"\0" * max(0, spec.size - stream.HEADER_SIZE)
        start = loop.time()
        next_report = start + REPORT_EVERY
        seq = 0  # the next sequence number; a datagram the kernel refused keeps its number
        while seq < spec.count:
            due = min(spec.count, seq + MAX_BURST, int((loop.time() - start) * spec.rate) + 1)
            if self.throttle is not None:  # towards a real network: one at a time, capped
                due = seq + 1
                await self.pace(spec.size)
            while seq < due:
                header = stream.HEADER.pack(stream.MAGIC, self.stream_id, seq, time.time())
                try:
                    sock.send(header + padding)
                except BlockingIOError:
                    counters["blocked"] += 1  # the send buffer is full: try again shortly
                    break
                except OSError as exc:  # e.g. Connection refused: that datagram is lost
                    counters["errors"] += 1
                    self.emit(Error, describe_os_error(exc, self.server), error=str(exc),
                              errno=exc.errno)
                else:
                    counters["sent"] += 1
                    counters["bytes_out"] += spec.size
                seq += 1
            now = loop.time()
            if now >= next_report:
                next_report = now + REPORT_EVERY
                self._progress(counters["sent"], now - start)
            ahead = seq / spec.rate - (now - start)
            await asyncio.sleep(min(0.5, ahead) if ahead > 0 else 0)  # behind: just yield
        self._progress(counters["sent"], loop.time() - start, final=True)
        return "finished"

    def _progress(self, sent: int, elapsed: float, final: bool = False) -> None:
        rate = sent / elapsed if elapsed > 0 else 0.0
        verb = "Sent" if final else "Sending:"
        self.emit(Progress, f"{verb} {sent} of {self.spec.count} datagrams of "
                  f"{self.spec.size} bytes to {format_address(self.server)} "
                  f"in {elapsed:.2f} s ({rate:,.0f}/s), stream {self.stream_id}",
                  sent=sent, count=self.spec.count)
