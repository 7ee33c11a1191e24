"""Finding the largest UDP payload that leaves unfragmented, as plain logic.

With `IP_MTU_DISCOVER` set to `IP_PMTUDISC_DO`, a datagram bigger than the path MTU is
refused at once with EMSGSIZE instead of being fragmented, so each size can be tried by a
send. The search takes the kernel's `IP_MTU` (IPv6: `IPV6_MTU`) as a hint: the answer
should be MTU − 20 (IPv4 header; IPv6: 40) − 8 (UDP header), and two sends confirm it.
"""

IPV4_HEADER, IPV6_HEADER, UDP_HEADER = 20, 40, 8
MAX_PAYLOAD = 65507  # 65535 − 20 − 8: the most an IPv4 datagram can carry


def largest_payload(mtu: int, ipv6: bool = False) -> int:
    """The header arithmetic: the payload that fills an MTU exactly."""
    return min(MAX_PAYLOAD, mtu - (IPV6_HEADER if ipv6 else IPV4_HEADER) - UDP_HEADER)


class MtuSearch:
    """Binary search for the largest size whose send succeeds, starting at a hint."""

    def __init__(self, hint: int | None = None, low: int = 0, high: int = MAX_PAYLOAD):
        self.low = low - 1  # the largest size known to go (none yet)
        self.high = high + 1  # the smallest size known to fail (past the limit)
        self._hints = [] if hint is None else [h for h in (hint, hint + 1) if low <= h <= high]
        self.tries = 0

    def next_size(self) -> int | None:
        """The size to try next, or None when the answer is known."""
        while self._hints:
            size = self._hints.pop(0)
            if self.low < size < self.high:
                return size
        if self.high - self.low <= 1:
            return None
        return (self.low + self.high) // 2

    def record(self, size: int, went: bool) -> None:
        """The outcome of sending `size` bytes."""
        self.tries += 1
        if went:
            self.low = max(self.low, size)
        else:
            self.high = min(self.high, size)

    @property
    def result(self) -> int | None:
        """The largest size that went, once `next_size()` is None."""
        return self.low if self.low >= 0 else None
