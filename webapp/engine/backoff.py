"""Retry timing for a UDP client, as plain logic that takes `now` and does no I/O.

The book's client (listing 2-2) waits 0.1 s, doubles the wait after each timeout and gives
up once the next wait would pass 2.0 s: it waits 0.1, 0.2, 0.4, 0.8 and 1.6 s, then says
"I think the server is down".
"""

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Backoff:
    """How long to wait for each try: `initial`, times `factor` each time, until `give_up_after`."""

    initial: float = 0.1
    factor: float = 2.0
    give_up_after: float = 2.0

    def delays(self, limit: int = 100) -> list[float]:
        """Every wait this backoff allows, in order (the book's: 0.1, 0.2, 0.4, 0.8, 1.6).

        At most `limit` of them: with a factor of 1 the waits never pass `give_up_after`.
        """
        out, delay = [], self.initial
        while delay <= self.give_up_after and len(out) < limit:
            out.append(delay)
            delay *= self.factor
        return out


class Attempt:
    """One request's tries: when the current wait ends and what comes after a timeout."""

    def __init__(self, backoff: Backoff, now: float):
        self.backoff = backoff
        self.tries = 1
        self.delay = backoff.initial
        self.deadline = now + self.delay

    def remaining(self, now: float) -> float:
        """Seconds left in the current wait (never negative)."""
        return max(0.0, self.deadline - now)

    def expired(self, now: float) -> bool:
        """Whether the current wait is over."""
        return now >= self.deadline

    def retry(self, now: float) -> float | None:
        """After a timeout: the next wait, starting at `now`, or None to give up."""
        delay = self.delay * self.backoff.factor
        if delay > self.backoff.give_up_after:
            return None
        self.tries += 1
        self.delay = delay
        self.deadline = now + delay
        return delay
