"""What the `udplab` command adds around uvicorn: a log that never shows a token, and HTTP
connections that cannot be held open for nothing (slow-loris)."""

import logging
import re
from urllib.parse import unquote_plus

from uvicorn.protocols.http.auto import AutoHTTPProtocol

HIDDEN = "(hidden)"
SECRET_KEYS = frozenset({"token", "view"})  # query parameters that carry a token
PARAM = re.compile(r"(?<=[?&;])([^=&;\s\"'#]+)=([^&;\s\"'#]*)")
RUN = re.compile(r"[^\s\"']+")
MAX_HEADER_BYTES = 64 * 1024  # a request's line and headers; browsers send a few KiB


def decoded(text: str) -> str:
    """`text` percent-decoded until it no longer changes (at most three rounds)."""
    for _ in range(3):
        plain = unquote_plus(text)
        if plain == text:
            break
        text = plain
    return text


class Redactor:
    """Hides the tokens in every log record of the process, whoever logs it: the values
    themselves in any spelling (plain or percent-encoded), and whatever a `token=` or `view=`
    query parameter carries, however its name is encoded (`%74oken=`)."""

    def __init__(self, *secrets: str):
        self.secrets = tuple(s for s in secrets if s)

    def redact(self, text: str) -> str:
        """`text` with every token replaced by (hidden)."""
        for secret in self.secrets:
            text = text.replace(secret, HIDDEN)
        if "=" in text:
            text = PARAM.sub(self._param, text)
        if "%" in text or "+" in text:
            text = RUN.sub(self._run, text)
        return text

    def _param(self, match: re.Match) -> str:
        key, value = decoded(match.group(1)).strip().lower(), decoded(match.group(2))
        if key in SECRET_KEYS or self._holds_secret(value):
            return f"{match.group(1)}={HIDDEN}"
        return match.group(0)

    def _run(self, match: re.Match) -> str:
        return HIDDEN if self._holds_secret(decoded(match.group(0))) else match.group(0)

    def _holds_secret(self, text: str) -> bool:
        return any(secret in text for secret in self.secrets)

    def scrub(self, record: logging.LogRecord) -> None:
        """Redact a record's message, arguments, traceback and stack in place."""
        if isinstance(record.msg, str):
            record.msg = self.redact(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(self._arg(a) for a in record.args)
        elif isinstance(record.args, dict):
            record.args = {k: self._arg(v) for k, v in record.args.items()}
        if record.exc_info and not record.exc_text:
            # Formatters reuse exc_text when it is set: the traceback is redacted once, here.
            record.exc_text = self.redact(logging.Formatter().formatException(record.exc_info))
        if record.stack_info:
            record.stack_info = self.redact(record.stack_info)

    def _arg(self, value):
        if isinstance(value, str):
            return self.redact(value)
        if isinstance(value, (bytes, bytearray)):
            text = bytes(value).decode("latin-1")
            return self.redact(text) if self.redact(text) != text else value
        if isinstance(value, (int, float)) or value is None:
            return value
        text = str(value)
        redacted = self.redact(text)
        return redacted if redacted != text else value

    def install(self) -> None:
        """Redact every log record of this process as it is made (the root of all logging:
        no logger, handler or formatter sees a token)."""
        make_record = logging.getLogRecordFactory()

        def redacted_record(*args, **kwargs) -> logging.LogRecord:
            record = make_record(*args, **kwargs)
            self.scrub(record)
            return record

        logging.setLogRecordFactory(redacted_record)


def protocol_class(header_timeout: float, max_connections: int) -> type:
    """uvicorn's HTTP protocol, with a deadline for each request's headers, a bound on
    their size, and at most `max_connections` open: past it, opening one closes the
    connection that has waited longest for its next request's headers."""

    class BoundedHTTPProtocol(AutoHTTPProtocol):
        """One HTTP connection that may not hold a slot for nothing."""

        def connection_made(self, transport) -> None:
            self._deadline = None
            super().connection_made(transport)
            self._wait_for_headers()
            if len(self.connections) > max_connections:
                self._close_the_longest_idle()

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            if self._idle() and not self.transport.is_closing():
                self._header_bytes += len(data)
                if self._header_bytes > MAX_HEADER_BYTES:
                    self._refuse(b"431 Request Header Fields Too Large",
                                 b"The request's headers are larger than 64 KiB")

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if self.timeout_keep_alive_task is not None:  # idle now, no pipelined request
                self._wait_for_headers()

        def handle_websocket_upgrade(self) -> None:
            self._stop_waiting()  # the WebSocket protocol takes the connection over
            self._since = None
            super().handle_websocket_upgrade()

        def connection_lost(self, exc) -> None:
            self._stop_waiting()
            super().connection_lost(exc)

        def _wait_for_headers(self) -> None:
            self._stop_waiting()
            self._before = self.cycle  # the request before the one awaited (or None)
            self._since = self.loop.time()
            self._header_bytes = 0
            self._deadline = self.loop.call_later(header_timeout, self._too_slow)

        def _stop_waiting(self) -> None:
            if getattr(self, "_deadline", None) is not None:
                self._deadline.cancel()
                self._deadline = None

        def _idle(self) -> bool:
            """Whether no request has started since the connection became free."""
            return getattr(self, "_since", None) is not None and self.cycle is self._before

        def _too_slow(self) -> None:
            self._deadline = None
            if self._idle() and not self.transport.is_closing():
                self.transport.close()

        def _refuse(self, status: bytes, text: bytes) -> None:
            self.transport.write(b"HTTP/1.1 " + status + b"\r\ncontent-type: text/plain; "
                                 b"charset=utf-8\r\nconnection: close\r\ncontent-length: "
                                 + str(len(text)).encode() + b"\r\n\r\n" + text)
            self.transport.close()

        def _close_the_longest_idle(self) -> None:
            idle = [c for c in self.connections
                    if isinstance(c, BoundedHTTPProtocol) and c._idle()
                    and not c.transport.is_closing()]
            if idle:
                min(idle, key=lambda c: c._since).transport.close()

    return BoundedHTTPProtocol
