"""Exceptions for misuse of the engine: bad specs, taken addresses, unknown workers.

What the network does (timeouts, refusals, impostors) is reported as events, never raised.
Each error carries the HTTP-ish `status` the web layer maps it to, in one place.
"""

import re

ECHO_LIMIT = 100  # characters of a quoted value that a message may repeat
MESSAGE_LIMIT = 2000  # characters of any message, whatever it quotes
QUOTED = re.compile("'[^']{%d,}'|\"[^\"]{%d,}\"" % (ECHO_LIMIT, ECHO_LIMIT))


def bounded(message: str) -> str:
    """`message` repeating at most ECHO_LIMIT characters of any value it quotes (a 1 MB
    name is refused in a line, not echoed back whole), and at most MESSAGE_LIMIT in all."""
    def shorten(match: re.Match) -> str:
        value = match.group(0)
        return f"{value[:ECHO_LIMIT]}…{value[0]} ({len(value) - 2} characters)"
    message = QUOTED.sub(shorten, message)
    return message if len(message) <= MESSAGE_LIMIT else message[:MESSAGE_LIMIT] + "…"


class EngineError(Exception):
    """Base of every error the engine raises on purpose; `str()` is a sentence for people."""

    status = 400

    def __init__(self, message: str, *, field: str | None = None):
        message = bounded(message)  # every page and every JSON error shows this one
        super().__init__(message)
        self.message = message
        self.field = field


class BadSpec(EngineError):
    """A worker spec has a missing, malformed or impossible field."""

    status = 422


class Conflict(EngineError):
    """The address is in use, not available here, or a worker name is already taken."""

    status = 409


class Refused(EngineError):
    """The operator's policy refuses this (privileged port, destination, caps)."""

    status = 403


class UnknownWorker(EngineError):
    """No worker has this id."""

    status = 404


class TooMany(EngineError):
    """A cap is reached: live workers, watchers, attempts."""

    status = 429
