"""Retry timing for a UDP client, as plain logic that takes `now` and does no I/O.

The book's client (listing 2-2) waits 0.1 s, doubles the wait after each timeout and gives
up once the next wait would pass 2.0 s: it waits 0.1, 0.2, 0.4, 0.8 and 1.6 s, then says
"I think the server is down".

The book's advice for real clients is here too: `forever` caps the wait at `give_up_after`
and never gives up (a daemon), `jitter` spreads the waits so that many clients do not retry
in step, and `RttEstimator` learns a first wait from recent round trips.
"""

import random
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Backoff:
    """How long to wait for each try: `initial`, times `factor` each time, until `give_up_after`."""

    initial: float = 0.1
    factor: float = 2.0
    give_up_after: float = 2.0
    forever: bool = False  # daemon mode: the wait stops growing at give_up_after; never give up
    jitter: float = 0.0  # each wait is multiplied by a random factor in [1 - jitter, 1 + jitter]

    def delays(self, limit: int = 100) -> list[float]:
        """Every wait this backoff allows, in order (the book's: 0.1, 0.2, 0.4, 0.8, 1.6).

        At most `limit` of them: with a factor of 1, or `forever`, the waits never end.
        """
        out, delay = [], self.initial
        while delay <= self.give_up_after and len(out) < limit:
            out.append(delay)
            delay *= self.factor
            if self.forever and delay > self.give_up_after:
                delay = self.give_up_after
        return out


class Attempt:
    """One request's tries: when the current wait ends and what comes after a timeout.

    `first` replaces the backoff's initial wait (a wait learned from round trips); `rng`
    draws the jitter, so a seeded one gives the same waits every run.
    """

    def __init__(self, backoff: Backoff, now: float, *, first: float | None = None,
                 rng: random.Random | None = None):
        self.backoff = backoff
        self.random = rng or random.Random()
        self.tries = 1
        self.base = first if first is not None else backoff.initial
        self.delay = self._spread(self.base)
        self.started = now
        self.deadline = now + self.delay

    def _spread(self, base: float) -> float:
        jitter = self.backoff.jitter
        return base * self.random.uniform(1 - jitter, 1 + jitter) if jitter else base

    def remaining(self, now: float) -> float:
        """Seconds left in the current wait (never negative)."""
        return max(0.0, self.deadline - now)

    def expired(self, now: float) -> bool:
        """Whether the current wait is over."""
        return now >= self.deadline

    def retry(self, now: float) -> float | None:
        """After a timeout: the next wait, starting at `now`, or None to give up."""
        base = self.base * self.backoff.factor
        if base > self.backoff.give_up_after:
            if not self.backoff.forever:
                return None
            base = self.backoff.give_up_after
        self.tries += 1
        self.base = base
        self.delay = self._spread(base)
        self.deadline = now + self.delay
        return self.delay


class RttEstimator:
    """Smoothed round-trip time and the first wait it suggests (RFC 6298, as TCP does).

    Feed it only replies to a first try (Karn's rule): after a retry, nobody knows which
    try the reply answers.
    """

    def __init__(self, floor: float = 0.005, ceiling: float = 2.0):
        self.floor = floor
        self.ceiling = ceiling
        self.srtt: float | None = None
        self.rttvar = 0.0
        self.samples = 0

    def sample(self, rtt: float) -> None:
        """Learn from one round trip of `rtt` seconds."""
        self.samples += 1
        if self.srtt is None:
            self.srtt, self.rttvar = rtt, rtt / 2
        else:
            self.rttvar = 0.75 * self.rttvar + 0.25 * abs(self.srtt - rtt)
            self.srtt = 0.875 * self.srtt + 0.125 * rtt

    def timeout(self, default: float) -> float:
        """The first wait to use: `default` until a round trip was seen."""
        if self.srtt is None:
            return default
        return min(self.ceiling, max(self.floor, self.srtt + 4 * self.rttvar))
