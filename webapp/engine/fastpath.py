"""The C loop that reads, counts and answers for servers and listeners (fastpath.c), through
ctypes.

Why C: per datagram, the Python work around the system calls (counters, the sampling rule,
the drop decision, the reply, the bookkeeping for broadcasts) cost more than the calls, and it
shared one core with the web (issue 17's first round: the event loop itself is near the floor;
a Python thread per socket cannot leave the loop's core because of the GIL). The C thread
holds no GIL at all: it runs on its own core and hands the loop only what Python must see (the
shown datagrams, errors, and the datagrams Python decides about itself) in batches, woken
through an eventfd. The counters it keeps are exact; `FastPath.deltas()` gives what they grew
by, for the worker's own counters.

`make setup` builds `libfastpath.so.1` from fastpath.c with the machine's C compiler.
"""

import ctypes
import os
import socket
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

LIBRARY = Path(__file__).with_name("libfastpath.so.1")  # not `.so`: no Python module
MODE_LISTEN, MODE_LENGTH, MODE_ECHO, MODE_NONE = range(4)
REC_SHOWN, REC_SLOW, REC_ERROR = 1, 2, 3
F_DROPPED, F_SHOWN = 1, 2
DECISIONS = 8192  # as fastpath.c: drop decisions held ahead
RECORD = struct.Struct("=IBBHHHiIIIIq16s")  # fp_record: see fastpath.c
COUNTS = ("received", "bytes_in", "dropped", "replied", "bytes_out", "errors", "unshown",
          "slow")


class Counts(ctypes.Structure):
    """fp_counts: the thread's counters."""

    _fields_ = [(name, ctypes.c_uint64) for name in COUNTS]


def _load() -> ctypes.CDLL:
    try:
        lib = ctypes.CDLL(str(LIBRARY))  # CDLL: every call releases the GIL
    except OSError as exc:
        raise ImportError(
            f"{LIBRARY} is missing or cannot be loaded ({exc}): run `make setup`, which "
            "builds it from webapp/engine/fastpath.c with the C compiler (gcc)") from None
    p, i, u64, i64 = ctypes.c_void_p, ctypes.c_int, ctypes.c_uint64, ctypes.c_int64
    for name, args, result in (
            ("fp_new", [i, i, i, i, i64, i, i], p), ("fp_set_slow_all", [p, i], None),
            ("fp_start", [p, ctypes.c_char_p], i), ("fp_stop", [p], None), ("fp_free", [p], None),
            ("fp_counters", [p, ctypes.POINTER(Counts)], None), ("fp_reads", [p], u64),
            ("fp_naps", [p], u64),
            ("fp_take", [p, ctypes.POINTER(p)], ctypes.c_size_t), ("fp_wants", [p], i),
            ("fp_feed", [p, ctypes.c_char_p, i], None), ("fp_allow", [p, ctypes.c_char_p], None),
            ("fp_heard", [p, ctypes.c_uint16, u64, i64], i),
            ("fp_digest", [ctypes.c_char_p, ctypes.c_size_t], u64)):
        fn = getattr(lib, name)
        fn.argtypes, fn.restype = args, result
    return lib


_lib = _load()


def digest(data: bytes) -> int:
    """The digest the C loop keeps of each datagram it hears (for `FastPath.heard`)."""
    return _lib.fp_digest(data, len(data))


def packed_address(host: str) -> bytes:
    """16 bytes of an address as fastpath.c keeps peers (IPv4 as ::ffff:a.b.c.d)."""
    host = host.split("%")[0]
    try:
        return b"\0" * 10 + b"\xff\xff" + socket.inet_pton(socket.AF_INET, host)
    except OSError:
        return socket.inet_pton(socket.AF_INET6, host)


def _host(family: int, raw: bytes) -> str:
    """The peer's address as recvfrom() gives it (a scope is apart, in the address tuple)."""
    if family == socket.AF_INET:
        return socket.inet_ntop(socket.AF_INET, raw[12:])
    return socket.inet_ntop(socket.AF_INET6, raw)


@dataclass(slots=True)
class Record:
    """What the C loop handed over about one datagram (or one error)."""

    kind: int
    shown: bool
    dropped: bool
    address: tuple  # as recvfrom gives it: (host, port) or (host, port, 0, scope); () if none
    copies: int  # replies that went
    errno: int
    size: int  # the datagram's whole size
    reply: int  # bytes of the reply
    time: float  # when it arrived (Unix seconds)
    data: bytes  # all of it (a slow datagram) or its first bytes (shown)


