"""Exceptions for misuse of the engine: bad specs, taken addresses, unknown workers.

What the network does (timeouts, refusals, impostors) is reported as events, never raised.
Each error carries the HTTP-ish `status` the web layer maps it to, in one place.
"""


class EngineError(Exception):
    """Base of every error the engine raises on purpose; `str()` is a sentence for people."""

    status = 400

    def __init__(self, message: str, *, field: str | None = None):
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
