"""The guard's budgets: wrong tokens per client address and in all, and request body sizes.

Wrong tokens. A right token always gets in. Wrong ones are counted over a sliding minute,
per client address and for the whole app. While an address, or the whole app, is over its
budget, every token that address offers waits in one app-wide lane, one check per
`PENALTY` seconds, before it is compared at all: a right token still gets in (a little
later), and guessing from any number of addresses gets one try per `PENALTY`. Addresses that
showed the right token lately skip the lane when only the app-wide budget is spent, so a
guesser elsewhere does not slow the teacher down.

A cookie with our name and a wrong value is what a tab of an earlier run of udplab sends
each time it reconnects: the first few such values of an address are taken for that and never
counted; more distinct values are guesses.
"""

import asyncio
import hashlib
from collections import deque

from starlette.exceptions import HTTPException

WINDOW = 60.0  # seconds over which wrong tokens are counted
TRUSTED_FOR = 600.0  # seconds an address that showed the right token skips the app-wide lane
PENALTY = 1.0  # seconds between two token checks of over-budget requests, app-wide
LANE = 8  # over-budget requests waiting at once; more are refused unchecked
STALE_VALUES = 4  # distinct wrong cookie values per address taken for an earlier run's
STALE_FOR = 3600.0  # seconds a stale cookie value is remembered after it was last seen
MAX_ADDRESSES = 10_000  # addresses remembered at most (no table grows without bound)


def digest(value: str) -> bytes:
    """What is remembered of a wrong cookie value (never the value itself)."""
    return hashlib.sha256(value.encode("utf-8", "surrogateescape")).digest()


class TokenFailures:
    """Wrong tokens of the last minute, per client address and app-wide; stale cookies; the
    lane that over-budget requests wait in. Every method but `wait_in_lane` is synchronous,
    so a decision and the count it rests on are never split by an `await`."""

    def __init__(self, per_address: int, total: int):
        self.per_address = per_address  # 0: no limit of any kind (no counting, no slowing)
        self.total = total  # 0: no app-wide budget
        self.by_address: dict[str, deque[float]] = {}
        self.all: deque[float] = deque()
        self.trusted: dict[str, float] = {}  # address -> when it last showed the right token
        self.stale: dict[str, dict[bytes, float]] = {}  # address -> wrong cookie value -> seen
        self.waiting = 0  # requests in the lane
        self.lane = asyncio.Lock()

    @property
    def enabled(self) -> bool:
        return self.per_address > 0

    def _trim(self, now: float) -> None:
        while self.all and now - self.all[0] >= WINDOW:
            self.all.popleft()

    def recent(self, address: str, now: float) -> deque[float]:
        """This address's wrong tokens of the last minute, oldest first."""
        times = self.by_address.get(address)
        if times is None:
            return deque()
        while times and now - times[0] >= WINDOW:
            times.popleft()
        if not times:
            del self.by_address[address]
        return times

    def over_budget(self, address: str, now: float) -> str | None:
        """Why this address's tokens must wait in the lane, or None when they need not."""
        if not self.enabled:
            return None
        self._trim(now)
        if len(self.recent(address, now)) >= self.per_address:
            return f"Too many wrong tokens from {address}"
        if self.total and len(self.all) >= self.total and not self.is_trusted(address, now):
            return "Too many wrong tokens from the network"
        return None

    def wait_seconds(self, address: str, now: float) -> int:
        """Whole seconds until this address is under every budget again (for the message)."""
        waits = [0.0]
        times = self.recent(address, now)
        if self.per_address and len(times) >= self.per_address:
            waits.append(WINDOW - (now - times[len(times) - self.per_address]))
        if self.total and len(self.all) >= self.total:
            waits.append(WINDOW - (now - self.all[len(self.all) - self.total]))
        return int(max(waits)) + 1

    def failed(self, address: str, now: float) -> int:
        """Count a wrong token; the address's count in the last minute, this one included."""
        self._trim(now)
        if len(self.by_address) >= MAX_ADDRESSES and address not in self.by_address:
            # Forget the per-address counts; the app-wide budget still holds.
            self.by_address.clear()
        times = self.by_address.setdefault(address, deque())
        times.append(now)
        self.all.append(now)
        if len(times) > 4 * self.per_address:  # a long attack needs no longer memory
            times.popleft()
        if self.total and len(self.all) > 4 * self.total:
            self.all.popleft()
        return len(times)

    def succeeded(self, address: str, now: float) -> None:
        """The address showed the right token: it skips the app-wide lane for a while."""
        if len(self.trusted) >= MAX_ADDRESSES and address not in self.trusted:
            self.trusted = {a: t for a, t in self.trusted.items() if now - t < TRUSTED_FOR}
            if len(self.trusted) >= MAX_ADDRESSES:
                return
        self.trusted[address] = now

    def is_trusted(self, address: str, now: float) -> bool:
        since = self.trusted.get(address)
        return since is not None and now - since < TRUSTED_FOR

    def is_stale(self, address: str, value: str, now: float) -> bool:
        """Whether a wrong cookie value is (taken for) one an earlier run set: remembered
        values are; a new value is while the address has fewer than `STALE_VALUES`."""
        seen = self.stale.get(address)
        if seen is None:
            if len(self.stale) >= MAX_ADDRESSES:
                self.stale.clear()
            seen = self.stale[address] = {}
        for key in [k for k, t in seen.items() if now - t >= STALE_FOR]:
            del seen[key]
        key = digest(value)
        if key in seen or len(seen) < STALE_VALUES:
            seen[key] = now
            return True
        return False

    def knows_stale(self, address: str, value: str) -> bool:
        """Whether this exact wrong cookie value was seen from this address already (no
        comparison with the token is needed to know it is wrong)."""
        return digest(value) in self.stale.get(address, {})

    async def wait_in_lane(self) -> bool:
        """Wait for this request's turn (one per `PENALTY` s, app-wide); False when the lane
        is full and the request must be refused unchecked."""
        if self.waiting >= LANE:
            return False
        self.waiting += 1
        try:
            async with self.lane:
                await asyncio.sleep(PENALTY)
        finally:
            self.waiting -= 1
        return True


def slow_down(count: int) -> float:
    """Seconds to wait before answering a request's `count`-th wrong token of the minute."""
    return min(2.0, 0.1 * 2 ** count)


class BodyTooLarge(HTTPException):
    """A request body over its route's limit, found while it streams in (chunked bodies)."""

    def __init__(self, message: str):
        super().__init__(status_code=413, detail=message)


def too_large_message(limit: int, importing: bool) -> str:
    """The 413's words: the limit, and what to do instead."""
    size = f"{limit // 2**20} MiB" if limit >= 2**20 else f"{limit // 1024} KiB"
    if importing:
        return (f"The import is larger than {size}, this dashboard's limit for one import: "
                "export fewer workers at a time, or start udplab with a larger --max-import")
    return (f"The request body is larger than {size}, this dashboard's limit for one request: "
            "send a smaller one, or start udplab with a larger --max-body")


def limited_receive(receive, limit: int, message: str):
    """`receive` that raises BodyTooLarge as soon as the body streamed in passes `limit`."""
    received = 0

    async def receive_within_limit():
        nonlocal received
        event = await receive()
        if event["type"] == "http.request":
            received += len(event.get("body", b""))
            if received > limit:
                raise BodyTooLarge(message)
        return event

    return receive_within_limit
