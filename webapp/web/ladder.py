"""The ladder (sequence) diagram: one vertical line per endpoint, datagrams as arrows in
the order they happened, losses, timeouts and refusals as marks. Plain layout code; the
SVG is in templates/partials/_ladder.html."""

from collections.abc import Iterable, Mapping
from typing import Any

from webapp.engine.events import Event, host_port
from webapp.engine.udp import plain_ip

MAX_ITEMS = 30  # arrows and marks drawn at most: the diagram stays readable and bounded
COLUMN = 170
ROW = 24
TOP = 56
MARKS = {"dropped": "✕ pretended to drop", "timeout": "timeout", "gave-up": "gave up",
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


def layout(events: Iterable[Event], kinds: Mapping[str, str]) -> dict[str, Any]:
    """Columns, arrows and marks for the newest datagram events; `kinds` maps worker ids to
    their kind (for colours)."""
    events = list(events)
    ours = {_key(e.local) for e in events if getattr(e, "local", None) and e.type == "sent"}
    items = []
    home: dict[str, str] = {}  # worker id -> its endpoint, for marks without addresses
    for e in events:
        local, peer = getattr(e, "local", None), getattr(e, "peer", None)
        if local:
            home[e.worker] = _key(local)
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
    items = items[-MAX_ITEMS:]
    columns: dict[str, dict[str, Any]] = {}
    for _, start, end, e in items:
        for key in (start, end):
            if key not in columns:
                columns[key] = {"key": key, "x": 80 + COLUMN * len(columns), "label": key,
                                "worker": None}
        local = getattr(e, "local", None)
        if local and _key(local) in columns and not columns[_key(local)]["worker"]:
            name = e.worker
            columns[_key(local)]["worker"] = name if len(name) <= 20 else "…" + name[-19:]
    drawn = []
    for row, (what, start, end, e) in enumerate(items):
        kind = kinds.get(e.worker, "")
        style = ("impostor" if kind == "spoofer" else "unexpected" if e.type == "reply"
                 else "lost" if e.type == "dropped" else e.type)
        drawn.append({
            "what": what, "x1": columns[start]["x"], "x2": columns[end]["x"],
            "y": TOP + ROW * row, "style": style, "seq": e.seq,
            "label": MARKS.get(e.type, "impostor reply accepted!" if e.type == "reply"
                               else getattr(e, "text", "")[:28]),
            "size": getattr(e, "size", None), "worker": e.worker,
        })
    return {"columns": list(columns.values()), "items": drawn,
            "width": 80 + COLUMN * max(1, len(columns)) + 60,  # room for the last marks
            "height": TOP + ROW * max(1, len(drawn)) + 10}
