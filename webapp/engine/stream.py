"""Stream datagrams (like iperf's UDP mode) and the receiver's loss statistics, as plain logic.

Each stream datagram starts with a header: magic, stream id, sequence number and send time.
`StreamStats` counts received, lost, duplicated and reordered datagrams and the RFC 3550
interarrival jitter; it takes the arrival time as an argument and does no I/O.
"""

import struct
from dataclasses import dataclass, field

MAX_SEQ = 100_000_000  # sequence numbers above this are not streams of ours
WINDOW = 65_536  # sequence numbers remembered for spotting duplicates

MAGIC = b"UDPLAB-S"
HEADER = struct.Struct("!8sIQd")  # magic, stream id, sequence number, send time (Unix s)
HEADER_SIZE = HEADER.size  # 28 bytes


def pack(stream_id: int, seq: int, sent: float, size: int) -> bytes:
    """One stream datagram of `size` bytes (at least the header) with sequence number `seq`."""
    header = HEADER.pack(MAGIC, stream_id, seq, sent)
    return header + b"\0" * max(0, size - HEADER_SIZE)


def unpack(data: bytes) -> tuple[int, int, float] | None:
    """(stream id, seq, send time) when `data` is a stream datagram, else None."""
    if len(data) < HEADER_SIZE or not data.startswith(MAGIC):
        return None
    _, stream_id, seq, sent = HEADER.unpack_from(data)
    return (stream_id, seq, sent) if seq <= MAX_SEQ else None


@dataclass
class StreamStats:
    """What a receiver saw of one stream."""

    received: int = 0
    duplicates: int = 0
    reordered: int = 0
    highest: int = -1  # highest sequence number seen
    jitter: float = 0.0  # seconds, smoothed as in RFC 3550 section 6.4.1
    bytes: int = 0
    first_arrival: float | None = None
    last_arrival: float | None = None
    _seen: set[int] = field(default_factory=set, repr=False)  # the last WINDOW numbers
    _last_transit: float | None = field(default=None, repr=False)

    def receive(self, seq: int, sent: float, size: int, now: float) -> str:
        """Count one datagram; returns `new`, `duplicate` or `reordered`."""
        if seq in self._seen:
            self.duplicates += 1
            return "duplicate"
        self._seen.add(seq)
        if len(self._seen) > 2 * WINDOW:  # forget numbers far behind: memory stays bounded
            floor = max(self.highest, seq) - WINDOW
            self._seen = {s for s in self._seen if s >= floor}
        self.received += 1
        self.bytes += size
        if self.first_arrival is None:
            self.first_arrival = now
        self.last_arrival = now
        transit = now - sent
        if self._last_transit is not None:
            self.jitter += (abs(transit - self._last_transit) - self.jitter) / 16
        self._last_transit = transit
        if seq < self.highest:
            self.reordered += 1
            return "reordered"
        self.highest = seq
        return "new"

    @property
    def lost(self) -> int:
        """Datagrams missing below the highest sequence number seen (late ones stop counting)."""
        return self.highest + 1 - self.received

    @property
    def loss_rate(self) -> float:
        """Lost as a fraction of the datagrams expected so far."""
        expected = self.highest + 1
        return self.lost / expected if expected > 0 else 0.0

    def to_dict(self) -> dict[str, float | int]:
        """The figures as JSON."""
        return {
            "received": self.received,
            "lost": self.lost,
            "duplicates": self.duplicates,
            "reordered": self.reordered,
            "loss_rate": round(self.loss_rate, 6),
            "jitter_ms": round(self.jitter * 1000, 3),
            "bytes": self.bytes,
        }
