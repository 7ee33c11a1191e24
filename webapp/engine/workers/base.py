"""What every worker has: an id, a spec, a socket, a state, counters and its own events."""

import asyncio
import socket
import time
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any, ClassVar

from webapp.engine.bus import EventBus
from webapp.engine.fastpath import FastPath, Record
from webapp.engine.events import Address, Error, Event, Sampled, Throttled
from webapp.engine.policy import Policy
from webapp.engine.ratelimit import Throttle
from webapp.engine.specs import Spec
from webapp.engine.udp import MAX_BYTES, Target, describe_os_error, kernel_queue

# Life of a worker: starting -> running (<-> paused, servers) -> stopped (asked to) |
# finished (done its work) | failed.
ENDED = frozenset({"stopped", "finished", "failed"})
READS_PER_WAKEUP = 64  # datagrams read per readable callback before yielding to the loop
PROBE_EVERY = 8  # wake-ups between looks for a backlog while datagrams come one at a time
SAMPLE_WINDOW = 0.1  # seconds: the budget of datagrams shown is spread over windows this long
REPORT_UNSHOWN = 1.0  # seconds between `sampled` events while a worker is over its budget
SYNC_EVERY = 0.5  # seconds between looks at a C loop's counters when nothing else woke us


class Worker:
    """Base of the worker kinds: subclasses open their socket in `open()` and work in `run()`."""

    kind: ClassVar[str]
    counter_names: ClassVar[tuple[str, ...]]
    source: Address | None = None  # an impostor's forged source; see SpooferWorker
    peers: Callable[[], Iterable["Worker"]] = staticmethod(lambda: ())  # set by the supervisor
    policy: Policy = Policy()  # the app's, set by the supervisor
    throttle: Throttle | None = None  # set when the worker sends to a real network
    throttled = False  # whether the caps have held this worker back yet
    # How the socket is read (`read_ready()`) and which datagrams get events (`shows()`);
    # class defaults, so an idle worker carries none of it.
    _wakeups = 0  # readable callbacks so far (see `read_ready()`)
    _batch = False  # whether datagrams were piling up at the last look
    _window_ends = 0.0
    _window_left = 0
    _unshown = 0
    _unshown_since = 0.0
    _unshown_timer: asyncio.TimerHandle | None = None
    # The C receive loop (servers and listeners: `read_in_c()`), made on the first datagram.
    fast: FastPath | None = None
    _awaiting_first = False
    _draining = False
    _sync_timer: asyncio.TimerHandle | None = None

    def __init__(self, worker_id: str, spec: Spec, target: Target, bus: EventBus, *,
                 history: int = 1000):
        self.id = worker_id
        self.spec = spec
        self.target = target
        self.bus = bus
        self.state = "starting"
        self.sock: socket.socket | None = None
        self.local: Address | None = None
        self._counters = dict.fromkeys(self.counter_names, 0)
        self._history: deque[Event] = deque(maxlen=history)
        self.started = time.time()
        self.ended: float | None = None
        self.task: asyncio.Task | None = None

    @property
    def counters(self) -> dict[str, int]:
        """The worker's counters, exact when read: what its C loop counted is added first, and
        what it handed over is taken (so every datagram counted has had its events)."""
        if self.fast is not None:
            self.drain()
        return self._counters

    @property
    def history(self) -> deque[Event]:
        """The worker's newest events, oldest first; like `counters`, what its C loop handed
        over is taken first (a reply a client already has has its events here)."""
        if self.fast is not None:
            self.drain()
        return self._history

    def heard_from(self, port: int, data: bytes, since: float) -> bool:
        """Whether this worker received `data` from source port `port` at or after `since`
        (by port: a sender bound to 0.0.0.0 is seen with whichever address it went out on).
        Servers and listeners remember what they received lately, in their C loop; other
        kinds never hear a broadcast."""
        return self.fast is not None and self.fast.heard(port, data, since)

    def open(self) -> None:
        """Create and bind (or connect) the socket; raise `EngineError` if it cannot be."""
        raise NotImplementedError

    async def run(self) -> str:
        """Do the work until done or cancelled; return the final state (`finished`)."""
        raise NotImplementedError

    def emit(self, cls: type[Event], message: str, **fields: Any) -> Event:
        """Record an event in this worker's history and publish it, without awaiting."""
        event = cls(seq=self.bus.next_seq(), time=time.time(), worker=self.id,
                    message=message, **fields)
        self._history.append(event)
        self.bus.publish(event)
        return event

    def shows(self) -> bool:
        """Whether the datagram in hand gets its own events (rows on the page, lines in the
        history). Up to `policy.events_per_second` datagrams a second do; above that a busy
        worker only counts them (its counters stay exact) and says once a second, in a
        `sampled` event, how many it did not show, so a flood costs neither the UDP path
        nor the page. A budget of 0 shows every datagram."""
        budget = self.policy.events_per_second
        if not budget:
            return True
        now = time.monotonic()
        if now >= self._window_ends:
            self._window_ends = now + SAMPLE_WINDOW
            self._window_left = max(1, round(budget * SAMPLE_WINDOW))
        if self._window_left > 0:
            self._window_left -= 1
            return True
        self.count_unshown(1)
        return False

    @property
    def per_window(self) -> int:
        """Datagrams shown one by one per SAMPLE_WINDOW (0: all), the C loop's budget."""
        budget = self.policy.events_per_second
        return max(1, round(budget * SAMPLE_WINDOW)) if budget else 0

    def count_unshown(self, count: int) -> None:
        """Count datagrams not shown; the first starts the clock of the next `sampled`."""
        if not self._unshown:
            self._unshown_since = time.monotonic()
            self._unshown_timer = asyncio.get_running_loop().call_later(
                REPORT_UNSHOWN, self.report_unshown)
        self._unshown += count

    def report_unshown(self) -> None:
        """Publish the `sampled` event for the datagrams counted but not shown so far."""
        self.drain()
        if self._unshown_timer is not None:
            self._unshown_timer.cancel()
            self._unshown_timer = None
        unshown, self._unshown = self._unshown, 0
        if not unshown:
            return
        seconds = time.monotonic() - self._unshown_since
        budget = self.policy.events_per_second
        self.emit(Sampled, f"Busy: {unshown:,} more datagram(s) in the last {seconds:.1f} s "
                  f"were counted but not shown one by one (at most {budget:,} a second are); "
                  "the counters include them all",
                  unshown=unshown, seconds=round(seconds, 3), per_second=budget)

    def read_ready(self, handle: Callable[[bytes, tuple], None],
                   error_peer: Address | None = None) -> None:
        """Read what the socket holds, handing each datagram to `handle(data, address)`.
        Kernel errors (an ICMP port unreachable, say) are reported as events, not raised.

        A read that finds the queue empty costs as much as one that finds a datagram (the
        failed call and its exception), so a worker that gets one datagram per wake-up (a
        request and its reply, turn by turn) reads just one: the loop's readiness check is
        level-triggered and calls again if more wait. Every PROBE_EVERY-th wake-up it drains;
        when that finds datagrams piling up, it drains on every wake-up, at most
        READS_PER_WAKEUP a time (so the loop stays fair to everyone else), until the queue
        holds one or none again."""
        sock = self.sock
        self._wakeups += 1
        batch = self._batch or not self._wakeups % PROBE_EVERY
        read = 0
        for _ in range(READS_PER_WAKEUP if batch else 1):
            try:
                data, address = sock.recvfrom(MAX_BYTES)
            except BlockingIOError:
                break
            except OSError as exc:
                self.counters["errors"] += 1
                self.emit(Error, describe_os_error(exc, error_peer), error=str(exc),
                          errno=exc.errno)
                continue
            read += 1
            handle(data, address)
        if batch:
            self._batch = read > 1

    # --- the C receive loop (servers and listeners) -------------------------------------

    def make_fast(self) -> FastPath:
        """This worker's C loop (what it answers, whether it drops); see fastpath.py."""
        raise NotImplementedError

    def on_record(self, record: Record) -> None:
        """What the C loop handed over about one datagram: events, or Python's decision."""
        raise NotImplementedError

    def crashed(self, exc: Exception) -> None:
        """A bug in `on_record`: the worker fails (servers) or the loop logs it."""
        raise exc

    def read_in_c(self) -> None:
        """Have the C loop read the socket. An idle worker has no thread: the loop watches the
        socket until the first datagram, then starts the thread, which reads it."""
        loop = asyncio.get_running_loop()
        if self.fast is None:
            self._awaiting_first = True
            loop.add_reader(self.sock.fileno(), self._first_datagram)
        elif not self.fast.running:
            self._start_fast(loop)

    def _first_datagram(self) -> None:
        loop = asyncio.get_running_loop()
        loop.remove_reader(self.sock.fileno())
        self._awaiting_first = False
        try:
            self.fast = self.make_fast()
            self._start_fast(loop)
        except Exception as exc:  # noqa: BLE001 (no memory or thread: the worker says so)
            self.crashed(exc)

    def _start_fast(self, loop: asyncio.AbstractEventLoop) -> None:
        self.fast.start(f"udp:{self.id}")
        loop.add_reader(self.fast.notify, self.drain)
        self._sync_timer = loop.call_later(SYNC_EVERY, self._drain_now_and_then)

    def stop_reading(self) -> None:
        """Stop reading (pause, close): the thread ends, and what it handed over is taken."""
        if self._awaiting_first:
            self._awaiting_first = False
            try:
                asyncio.get_running_loop().remove_reader(self.sock.fileno())
            except (RuntimeError, ValueError):
                pass
        fast = self.fast
        if fast is None or not fast.running:
            return
        fast.stop()
        if self._sync_timer is not None:
            self._sync_timer.cancel()
            self._sync_timer = None
        try:
            asyncio.get_running_loop().remove_reader(fast.notify)
        except RuntimeError:
            pass  # no loop (closing at exit)
        self.drain()

    def drain(self) -> None:
        """Take what the C loop counted and handed over: the counters first, so that every
        datagram they count has its record among those taken next. Worker code called from
        here uses `_counters` (reading `counters` would drain again)."""
        fast = self.fast
        if fast is None or fast.closed or self._draining:
            return
        self._draining = True
        grown = fast.deltas()
        try:
            for record in fast.take():
                self.on_record(record)
            fast.feed()
        except Exception as exc:  # noqa: BLE001 (a bug must fail this worker, not the loop)
            self.crashed(exc)
        finally:
            self._draining = False
            counters = self._counters
            for name, count in grown.items():
                if count and name in counters:
                    counters[name] += count
        if grown["unshown"]:
            self.count_unshown(grown["unshown"])

    def _drain_now_and_then(self) -> None:
        self.drain()
        self._sync_timer = asyncio.get_running_loop().call_later(
            SYNC_EVERY, self._drain_now_and_then)

    async def pace(self, size: int) -> None:
        """Wait as long as the send caps require before sending `size` bytes (towards a real
        network only); the first time, say so in an event."""
        if self.throttle is None:
            return
        loop = asyncio.get_running_loop()
        while (wait := self.throttle.delay(size, loop.time())) > 0:
            if not self.throttled:
                self.throttled = True
                self.emit(Throttled, f"Throttled to the send caps towards a real network: "
                          f"{self.policy.describe_caps()}", caps=self.policy.describe_caps())
            await asyncio.sleep(wait)

    def watch_kernel_drops(self, every: float = 1.0) -> None:
        """Keep the `kernel_drops` counter up to date: datagrams the kernel dropped at this
        socket because its receive buffer was full (SO_MEMINFO; see `kernel_queue`)."""
        queue = kernel_queue(self.sock) if self.sock is not None else None
        if queue is not None:
            self._counters["kernel_drops"] = queue[1]
        if self.sock is not None:
            self._drops_timer = asyncio.get_running_loop().call_later(
                every, self.watch_kernel_drops, every)

    def close(self) -> None:
        """Stop reading and close the socket; safe to call twice."""
        timer = getattr(self, "_drops_timer", None)
        if timer is not None:
            timer.cancel()
        self.stop_reading()
        self.report_unshown()  # the last count before the worker ends
        if self.fast is not None:
            self.fast.close()
        if self.sock is not None:
            try:
                asyncio.get_running_loop().remove_reader(self.sock.fileno())
            except (RuntimeError, ValueError):
                pass  # no loop (closing at exit) or the socket is already closed
            self.sock.close()
            self.sock = None

    @property
    def alive(self) -> bool:
        """Whether the worker has not ended yet."""
        return self.state not in ENDED

    def to_dict(self) -> dict[str, Any]:
        """The worker as the JSON API shows it."""
        return {
            "id": self.id,
            "kind": self.kind,
            "state": self.state,
            "spec": self.spec.to_dict(),
            "local": list(self.local) if self.local else None,
            "target": list(self.target.address[:2]),
            "where": self.spec.where,
            "throttled": self.throttled,
            "counters": dict(self.counters),
            "started": self.started,
            "ended": self.ended,
        }
