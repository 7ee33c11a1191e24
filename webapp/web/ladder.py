"""The ladder (sequence) diagram: one vertical line per endpoint, datagrams as arrows in
the order they happened, losses, timeouts and refusals as marks. Plain layout code; the
SVG is in templates/partials/_ladder.html.

Lanes are placed in percent of the diagram's width, so they spread over whatever width the
panel has, and the lane names are an HTML table above the SVG (equal columns, so each name
sits over its lane and wraps instead of being cut)."""

from collections.abc import Iterable, Mapping
from typing import Any

from webapp.engine.events import Event, host_port
from webapp.engine.udp import plain_ip

MAX_ITEMS = 30  # arrows and marks drawn at most: the diagram stays readable and bounded
MAX_LANES = 6  # endpoints drawn at most: older items that need more lanes are left out
ROW = 36  # px between rows: room for a label above each arrow, clear of the row above
TOP = 14
# The drawn mark (✕ or ●) is added by the template: these are the words only.
MARKS = {"dropped": "pretended to drop", "timeout": "timeout", "gave-up": "gave up",
         "rejected": "refused", "error": "error"}


def _key(address) -> str:
    host, port = address[0], address[1]
    # A socket bound to every address is seen by its peers under one of them: on loopback
    # the port alone names the endpoint.
    # A dual-stack socket sees an IPv4 peer as ::ffff:a.b.c.d: one endpoint, one column.
    plain = plain_ip(str(host))
    if plain is not None and plain.version == 4:
        host = str(plain)
    return str(port) if host in ("0.0.0.0", "::", "127.0.0.1", "::1") else host_port(
        (host, port))


def _shown(address) -> str:
    host, port = address[0], address[1]
    return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"


def _newest(items: list) -> list:
    """The newest items that fit in MAX_ITEMS rows and MAX_LANES lanes, oldest first: after
    many experiments the newest exchange is drawn readably instead of in a crowd of lanes."""
    kept: list = []
    lanes: set[str] = set()
    for item in reversed(items):
        wanted = lanes | {item[1], item[2]}
        if len(kept) == MAX_ITEMS or len(wanted) > MAX_LANES:
            break
        lanes = wanted
        kept.append(item)
    return kept[::-1]


def layout(events: Iterable[Event], kinds: Mapping[str, str]) -> dict[str, Any]:
    """Lanes, arrows and marks for the newest datagram events; `kinds` maps worker ids to
    their kind (for colours). Positions are percent of the width, rows are px."""
    events = list(events)
    ours = {_key(e.local) for e in events if getattr(e, "local", None) and e.type == "sent"}
    items = []
    home: dict[str, str] = {}  # worker id -> its endpoint, for marks without addresses
    shown: dict[str, str] = {}  # endpoint key -> the address to print under its name
    for e in events:
        local, peer = getattr(e, "local", None), getattr(e, "peer", None)
        if local:
            home[e.worker] = _key(local)
            shown[_key(local)] = _shown(local)  # its own address, as it was bound
        if peer:
            shown.setdefault(_key(peer), _shown(peer))
        if e.type in ("timeout", "gave-up") and e.worker in home:
            items.append(("mark", home[e.worker], home[e.worker], e))
        elif e.type == "sent" and local and peer:
            items.append(("arrow", _key(local), _key(peer), e))
        elif e.type == "received" and local and peer and _key(peer) not in ours:
            items.append(("arrow", _key(peer), _key(local), e))  # from a sender not ours
        elif e.type in MARKS and (local or peer):
            where = _key(local) if local else _key(peer)
            items.append(("mark", where, where, e))
        elif e.type == "reply" and not e.expected:
            items.append(("mark", _key(local) if local else _key(peer), _key(peer), e))
    items = _newest(items)
    order: list[str] = []
    workers: dict[str, str] = {}
    for _, start, end, e in items:
        for key in (start, end):
            if key not in order:
                order.append(key)
        local = getattr(e, "local", None)
        if local and _key(local) in order:
            workers.setdefault(_key(local), e.worker)
    lanes = len(order)
    x = {key: 100 * (number + 0.5) / max(1, lanes) for number, key in enumerate(order)}
    last = order[-1] if lanes > 1 else None
    drawn = []
    for row, (what, start, end, e) in enumerate(items):
        kind = kinds.get(e.worker, "")
        style = ("impostor" if kind == "spoofer" else "unexpected" if e.type == "reply"
                 else "lost" if e.type == "dropped" else e.type)
        drawn.append({
            "what": what, "x1": round(x[start], 3), "x2": round(x[end], 3),
            "y": TOP + ROW * row + ROW // 2, "style": style, "seq": e.seq,
            # a mark on the rightmost lane reads leftwards, so it stays inside the diagram
            "anchor": "end" if start == last else "start",
            "label": MARKS.get(e.type, "impostor reply accepted!" if e.type == "reply"
                               else getattr(e, "text", "")[:28]),
            "size": getattr(e, "size", None), "worker": e.worker,
        })
    columns = [{"key": key, "x": round(x[key], 3), "label": shown.get(key, key),
                "worker": workers.get(key)} for key in order]
    return {"columns": columns, "items": drawn, "lanes": lanes,
            "height": TOP + ROW * max(1, len(drawn)) + 8}
