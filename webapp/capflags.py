"""The cap flags of `udplab` and `udplab agent`: one table, and the argparse types that check
them, so that a dashboard and an agent read a cap the same way.

A new cap is one `Cap` row here, then its name in the parser that takes it (`webapp/cli.py`,
`webapp/fleet/cli.py`).
"""

import argparse
import ipaddress
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any


def count(text: str) -> int:
    """A whole number, 0 or more (for argparse)."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of 0 or more")
    return value


def _at_least(text: str, least: int, words: str) -> int:
    """A whole number of at least `least`; below it, `words` say what to give."""
    value = count(text)
    if value < least:
        raise argparse.ArgumentTypeError(f"{text!r} is {words}")
    return value


def size(text: str) -> int:
    """A byte count of at least 1 KiB (for argparse)."""
    return _at_least(text, 1024, "too small: give at least 1024 bytes")


def connections(text: str) -> int:
    """A connection cap a browser can live with: at least 16 (for argparse)."""
    return _at_least(text, 16, "too few: give at least 16 connections")


def seconds(text: str) -> float:
    """A duration of more than 0 seconds (for argparse)."""
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds above 0")
    return value


def network(text: str) -> str:
    """argparse type: a CIDR network, checked."""
    try:
        return str(ipaddress.ip_network(text, strict=False))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a network: write it like 192.168.1.0/24") from None


SAME = "as the dashboard says it"  # an agent_help: the agent's --help words it the same


@dataclass(frozen=True, slots=True)
class Cap:
    """One cap flag: how argparse reads it, and what --help says of it."""

    flag: str
    help: str  # the dashboard's --help line
    type: Callable[[str], Any] | None = None  # None: an on/off switch, off by default
    default: Any = None
    metavar: str | None = None
    repeat: bool = False  # given once per value, collected in a list
    agent_help: str | None = SAME  # the agent's --help line; None: the flag alone


# Every cap flag, in the order the dashboard's --help lists its limits.
CAPS: dict[str, Cap] = {cap.flag: cap for cap in (
    Cap("--allow-limited-broadcast",
        "allow sending to 255.255.255.255, which reaches every host on every LAN this "
        "machine is attached to (refused by default)",
        agent_help="allow sending to 255.255.255.255 (refused by default)"),
    Cap("--events-per-second",
        "datagrams each worker shows one by one (rows, history) per second; beyond that a "
        "busy worker counts them and says how many it did not show (default 1000; 0 shows "
        "every one)",
        count, 1000, "N", agent_help=None),
    Cap("--allow-net",
        "a real network workers may send to, such as 192.168.1.0/24 (repeatable; loopback "
        "and the virtual LAN are always allowed)",
        network, metavar="CIDR", repeat=True,
        agent_help="a real network workers may send to, such as the lab's 192.168.1.0/24 "
        "(repeatable; loopback is always allowed)"),
    Cap("--max-multicast-ttl",
        "the TTL groups may be sent with towards a real network (default 1: no router "
        "forwards them; loopback and the lab are not capped)",
        count, 1, "N"),
    Cap("--worker-rate",
        "datagrams/s per sending worker towards real networks (default 1000)",
        float, 1000.0, "N",
        agent_help="datagrams/s per sending worker towards real networks"),
    Cap("--worker-bytes",
        "bytes/s per sending worker towards real networks (default 1000000)",
        float, 1_000_000.0, "B",
        agent_help="bytes/s per sending worker towards real networks"),
    Cap("--app-factor",
        "the whole app may send X times one worker's caps (default 10)",
        float, 10.0, "X",
        agent_help="the whole agent may send X times one worker's caps"),
    Cap("--allow-amplification",
        "let servers answer real networks with more bytes than they got"),
    Cap("--replies-per-source",
        "replies/s a server sends one source on a real network (default 100)",
        float, 100.0, "N", agent_help=None),
    Cap("--max-workers", "live workers at once (default 64)", int, 64, "N", agent_help=None),
    Cap("--max-watchers", "WebSocket watchers with the token at once (default 16)",
        int, 16, "N"),
    Cap("--max-viewers",
        "read-only viewers' WebSocket watchers at once, counted apart from the token's "
        "(default 150: a class of 100 and some spare)",
        count, 150, "N"),
    Cap("--max-watchers-per-address",
        "WebSocket watchers of both kinds from one client address (default 8; 0: no "
        "per-address limit)",
        count, 8, "N"),
    Cap("--keep-ended",
        "ended workers kept on the dashboard, the newest; older ones are cleared from it, "
        "the History page keeps them all (default 200)",
        count, 200, "N"),
    Cap("--max-token-failures",
        "wrong tokens per client address per minute; past it that address's tokens wait in "
        "a slow lane (default 10; each wrong one is answered more slowly; a right token "
        "always gets in; 0 turns this off)",
        count, 10, "N"),
    Cap("--max-token-failures-total",
        "wrong tokens per minute from all addresses together; past it every address that "
        "has not shown the right token lately waits in the slow lane (default 100; 0: no "
        "app-wide budget)",
        count, 100, "N"),
    Cap("--max-body", "largest request body, refused with 413 (default 524288, 512 KiB)",
        size, 512 * 1024, "BYTES"),
    Cap("--max-import",
        "largest history import, refused with 413 (default 33554432, 32 MiB)",
        size, 32 * 2**20, "BYTES"),
    Cap("--header-timeout",
        "seconds a connection may take to send a request's headers before it is closed "
        "(default 10)",
        seconds, 10.0, "S"),
    Cap("--max-connections",
        "open HTTP connections; past it the one idle longest is closed (default 256)",
        connections, 256, "N"),
)}


def add_caps(parser: argparse.ArgumentParser | argparse._ArgumentGroup, flags: Iterable[str],
             *, agent: bool = False) -> None:
    """Add the caps named in `flags`, in that order; `agent`: with the agent's help lines."""
    for flag in flags:
        cap = CAPS[flag]
        words = cap.help if not agent or cap.agent_help is SAME else cap.agent_help
        if cap.type is None:
            parser.add_argument(flag, action="store_true", help=words)
        elif cap.repeat:
            parser.add_argument(flag, action="append", default=[], metavar=cap.metavar,
                                type=cap.type, help=words)
        else:
            parser.add_argument(flag, type=cap.type, default=cap.default, metavar=cap.metavar,
                                help=words)
