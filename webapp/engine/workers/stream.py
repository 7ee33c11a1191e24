"""A stream sender like iperf's UDP mode: `count` datagrams of `size` bytes at `rate` per
second, each carrying a sequence number and its send time, for the receiver to count loss,
duplicates, reordering and jitter.

The sending runs on an OS thread of its own, not on the event loop: the loop's per-datagram
work (a wake-up, a coroutine step, a `sock.send()` with its exception handling) cost more than
the kernel's, and a fast stream then shared one core with the page and everyone else's
sockets. The thread fills the datagrams' headers in a preallocated buffer and hands up to
MAX_BURST of them to the kernel in one `sendmmsg(2)` (webapp/engine/mmsg.py); ctypes releases
the GIL for the call, so the loop runs meanwhile. It keeps the counters itself (only it writes
them while it runs) and hands events to the loop in batches: one `call_soon_threadsafe` per
report, never one per datagram.
"""

import asyncio
import ctypes
import random
import select
import struct
import sys
import threading
import time
from array import array
from typing import Any

from webapp.engine import stream
from webapp.engine.events import Error, Progress, Throttled, format_address
from webapp.engine.mmsg import SendBatch
from webapp.engine.specs import StreamSpec
from webapp.engine.udp import describe_os_error, open_client, short
from webapp.engine.workers.base import Worker

REPORT_EVERY = 0.5  # seconds between progress events
MAX_BURST = 64  # datagrams per wake-up at most: a receiver on this machine reads in between
CATCH_UP = 2  # a sender that woke late makes up at most at twice its rate: bursts spaced so
# that no millisecond carries more than 2 × rate × 1 ms + MAX_BURST, never the whole debt at
# once (a receiver's default buffer holds ~166 datagrams of 200 bytes)
WRITABLE_WAIT = 0.02  # seconds: the longest wait for room in a full send buffer before the
# thread looks whether it was asked to stop (and how a stop stays prompt on a slow link)
# The stream header (stream.HEADER: magic, stream id, sequence number, send time) in two parts:
# the first is the same in every datagram of a stream (sent from one copy, as the zero padding
# is); the second changes, and a batch's lie in one buffer, 16 bytes each, written with two
# array copies per batch rather than a struct call per datagram (that was a sixth of the
# thread's time). test_engine_streams checks the two make HEADER.
FIXED = struct.Struct("!8sI")
NUMBERED = struct.Struct("!Qd")
SWAP = sys.byteorder == "little"  # the header is in network byte order (big-endian)
PR_SET_NAME = 15  # linux/prctl.h: name the calling thread (15 bytes at most)
_libc = ctypes.CDLL(None, use_errno=True)


def name_this_thread(name: str) -> None:
    """Give the calling OS thread a name `top -H`, `ps -L` and `taskset` users can see (the
    kernel keeps the first 15 bytes); Python's own thread names stay inside Python."""
    _libc.prctl(PR_SET_NAME, ctypes.c_char_p(name.encode()[:15]), 0, 0, 0)


