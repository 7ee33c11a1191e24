"""Token buckets: how long a sender must wait to stay under a rate, as plain logic."""

import threading
from dataclasses import dataclass, field


@dataclass
class TokenBucket:
    """`rate` tokens per second, at most `burst` saved up; `take()` says how long to wait."""

    rate: float
    burst: float
    tokens: float = field(init=False)
    stamp: float | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        self.tokens = self.burst

    def _refill(self, now: float) -> None:
        if self.stamp is not None:
            self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now

    def wait(self, amount: float, now: float) -> float:
        """Seconds until `amount` tokens are there (0: now); takes nothing."""
        self._refill(now)
        return 0.0 if self.tokens >= amount else (amount - self.tokens) / self.rate

    def take(self, amount: float, now: float) -> None:
        """Spend `amount` tokens (the balance may go negative: a debt paid by waiting)."""
        self._refill(now)
        self.tokens -= amount


class Throttle:
    """A worker's caps (datagrams/s and bytes/s) together with the app-wide ones.

    Thread-safe: a stream sends from a thread of its own, and the app-wide buckets are
    shared with workers on the event loop (a lock per worker's Throttle would not do)."""

    _lock = threading.Lock()  # one for all: the app-wide buckets are checked and taken at once

    def __init__(self, mine: tuple[TokenBucket, TokenBucket],
                 shared: tuple[TokenBucket, TokenBucket]):
        self.buckets = (*mine, *shared)

    def delay(self, size: int, now: float) -> float:
        """How long to wait before sending `size` bytes; 0 means send now (and it is counted)."""
        with self._lock:
            return self._delay(size, now)

    def _delay(self, size: int, now: float) -> float:
        packets_mine, bytes_mine, packets_all, bytes_all = self.buckets
        wait = max(packets_mine.wait(1, now), bytes_mine.wait(min(size, bytes_mine.burst), now),
                   packets_all.wait(1, now), bytes_all.wait(min(size, bytes_all.burst), now))
        if wait == 0:
            for bucket, amount in zip(self.buckets, (1, size, 1, size)):
                bucket.take(amount, now)
        return wait
