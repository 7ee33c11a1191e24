"""What the history's exports share about datagram events: which events are datagrams and
the bytes an event carried. Its own module so that the pcapng writer need not import the
exports (which import it lazily, for dpkt's sake)."""

import re
from typing import Any

# Datagram events and which way the datagram went: True when the worker sent it.
DATAGRAM_TYPES = {"sent": True, "received": False, "dropped": False, "reply": False,
                  "rejected": False}
_ESCAPE = re.compile(rb"\\x([0-9a-f]{2})")


def payload_of(event: dict[str, Any]) -> tuple[bytes, bool]:
    """The datagram's bytes as far as the event tells them, and whether they are exact.

    Events keep `text`, the payload as `payload.show()` printed it: UTF-8, `\\xNN` for bytes
    that are not, cut with `…` past 200 characters. That is undone here; when the result is
    not `size` bytes long it is a best effort (a truncated capture)."""
    text, size = event.get("text", ""), event.get("size", 0)
    plain = text.encode("utf-8")
    if len(plain) == size:
        return plain, True
    cut = text.endswith("…")
    raw = _ESCAPE.sub(lambda m: bytes([int(m.group(1), 16)]),
                      (text[:-1] if cut else text).encode("utf-8"))
    if len(raw) == size:
        return raw, True
    return raw[:size], False