class FastPath:
    """One worker's C loop. `drops` draws the drop decisions, in order (None: never drops)."""

    def __init__(self, sock: socket.socket, mode: int, *, copies: int = 1, budget: int = 0,
                 window: float = 0.1, drops: Callable[[], bool] | None = None):
        self.notify = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self._drops = drops
        self._w = _lib.fp_new(sock.fileno(), mode, copies, budget, int(window * 1e9),
                              int(drops is not None), self.notify)
        if not self._w:
            os.close(self.notify)
            raise MemoryError("no memory for the worker's receive loop")
        self._counts = Counts()
        self._last = dict.fromkeys(COUNTS, 0)
        self._hosts: dict[bytes, str] = {}
        self.running = False
        self.closed = False
        self.feed()

    def start(self, name: str) -> None:
        """Start the thread (named `name`, as `top -H` shows it)."""
        err = _lib.fp_start(self._w, name.encode()[:15])
        if err:
            raise OSError(err, os.strerror(err))
        self.running = True

    def stop(self) -> None:
        """Stop the thread; returns once it has ended (a signal ends its blocked receive)."""
        _lib.fp_stop(self._w)
        self.running = False

    def close(self) -> None:
        """Stop and free everything; safe to call twice."""
        if self._w:
            _lib.fp_free(self._w)
            self._w = None
            os.close(self.notify)
        self.running = False
        self.closed = True

    def set_slow_all(self, slow: bool) -> None:
        """Hand every datagram to Python (a server answering late does it all itself)."""
        _lib.fp_set_slow_all(self._w, int(slow))

    def feed(self) -> None:
        """Draw the drop decisions the loop will need next, once half of those ahead are used."""
        if self._drops is None:
            return
        room = _lib.fp_wants(self._w)
        if room >= DECISIONS // 2:
            draw = self._drops
            _lib.fp_feed(self._w, bytes(draw() for _ in range(room)), room)

    def allow(self, host: str) -> None:
        """`host` is a local peer (Python judged it): answer it on the thread from now on."""
        if not self.closed:
            _lib.fp_allow(self._w, packed_address(host))

    def heard(self, port: int, data: bytes, since: float) -> bool:
        """Whether a datagram like `data` came from source port `port` at or after `since`
        (what a closed loop heard is gone with it)."""
        return not self.closed and bool(_lib.fp_heard(self._w, port, digest(data), int(since * 1e9)))

    def deltas(self) -> dict[str, int]:
        """How much each counter grew since the last call (nothing once closed)."""
        if self.closed:
            return dict.fromkeys(COUNTS, 0)
        _lib.fp_counters(self._w, ctypes.byref(self._counts))
        counts, last = self._counts, self._last
        grown = {}
        for name in COUNTS:
            value = getattr(counts, name)
            grown[name] = value - last[name]
            last[name] = value
        return grown

    def reads(self) -> int:
        """How many reads brought datagrams: fewer than the datagrams when they came in batches,
        or while a listener or a server that does not reply napped under a stream."""
        return 0 if self.closed else _lib.fp_reads(self._w)

    def naps(self) -> int:
        """How many 50 µs pauses it took between reads: only a listener or a server that does
        not reply naps, and only under a stream."""
        return 0 if self.closed else _lib.fp_naps(self._w)

    def take(self) -> Iterator[Record]:
        """The records handed over since the last call, in the order they happened."""
        try:
            os.eventfd_read(self.notify)
        except BlockingIOError:
            pass
        at = ctypes.c_void_p()
        size = _lib.fp_take(self._w, ctypes.byref(at))
        if not size:
            return
        buffer = ctypes.string_at(at.value, size)  # the thread writes the other buffer meanwhile
        unpack, head, hosts, offset = RECORD.unpack_from, RECORD.size, self._hosts, 0
        while offset < size:
            (total, kind, flags, family, port, copies, err, length, stored, reply, scope,
             time_ns, raw) = unpack(buffer, offset)
            address: tuple = ()
            if family:
                host = hosts.get(raw)
                if host is None:
                    if len(hosts) > 1024:
                        hosts.clear()
                    host = hosts[raw] = _host(family, raw)
                address = ((host, port) if family == socket.AF_INET
                           else (host, port, 0, scope))
            yield Record(kind, bool(flags & F_SHOWN), bool(flags & F_DROPPED), address, copies,
                         err, length, reply, time_ns / 1e9,
                         buffer[offset + head:offset + head + stored])
            offset += total
