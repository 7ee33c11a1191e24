"""Exports of the history (JSON Lines, CSV, pcapng) and the import of a JSON Lines export.

Every function takes workers as `HistoryStore.worker()` gives them (a dict with `events`), so
the same code serves one worker and a whole session.

JSON Lines: a `udplab-export` header line, then for each worker a `udplab-worker` line (its
spec, states and counters) followed by its events, one per line, with the same fields as the
API. pcapng: each datagram event becomes an IPv4 or IPv6 + UDP packet built with dpkt, one
capture interface per worker.
"""

import csv
import io
import json
import re
import time
from collections.abc import Iterable, Iterator
from datetime import datetime, timezone
from typing import Any

from webapp.engine.errors import BadSpec
from webapp.engine.history import WorkerRecord

FORMAT_VERSION = 1
# Datagram events and which way the datagram went: True when the worker sent it.
DATAGRAM_TYPES = {"sent": True, "received": False, "dropped": False, "reply": False,
                  "rejected": False}
CSV_COLUMNS = ("history_id", "worker", "seq", "time", "iso_time", "type", "message",
               "local_host", "local_port", "peer_host", "peer_port", "size", "text", "extra")
_BASE_FIELDS = {"seq", "time", "worker", "type", "message", "local", "peer", "size", "text"}
_ESCAPE = re.compile(rb"\\x([0-9a-f]{2})")


def _worker_header(w: dict[str, Any]) -> dict[str, Any]:
    head = {k: v for k, v in w.items() if k != "events"}
    return {"type": "udplab-worker", **head}


def jsonl(workers: Iterable[dict[str, Any]], session: dict[str, Any] | None = None
          ) -> Iterator[str]:
    """The export as JSON Lines, one line (with its newline) at a time."""
    yield json.dumps({"type": "udplab-export", "version": FORMAT_VERSION,
                      "exported": time.time(), "session": session}) + "\n"
    for w in workers:
        yield json.dumps(_worker_header(w)) + "\n"
        for event in w["events"]:
            yield json.dumps(event) + "\n"


def _address(a: Any) -> tuple[str, str]:
    return (str(a[0]), str(a[1])) if a else ("", "")


def to_csv(workers: Iterable[dict[str, Any]]) -> str:
    """Every event as a CSV row (columns `CSV_COLUMNS`); fields beyond the common ones go to
    `extra` as JSON."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    for w in workers:
        for e in w["events"]:
            extra = {k: v for k, v in e.items() if k not in _BASE_FIELDS}
            iso = datetime.fromtimestamp(e["time"], timezone.utc).isoformat(
                timespec="microseconds")
            writer.writerow([w["id"], e["worker"], e["seq"], repr(e["time"]), iso, e["type"],
                             e["message"], *_address(e.get("local")), *_address(e.get("peer")),
                             e.get("size", ""), e.get("text", ""),
                             json.dumps(extra) if extra else ""])
    return out.getvalue()


# --- pcapng ----------------------------------------------------------------------------

def payload_of(event: dict[str, Any]) -> tuple[bytes, bool]:
    """The datagram's bytes as far as the event tells them, and whether they are exact.

    Events keep `text`, the payload as `payload.show()` printed it: UTF-8, `\\xNN` for bytes
    that are not, cut with `…` past 200 characters. That is undone here; when the result is
    not `size` bytes long it is a best effort (a truncated capture)."""
    text, size = event.get("text", ""), event.get("size", 0)
    plain = text.encode("utf-8")
    if len(plain) == size:
        return plain, True
    cut = text.endswith("…")
    raw = _ESCAPE.sub(lambda m: bytes([int(m.group(1), 16)]),
                      (text[:-1] if cut else text).encode("utf-8"))
    if len(raw) == size:
        return raw, True
    return raw[:size], False


def to_pcapng(workers: list[dict[str, Any]]) -> bytes:
    """The datagram events of `workers` as a pcapng capture (see `webapp.engine.pcapng`,
    imported here on first use: dpkt costs memory the idle app need not hold)."""
    from webapp.engine import pcapng
    return pcapng.to_pcapng(workers)


# --- import ----------------------------------------------------------------------------

def _refuse(line: int, why: str) -> BadSpec:
    return BadSpec(f"Line {line} of the import is not a UDP Lab JSON Lines export: {why}. "
                   "Import a file downloaded from the history's jsonl links", field="body")


def parse_jsonl(text: str) -> tuple[dict[str, Any] | None, list[WorkerRecord]]:
    """A JSON Lines export back into worker records (and its header's session, if any);
    `BadSpec` names the first bad line."""
    session, records = None, []
    implicit: dict[str, WorkerRecord] = {}
    current: WorkerRecord | None = None
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except ValueError as exc:
            raise _refuse(number, f"it is not JSON ({exc.msg})") from None
        if not isinstance(item, dict) or not isinstance(item.get("type"), str):
            raise _refuse(number, "each line must be a JSON object with a 'type'")
        kind = item["type"]
        if kind == "udplab-export":
            if item.get("version", FORMAT_VERSION) > FORMAT_VERSION:
                raise _refuse(number, f"it is format version {item['version']}, newer than "
                              f"this UDP Lab reads ({FORMAT_VERSION})")
            session = item.get("session")
        elif kind == "udplab-worker":
            current = _record(number, item)
            records.append(current)
        else:
            event = _event(number, item)
            if current is None or current.worker != event["worker"]:
                current = implicit.get(event["worker"])
                if current is None:  # bare events: a worker known only by its id
                    current = implicit[event["worker"]] = WorkerRecord(
                        id=None, worker=event["worker"], kind="unknown", spec={},
                        state="finished", local=event.get("local"), target=None, counters={},
                        started=event["time"], ended=None)
                    records.append(current)
            current.events.append(event)
            current.ended = max(current.ended or 0, event["time"]) \
                if current.kind == "unknown" else current.ended
    if not records:
        raise BadSpec("The import holds no workers and no events: import a file downloaded "
                      "from the history's jsonl links", field="body")
    for record in records:
        record.events.sort(key=lambda e: e["seq"])
    return session, records


def _record(number: int, item: dict[str, Any]) -> WorkerRecord:
    try:
        states = [(float(s["time"]), str(s["state"])) for s in item.get("states", [])]
        return WorkerRecord(
            id=None, worker=str(item["worker"]), kind=str(item["kind"]),
            spec=dict(item.get("spec") or {}), state=str(item.get("state", "finished")),
            local=item.get("local"), target=item.get("target"),
            counters={str(k): int(v) for k, v in (item.get("counters") or {}).items()},
            started=float(item["started"]), ended=item.get("ended"), states=states,
            dropped=int(item.get("events_dropped", 0)))
    except (KeyError, TypeError, ValueError) as exc:
        raise _refuse(number, f"a worker line lacks or mangles {exc}") from None


def _event(number: int, item: dict[str, Any]) -> dict[str, Any]:
    for name, kinds in (("seq", int), ("time", (int, float)), ("worker", str),
                        ("message", str)):
        if not isinstance(item.get(name), kinds) or isinstance(item.get(name), bool):
            raise _refuse(number, f"an event needs '{name}'")
    return item