class StreamWorker(Worker):
    """Sends a paced stream of numbered datagrams, from a thread of its own."""

    kind = "stream"
    counter_names = ("sent", "bytes_out", "blocked", "errors")
    spec: StreamSpec
    thread: threading.Thread | None = None

    def open(self) -> None:
        self.sock = open_client(self.target, connect=True)
        self.local = short(self.sock.getsockname())
        self.stream_id = random.getrandbits(32)
        self.server = short(self.target.address)

    async def run(self) -> str:
        loop = asyncio.get_running_loop()
        ended = loop.create_future()  # set by the thread's last hand-off: "finished" or why not
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._send_all, args=(loop, ended),
                                       name=f"udp:{self.id}", daemon=True)
        self.thread.start()
        try:
            return await asyncio.shield(ended)
        finally:
            # Stopped (cancelled) or done: the thread checks `_stop` at every burst and
            # every wait, so its last hand-off comes within one burst or WRITABLE_WAIT.
            self._stop.set()
            try:
                await ended
            except BaseException:  # noqa: BLE001 (its failure was raised above already)
                pass
            finally:
                # Never let the thread outlive the worker: the supervisor closes the socket
                # next, and a thread still sending would then use a closed (or reused) fd.
                # Returns at once (it has handed off); it matters when the task is
                # cancelled a second time while awaiting `ended`.
                self.thread.join()

    # --- on the sending thread ------------------------------------------------------------

    def _send_all(self, loop: asyncio.AbstractEventLoop, ended: asyncio.Future) -> None:
        name_this_thread(f"udp:{self.id}")
        state: Any = "stopped"
        self._errors: list[OSError] = []  # since the last hand-off
        try:
            state = self._send(loop)
        except BaseException as exc:  # noqa: BLE001 (a bug: the worker fails and says so)
            state = exc
        finally:
            self._hand_off(loop, None, ended, state)

    def _send(self, loop: asyncio.AbstractEventLoop) -> str:
        spec, counters, stop = self.spec, self.counters, self._stop
        fd = self.sock.fileno()
        size, count, rate = spec.size, spec.count, spec.rate
        # Towards a real network one datagram at a time, each let through by the caps.
        burst = MAX_BURST if self.throttle is None else 1
        batch = SendBatch(burst, NUMBERED.size, bytes(size - stream.HEADER_SIZE),
                          prefix=FIXED.pack(stream.MAGIC, self.stream_id))
        fields = memoryview(batch.heads).cast("Q")  # per datagram: its number, its send time
        pack_time = struct.Struct("!d").pack
        writable = select.poll()
        writable.register(fd, select.POLLOUT)
        start = time.monotonic()
        next_report = start + REPORT_EVERY
        seq = 0  # the next sequence number; a datagram the kernel refused keeps its number
        spaced_until = start  # the next burst not before (CATCH_UP)
        while seq < count and not stop.is_set():
            began = time.monotonic()
            due = min(count, seq + burst, int((began - start) * rate) + 1) - seq
            if due > 0 and (self.throttle is None or self._caps_allow(loop, size)):
                # Each datagram gets its own number, and the time its batch is handed to the
                # kernel (they leave in one system call, a few microseconds apart).
                numbers = array("Q", range(seq, seq + due))
                if SWAP:
                    numbers.byteswap()
                fields[0:2 * due:2] = numbers
                fields[1:2 * due:2] = array("Q", pack_time(time.time())) * due
                first = 0
                while first < due:
                    try:
                        went = batch.send(fd, first, due)
                    except BlockingIOError:
                        # The send buffer is full: the rest keeps its numbers and goes next
                        # time, with fresh send times, once there is room (or stop).
                        counters["blocked"] += 1
                        writable.poll(WRITABLE_WAIT * 1000)  # the GIL is released meanwhile
                        break
                    except OSError as exc:  # e.g. Connection refused: that datagram is lost
                        counters["errors"] += 1
                        exc.__traceback__ = None  # kept until the hand-off: no frames with it
                        self._errors.append(exc)
                        went = 1
                    else:  # fewer than asked: the kernel stopped part way; the rest again
                        counters["sent"] += went
                        counters["bytes_out"] += went * size
                    first += went
                    seq += went
                spaced_until = began + first / (CATCH_UP * rate)
            now = time.monotonic()
            if now >= next_report:
                next_report = now + REPORT_EVERY
                self._hand_off(loop, (counters["sent"], now - start))
            # On time, the schedule waits longer than the spacing; late, the spacing does.
            ahead = max(seq / rate - (now - start), spaced_until - now)
            if ahead > 0:
                stop.wait(min(REPORT_EVERY, ahead))  # returns at once on stop
        if seq < count:
            return "stopped"
        self._final = (counters["sent"], time.monotonic() - start)
        return "finished"

    def _caps_allow(self, loop: asyncio.AbstractEventLoop, size: int) -> bool:
        """Wait as the send caps require (as `Worker.pace` does on the loop; the Throttle is
        thread-safe, and time.monotonic() is the clock of `loop.time()`, asyncio's and
        uvloop's, which the workers on the loop pass it); False when asked to stop meanwhile."""
        while (wait := self.throttle.delay(size, time.monotonic())) > 0:
            if not self.throttled:
                self.throttled = True
                self._call(loop, self._say_throttled)  # once per worker
            if self._stop.wait(wait):
                return False
        return True

    def _hand_off(self, loop: asyncio.AbstractEventLoop, progress: tuple[int, float] | None,
                  ended: asyncio.Future | None = None, state: Any = None) -> None:
        """Give the loop what happened since the last hand-off, in one call."""
        errors, self._errors = self._errors, []
        if state == "finished":
            progress = self._final
        self._call(loop, self._report, errors, progress, ended, state)

    @staticmethod
    def _call(loop: asyncio.AbstractEventLoop, fn, *args) -> None:
        try:
            loop.call_soon_threadsafe(fn, *args)
        except RuntimeError:
            pass  # the loop is closed: the app is gone, and nobody is left to tell

    # --- on the event loop ----------------------------------------------------------------

    def _report(self, errors: list[OSError], progress: tuple[int, float] | None,
                ended: asyncio.Future | None, state: Any) -> None:
        for exc in errors:
            self.emit(Error, describe_os_error(exc, self.server), error=str(exc),
                      errno=exc.errno)
        if progress is not None:
            self._progress(*progress, final=state == "finished")
        if ended is not None and not ended.done():
            if isinstance(state, BaseException):
                ended.set_exception(state)
            else:
                ended.set_result(state)

    def _say_throttled(self) -> None:
        self.emit(Throttled, f"Throttled to the send caps towards a real network: "
                  f"{self.policy.describe_caps()}", caps=self.policy.describe_caps())

    def _progress(self, sent: int, elapsed: float, final: bool = False) -> None:
        rate = sent / elapsed if elapsed > 0 else 0.0
        verb = "Sent" if final else "Sending:"
        self.emit(Progress, f"{verb} {sent} of {self.spec.count} datagrams of "
                  f"{self.spec.size} bytes to {format_address(self.server)} "
                  f"in {elapsed:.2f} s ({rate:,.0f}/s), stream {self.stream_id}",
                  sent=sent, count=self.spec.count)
