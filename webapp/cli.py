"""The `udplab` command: start the dashboard and print the URL to open."""

import argparse
import ipaddress
import logging
import os
import re
import secrets
import signal
import socket
import sys

import uvicorn

from webapp.engine.interfaces import ipv4_addresses
from webapp.web import Settings, create_app

TOKEN_IN_URL = re.compile(r"token=[^&\s]*")


class RedactToken(logging.Filter):
    """Keeps the token out of the log: `/?token=…` is logged as `/?token=(hidden)`."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(
                TOKEN_IN_URL.sub("token=(hidden)", a) if isinstance(a, str) else a
                for a in record.args
            )
        return True


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
    """Run the dashboard until Ctrl+C or SIGTERM."""
    args = parse_args(argv)
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
        allowed_hosts=frozenset(h.lower() for h in args.allow_host) | own_addresses(args.host),
        allow_limited_broadcast=args.allow_limited_broadcast,
    )
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
    )
    server = uvicorn.Server(config)
    logging.getLogger("uvicorn.access").addFilter(RedactToken())

    print(f"UDP Lab is running. Open this URL (it holds the access token):\n\n"
          f"    {settings.base_url}?token={settings.token}\n", flush=True)
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
