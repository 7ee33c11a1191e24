"""The `udplab` command: start the dashboard and print the URL to open."""

import argparse
import ipaddress
import os
import secrets
import signal
import socket
import sys
from pathlib import Path

from webapp.engine.history import default_data_dir
from webapp.engine.interfaces import ipv4_addresses

def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="udplab",
        description="UDP Lab: run the UDP experiments of chapter 2 of Foundations of Python "
        "Network Programming from a web dashboard.",
    )
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to serve the dashboard on (default 127.0.0.1; "
                        "anything else exposes it to the network, token required)")
    parser.add_argument("--port", type=int, default=8000,
                        help="TCP port for the dashboard (default 8000; 0 lets the OS pick)")
    parser.add_argument("--allow-host", action="append", default=[], metavar="NAME",
                        help="another name the dashboard may be reached by (Host header), "
                        "such as the lab machine's DNS name; repeatable")
    parser.add_argument("--allow-limited-broadcast", action="store_true",
                        help="allow sending to 255.255.255.255, which reaches every host on "
                        "every LAN this machine is attached to (refused by default)")
    parser.add_argument("--data-dir", type=Path, default=None, metavar="DIR",
                        help="where the history database lives (default "
                        "$XDG_DATA_HOME/udplab, else ~/.local/share/udplab)")
    parser.add_argument("--history-events", type=int, default=10_000, metavar="N",
                        help="events kept per worker in the history, the newest "
                        "(default 10000; the count of older ones is kept)")
    parser.add_argument("--events-per-second", type=count, default=1000, metavar="N",
                        help="datagrams each worker shows one by one (rows, history) per "
                        "second; beyond that a busy worker counts them and says how many it "
                        "did not show (default 1000; 0 shows every one)")
    fleet = parser.add_argument_group("several machines (see README; udplab fleet init)")
    fleet.add_argument("--nats", default=None, metavar="URL",
                       help="join a fleet of lab machines through nats-server at URL "
                       "(nats://HOST:4222 or tls://HOST:4222)")
    fleet.add_argument("--creds", type=Path, default=None, metavar="FILE",
                       help="the dashboard's credentials file (dashboard.creds)")
    limits = parser.add_argument_group("limits (see README: exposing it on a LAN)")
    limits.add_argument("--allow-net", action="append", default=[], metavar="CIDR",
                        type=network, help="a real network workers may send to, such as "
                        "192.168.1.0/24 (repeatable; loopback and the virtual LAN are always "
                        "allowed)")
    limits.add_argument("--max-multicast-ttl", type=count, default=1, metavar="N",
                        help="the TTL groups may be sent with towards a real network "
                        "(default 1: no router forwards them; loopback and the lab are "
                        "not capped)")
    limits.add_argument("--worker-rate", type=float, default=1000.0, metavar="N",
                        help="datagrams/s per sending worker towards real networks "
                        "(default 1000)")
    limits.add_argument("--worker-bytes", type=float, default=1_000_000.0, metavar="B",
                        help="bytes/s per sending worker towards real networks "
                        "(default 1000000)")
    limits.add_argument("--app-factor", type=float, default=10.0, metavar="X",
                        help="the whole app may send X times one worker's caps (default 10)")
    limits.add_argument("--allow-amplification", action="store_true",
                        help="let servers answer real networks with more bytes than they got")
    limits.add_argument("--replies-per-source", type=float, default=100.0, metavar="N",
                        help="replies/s a server sends one source on a real network "
                        "(default 100)")
    limits.add_argument("--max-workers", type=int, default=64, metavar="N",
                        help="live workers at once (default 64)")
    limits.add_argument("--max-watchers", type=int, default=16, metavar="N",
                        help="WebSocket watchers with the token at once (default 16)")
    limits.add_argument("--max-viewers", type=count, default=150, metavar="N",
                        help="read-only viewers' WebSocket watchers at once, counted apart "
                        "from the token's (default 150: a class of 100 and some spare)")
    limits.add_argument("--max-watchers-per-address", type=count, default=8, metavar="N",
                        help="WebSocket watchers of both kinds from one client address "
                        "(default 8; 0: no per-address limit)")
    limits.add_argument("--keep-ended", type=count, default=200, metavar="N",
                        help="ended workers kept on the dashboard, the newest; older ones "
                        "are cleared from it, the History page keeps them all (default 200)")
    limits.add_argument("--max-token-failures", type=count, default=10, metavar="N",
                        help="wrong tokens per client address per minute; past it that "
                        "address's tokens wait in a slow lane (default 10; each wrong one is "
                        "answered more slowly; a right token always gets in; 0 turns this off)")
    limits.add_argument("--max-token-failures-total", type=count, default=100, metavar="N",
                        help="wrong tokens per minute from all addresses together; past it "
                        "every address that has not shown the right token lately waits in "
                        "the slow lane (default 100; 0: no app-wide budget)")
    limits.add_argument("--max-body", type=size, default=512 * 1024, metavar="BYTES",
                        help="largest request body, refused with 413 (default 524288, 512 KiB)")
    limits.add_argument("--max-import", type=size, default=32 * 2**20, metavar="BYTES",
                        help="largest history import, refused with 413 "
                        "(default 33554432, 32 MiB)")
    limits.add_argument("--header-timeout", type=seconds, default=10.0, metavar="S",
                        help="seconds a connection may take to send a request's headers "
                        "before it is closed (default 10)")
    limits.add_argument("--max-connections", type=connections, default=256, metavar="N",
                        help="open HTTP connections; past it the one idle longest is closed "
                        "(default 256)")
    return parser.parse_args(argv)


