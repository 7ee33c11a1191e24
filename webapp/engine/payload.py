"""Payloads: the messages the book's programs send, and safe text for any bytes."""

from datetime import datetime


def show(data: bytes, limit: int = 200, size: int | None = None) -> str:
    """Bytes as text for people: UTF-8 where it is, `\\xNN` escapes where it is not.

    Never raises, whatever the bytes; long payloads are cut at `limit` characters with `…`.
    `size`: the whole datagram's size when `data` is only its first `limit * 4 + 1` bytes or
    more (what the C receive loop hands over).
    """
    text = data[: limit * 4].decode("utf-8", errors="backslashreplace")
    # the size too: 201 four-byte characters fill the first `limit * 4` bytes exactly
    if len(text) <= limit and (len(data) if size is None else size) <= limit * 4:
        return text
    return text[:limit] + "…"


def time_message(now: datetime | None = None) -> str:
    """The client's default message in listing 2-1: `The time is 2026-11-24 16:53:41.123456`."""
    return f"The time is {now or datetime.now()}"


def length_reply(size: int) -> str:
    """The server's reply in listings 2-1 and 2-2."""
    return f"Your data was {size} bytes long"
