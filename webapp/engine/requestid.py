"""Request IDs, the chapter's cure for impostors and duplicate replies, as plain logic.

A request carries `#ID:<16 hex digits> ` before its message; the server repeats that prefix
at the start of its reply, whatever it replies. A client accepts only the reply whose prefix
is the ID of the request it is waiting for: an impostor cannot guess it, and a late reply to
an earlier request carries the earlier ID.
"""

import random
import re

MARK = b"#ID:"  # how a tagged datagram starts (a cheap first check)
PREFIX = re.compile(rb"#ID:([0-9a-f]{16}) ")


def tag(request_id: str, body: bytes) -> bytes:
    """`body` with the request ID in front, as it goes on the wire."""
    return b"#ID:" + request_id.encode("ascii") + b" " + body


def split(data: bytes) -> tuple[str | None, bytes]:
    """(request ID or None, the rest) of a datagram."""
    match = PREFIX.match(data)
    if match is None:
        return None, data
    return match.group(1).decode("ascii"), data[match.end():]


class RequestIds:
    """Makes unguessable IDs and judges replies against the one we wait for."""

    def __init__(self, rng: random.Random | None = None):
        self.random = rng or random.SystemRandom()
        self.current: str | None = None
        self.earlier: set[str] = set()

    def new(self) -> str:
        """A fresh ID for the next request (retries of the same request reuse it)."""
        if self.current is not None:
            self.earlier.add(self.current)
        self.current = f"{self.random.getrandbits(64):016x}"
        return self.current

    def judge(self, data: bytes) -> str | None:
        """None if `data` answers the current request, else why it must be refused."""
        found, _ = split(data)
        if found is None:
            return "it carries no request ID, so it cannot be the server's answer"
        if found == self.current:
            return None
        if found in self.earlier:
            return f"it answers an earlier request (ID {found}), not the one we wait for"
        return f"its request ID {found} is not ours ({self.current}): a guess or a forgery"
