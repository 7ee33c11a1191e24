"""Settings for one app instance; tests build their own."""

import secrets
from dataclasses import dataclass, field
from pathlib import Path

from webapp.engine.history import default_data_dir

PACKAGE = Path(__file__).resolve().parent.parent
LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1", "[::1]"})


def _data_dir(name: str) -> Path:
    # Installed from a wheel, templates/ and static/ sit inside the package; in a checkout
    # (an editable install) they are the top-level folders beside webapp/.
    inside = PACKAGE / name
    return inside if inside.is_dir() else PACKAGE.parent / name


@dataclass(frozen=True)
class Settings:
    """Everything an app instance needs to know about where it runs and whom it trusts."""

    host: str = "127.0.0.1"
    port: int = 8000
    token: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    viewer_token: str = field(default_factory=lambda: secrets.token_urlsafe(32))  # read-only
    allowed_hosts: frozenset[str] = frozenset()  # extra Host names besides loopback and `host`
    templates_dir: Path = field(default_factory=lambda: _data_dir("templates"))
    static_dir: Path = field(default_factory=lambda: _data_dir("static"))
    flush_interval: float = 0.05  # at most one JSON stream message per this many seconds
    # the page stream of token holders (the teacher's page): one message per this many
    # seconds at most. Every row waits up to one of them; with the log's row budget the
    # browser has time for the extra messages (issue 17)
    page_flush_interval: float = 0.03
    # read-only viewers' page stream: one message (the flushes between, merged) per this many
    # seconds; the teacher's page gets one per page_flush_interval (issue 17)
    viewer_flush_interval: float = 0.1
    page_rows: int = 200  # rows the page keeps in its event log
    rows_per_flush: int = 50  # newest rows sent per message; counters stay exact regardless
    # Each worker's rows of one datagram or request each (received, sent, reply, waiting,
    # ...): the page's log lists at most this many a second, after a burst of page_row_burst;
    # every other row (a stop, a pause, an error, a step, a summary) is always listed (issue 17)
    page_rows_per_second: float = 200.0
    page_row_burst: int = 25
    worker_history: int = 1000  # events kept per worker for GET /api/workers/{id}/events
    allow_limited_broadcast: bool = False  # may workers send to 255.255.255.255?
    allowed_networks: tuple[str, ...] = ()  # --allow-net: real networks workers may send to
    max_multicast_ttl: int = 1  # the TTL of groups sent towards a real network
    worker_rate: float = 1000.0  # datagrams/s per sending worker towards a real network
    worker_bytes: float = 1_000_000.0  # bytes/s per sending worker towards a real network
    app_factor: float = 10.0  # the whole app may send this many times one worker's cap
    allow_amplification: bool = False  # servers may answer real networks with more bytes
    replies_per_source: float = 100.0  # replies/s to one source on a real network
    max_workers: int = 64  # live workers at once
    max_watchers: int = 16  # WebSocket watchers with the token at once (page and JSON streams)
    data_dir: Path = field(default_factory=default_data_dir)  # the history database; --data-dir
    history_events: int = 10_000  # events kept per worker in the history (the newest)
    events_per_second: int = 1000  # datagrams each worker shows one by one a second; 0 = all
    max_token_failures: int = 10  # wrong tokens per client address a minute; 0 = no limit
    max_token_failures_total: int = 100  # wrong tokens a minute from all addresses; 0 = none
    max_body: int = 512 * 1024  # bytes of one request body (a 65507-byte message, escaped)
    max_import_body: int = 32 * 2**20  # bytes of one history import's body
    header_timeout: float = 10.0  # seconds a connection may take to send a request's headers
    max_connections: int = 256  # open HTTP connections; past it the oldest idle one is closed
    keep_ended: int = 200  # ended workers kept on the dashboard, the newest (history keeps all)
    nats_url: str | None = None  # --nats: join a fleet of lab machines (several machines)
    nats_creds: Path | None = None  # --creds: the dashboard's credentials from fleet init
    max_viewers: int = 150  # read-only viewers' WebSocket watchers at once (a class of 100)
    max_watchers_per_address: int = 8  # watchers of both kinds from one client address; 0: any

    @property
    def cookie_name(self) -> str:
        """The session cookie's name; it includes the port so two instances never mix."""
        return f"udplab_{self.port}"

    @property
    def viewer_cookie_name(self) -> str:
        """The read-only viewer's cookie."""
        return f"udplab_view_{self.port}"

    @property
    def host_names(self) -> frozenset[str]:
        """Names the Host header may carry (port aside)."""
        bound = {self.host} if self.host not in ("", "0.0.0.0", "::") else set()
        return LOOPBACK_HOSTS | bound | self.allowed_hosts

    @property
    def base_url(self) -> str:
        """The URL people open, without the token."""
        host = "127.0.0.1" if self.host in ("", "0.0.0.0") else self.host
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{self.port}/"