def count(text: str) -> int:
    """A whole number, 0 or more (for argparse)."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of 0 or more")
    return value


def size(text: str) -> int:
    """A byte count of at least 1 KiB (for argparse)."""
    value = count(text)
    if value < 1024:
        raise argparse.ArgumentTypeError(f"{text!r} is too small: give at least 1024 bytes")
    return value


def seconds(text: str) -> float:
    """A duration of more than 0 seconds (for argparse)."""
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds above 0")
    return value


def connections(text: str) -> int:
    """A connection cap a browser can live with: at least 16 (for argparse)."""
    value = count(text)
    if value < 16:
        raise argparse.ArgumentTypeError(f"{text!r} is too few: give at least 16 connections")
    return value


def network(text: str) -> str:
    """argparse type: a CIDR network, checked."""
    try:
        return str(ipaddress.ip_network(text, strict=False))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a network: write it like 192.168.1.0/24") from None


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def own_addresses(host: str) -> frozenset[str]:
    """Bound to every interface, the dashboard answers to this machine's own addresses too
    (a rebinding attack needs a name, never one of our addresses)."""
    if host not in ("0.0.0.0", "", "::"):
        return frozenset()
    return frozenset(address for _, address in ipv4_addresses())


def main(argv: list[str] | None = None) -> int:
    """Run the dashboard until Ctrl+C or SIGTERM (or `udplab agent` / `udplab fleet`)."""
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in ("agent", "fleet"):
        from webapp.fleet import cli as fleet_cli
        return (fleet_cli.agent_main if argv[0] == "agent" else fleet_cli.fleet_main)(argv[1:])
    # The web stack only now: `udplab agent` never loads it (a lab PC's agent stays small)
    import uvicorn

    from webapp.serve import Redactor, protocol_class
    from webapp.web import Settings, create_app

    args = parse_args(argv)
    if args.nats or args.creds:
        from webapp.fleet.cli import check_dashboard
        problem = check_dashboard(args.nats, args.creds)
        if problem:
            print(f"udplab: {problem}", file=sys.stderr)
            return 2
    family = socket.AF_INET6 if ":" in args.host else socket.AF_INET
    listener = socket.socket(family, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listener.bind((args.host, args.port))
    except OSError as exc:
        print(f"udplab: cannot serve on {args.host} port {args.port}: {exc.strerror}. "
              "Pick another --port, or stop the program using it.", file=sys.stderr)
        return 2
    port = listener.getsockname()[1]
    settings = Settings(
        host=args.host,
        port=port,
        token=os.environ.get("UDPLAB_TOKEN") or secrets.token_urlsafe(32),
        viewer_token=os.environ.get("UDPLAB_VIEWER_TOKEN") or secrets.token_urlsafe(32),
        allowed_hosts=frozenset(h.lower() for h in args.allow_host) | own_addresses(args.host),
        allow_limited_broadcast=args.allow_limited_broadcast,
        allowed_networks=tuple(args.allow_net),
        max_multicast_ttl=args.max_multicast_ttl,
        worker_rate=args.worker_rate,
        worker_bytes=args.worker_bytes,
        app_factor=args.app_factor,
        allow_amplification=args.allow_amplification,
        replies_per_source=args.replies_per_source,
        max_workers=args.max_workers,
        max_watchers=args.max_watchers,
        max_viewers=args.max_viewers,
        max_watchers_per_address=args.max_watchers_per_address,
        keep_ended=args.keep_ended,
        max_token_failures=args.max_token_failures,
        max_token_failures_total=args.max_token_failures_total,
        max_body=args.max_body,
        max_import_body=args.max_import,
        header_timeout=args.header_timeout,
        max_connections=args.max_connections,
        data_dir=args.data_dir or default_data_dir(),
        history_events=args.history_events,
        events_per_second=args.events_per_second,
        nats_url=args.nats,
        nats_creds=args.creds,
    )
    # Before anything logs: no log record of this process ever shows either token.
    Redactor(settings.token, settings.viewer_token).install()
    app = create_app(settings)

    try:
        import uvloop  # noqa: F401  (only checking that it is there)
        loop = "uvloop"
    except ImportError:
        loop = "asyncio"
    config = uvicorn.Config(
        app,
        loop=loop,
        log_level="info",
        timeout_graceful_shutdown=3,
        ws_max_size=64 * 1024,
        ws_ping_interval=20,
        # Compressing every copy of every message for every watcher costs more CPU than the
        # loopback or LAN bandwidth it saves.
        ws_per_message_deflate=False,
        # Slow-loris: each request's headers within --header-timeout and 64 KiB, idle
        # keep-alive connections closed after 5 s, at most --max-connections open (the one
        # idle longest gives way, so the real user still gets in); past twice that, busy
        # ones included, uvicorn answers 503.
        http=protocol_class(settings.header_timeout, settings.max_connections),
        timeout_keep_alive=5,
        h11_max_incomplete_event_size=64 * 1024,
        limit_concurrency=2 * settings.max_connections,
    )
    server = uvicorn.Server(config)

    print(f"UDP Lab is running. Open this URL (it holds the access token):\n\n"
          f"    {settings.base_url}?token={settings.token}\n\n"
          f"Read-only link for students (they can watch, not start anything):\n\n"
          f"    {settings.base_url}?view={settings.viewer_token}\n", flush=True)
    if not is_loopback(args.host):
        print("Warning: the dashboard is reachable from the network. Anyone with the URL "
              "above can send UDP from this machine; share it only with your class.",
              flush=True)
    # uvicorn handles SIGINT/SIGTERM while it runs (a graceful shutdown: every worker is
    # stopped and every socket closed), then raises the signal again for the handler that
    # was there before. A no-op handler here makes that a clean exit 0, with no traceback.
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: None)
    server.run(sockets=[listener])
    print("UDP Lab stopped: every worker's socket is closed.", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
