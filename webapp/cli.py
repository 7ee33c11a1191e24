"""The `udplab` command: start the dashboard and print the URL to open."""

import argparse
import ipaddress
import os
import secrets
import signal
import socket
import sys
from pathlib import Path

from webapp.capflags import CAPS, add_caps
from webapp.capflags import connections, count, network, seconds, size  # noqa: F401 (once here)
from webapp.engine.history import default_data_dir
from webapp.engine.interfaces import ipv4_addresses

# Caps --help shows among the general options; every other one of webapp/capflags.py's table
# is under "limits", in the table's order.
GENERAL_CAPS = ("--allow-limited-broadcast", "--events-per-second")

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
    add_caps(parser, ["--allow-limited-broadcast"])
    parser.add_argument("--data-dir", type=Path, default=None, metavar="DIR",
                        help="where the history database lives (default "
                        "$XDG_DATA_HOME/udplab, else ~/.local/share/udplab)")
    parser.add_argument("--history-events", type=int, default=10_000, metavar="N",
                        help="events kept per worker in the history, the newest "
                        "(default 10000; the count of older ones is kept)")
    add_caps(parser, ["--events-per-second"])
    fleet = parser.add_argument_group("several machines (see README; udplab fleet init)")
    fleet.add_argument("--nats", default=None, metavar="URL",
                       help="join a fleet of lab machines through nats-server at URL "
                       "(nats://HOST:4222 or tls://HOST:4222)")
    fleet.add_argument("--creds", type=Path, default=None, metavar="FILE",
                       help="the dashboard's credentials file (dashboard.creds)")
    limits = parser.add_argument_group("limits (see README: exposing it on a LAN)")
    add_caps(limits, [flag for flag in CAPS if flag not in GENERAL_CAPS])
    return parser.parse_args(argv)


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
