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
import time
from collections.abc import Iterable, Iterator
from datetime import datetime, timezone
from typing import Any

from webapp.engine.errors import BadSpec
from webapp.engine.history.store import WorkerRecord
from webapp.engine.specs import _name as check_name  # the rule of live names, one place

FORMAT_VERSION = 1
CSV_COLUMNS = ("history_id", "worker", "seq", "time", "iso_time", "type", "message",
               "local_host", "local_port", "peer_host", "peer_port", "size", "text", "extra")
_BASE_FIELDS = {"seq", "time", "worker", "type", "message", "local", "peer", "size", "text"}


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

def to_pcapng(workers: list[dict[str, Any]]) -> bytes:
    """The datagram events of `workers` as a pcapng capture (see `webapp.engine.history.pcapng`,
    imported here on first use: dpkt costs memory the idle app need not hold)."""
    from webapp.engine.history import pcapng
    return pcapng.to_pcapng(workers)


# --- import ----------------------------------------------------------------------------

# Limits of one import, so a file (or a hostile one) cannot fill the memory or the disk. The
# events of one worker are not a limit: the store keeps the newest `cap` and counts the rest,
# as it does for a live worker.
MAX_LINE = 1024 * 1024  # bytes of one line: a worker line carries its spec (≤ 64 KiB message)
MAX_LINES = 1_000_000
MAX_WORKERS = 10_000
_SHOWN = 40  # characters of a bad name an error message repeats


def _refuse(line: int, why: str) -> BadSpec:
    return BadSpec(f"Line {line} of the import is not a UDP Lab JSON Lines export: {why}. "
                   "Import a file downloaded from the history's jsonl links", field="body")


def _worker_name(line: int, value: Any) -> str:
    """An imported worker name, held to the rule of live names (`specs`), or `BadSpec`."""
    try:
        if check_name("worker name", value) is not None:
            return value
        why = "a worker line or an event has no 'worker' name"
    except BadSpec:
        why = _rule_words(value)
    raise _refuse(line, why)


def _rule_words(value: Any) -> str:
    """What the live rule says about `value`, repeating at most `_SHOWN` characters of it (an
    8 MiB name is not echoed back whole)."""
    if isinstance(value, str) and len(value) > _SHOWN:
        value = f"{value[:_SHOWN]}… ({len(value)} characters)"  # '…' fails the rule as well
    try:
        check_name("worker name", value)
    except BadSpec as exc:
        return exc.message[0].lower() + exc.message[1:]
    return f"the worker name {value!r} is not usable"


class ImportReader:
    """Reads a JSON Lines export one line at a time, without I/O: `feed(line)` each line (bytes,
    without its newline), `take()` the worker records with news since the last take (write
    them, then empty their `events`, `states` and `dropped`), `finish()` at the end. Only the
    worker being read and workers known by bare events are held between takes."""

    def __init__(self, *, max_lines: int = MAX_LINES, max_workers: int = MAX_WORKERS):
        self.max_lines = max_lines
        self.max_workers = max_workers
        self.session: dict[str, Any] | None = None  # the export's own session: id, started
        self.lines = 0
        self.workers = 0
        self.started: float | None = None
        self.ended: float | None = None
        self._current: WorkerRecord | None = None
        self._implicit: dict[str, WorkerRecord] = {}
        self._dirty: dict[int, WorkerRecord] = {}

    def feed(self, raw: bytes) -> None:
        """One line of the file; `BadSpec` names it if it is not what an export holds."""
        self.lines += 1
        number = self.lines
        if number > self.max_lines:
            raise BadSpec(f"The import has more than {self.max_lines} lines, the most one "
                          "import takes: export fewer workers at a time", field="body")
        if len(raw) > MAX_LINE:
            raise _refuse(number, f"it is longer than {MAX_LINE // 1024} KiB")
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise _refuse(number, "it is not UTF-8") from None
        if not line.strip():
            return
        try:
            item = json.loads(line)
        except (ValueError, RecursionError) as exc:
            raise _refuse(number, f"it is not JSON ({getattr(exc, 'msg', 'nested too deep')})"
                          ) from None
        if not isinstance(item, dict) or not isinstance(item.get("type"), str):
            raise _refuse(number, "each line must be a JSON object with a 'type'")
        kind = item["type"]
        if kind == "udplab-export":
            self._header(number, item)
        elif kind == "udplab-worker":
            self._current = self._add(number, _record(number, item))
        else:
            self._event(number, _event(number, item))

    def _header(self, number: int, item: dict[str, Any]) -> None:
        version = item.get("version", FORMAT_VERSION)
        if not isinstance(version, int) or isinstance(version, bool):
            raise _refuse(number, "its 'version' must be a whole number")
        if version > FORMAT_VERSION:
            raise _refuse(number, f"it is format version {version}, newer than this UDP Lab "
                          f"reads ({FORMAT_VERSION})")
        session = item.get("session")
        if isinstance(session, dict):  # only what the label shows, and only if it is sane
            self.session = {}
            for key, check in (("id", _count), ("started", _number)):
                try:
                    self.session[key] = check(session.get(key), key)
                except ValueError:
                    pass

    def _add(self, number: int, record: WorkerRecord) -> WorkerRecord:
        self.workers += 1
        if self.workers > self.max_workers:
            raise _refuse(number, f"it holds more than {self.max_workers} workers, the most "
                          "one import takes; export fewer at a time")
        self._dirty[id(record)] = record
        return record

    def _event(self, number: int, event: dict[str, Any]) -> None:
        current = self._current
        if current is None or current.worker != event["worker"]:
            current = self._implicit.get(event["worker"])
            if current is None:  # bare events: a worker known only by its id
                current = self._implicit[event["worker"]] = self._add(number, WorkerRecord(
                    id=None, worker=event["worker"], kind="unknown", spec={},
                    state="finished", local=event.get("local"), target=None, counters={},
                    started=event["time"], ended=None))
            self._current = current
        current.events.append(event)
        if current.kind == "unknown":
            current.ended = max(current.ended or 0, event["time"])
        self._dirty[id(current)] = current

    def take(self) -> list[WorkerRecord]:
        """The records with news since the last take, their events in `seq` order."""
        records = list(self._dirty.values())
        self._dirty.clear()
        for r in records:
            r.events.sort(key=lambda e: e["seq"])
            self.started = r.started if self.started is None else min(self.started, r.started)
            end = r.ended or r.started
            self.ended = end if self.ended is None else max(self.ended, end)
        return records

    def finish(self) -> None:
        """After the last line: `BadSpec` if the file held nothing to import."""
        if not self.workers:
            raise BadSpec("The import holds no workers and no events: import a file "
                          "downloaded from the history's jsonl links", field="body")


def parse_jsonl(text: str) -> tuple[dict[str, Any] | None, list[WorkerRecord]]:
    """A whole JSON Lines export back into worker records (and its header's session, if
    any); `BadSpec` names the first bad line. The app streams with `ImportReader` instead."""
    reader = ImportReader()
    for line in text.encode("utf-8").split(b"\n"):
        reader.feed(line.rstrip(b"\r"))
    reader.finish()
    return reader.session, reader.take()


# Times a datetime can show (up to the year 9999) and whole numbers SQLite can hold.
_MAX_TIME = 253_402_300_799.0
_MAX_INT = 2**63 - 1


def _number(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) \
            or not 0 <= value <= _MAX_TIME:
        raise ValueError(f"{what} (a time in Unix seconds)")
    return float(value)


def _count(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= _MAX_INT:
        raise ValueError(f"{what} (a whole number from 0)")
    return value


def _record(number: int, item: dict[str, Any]) -> WorkerRecord:
    name = _worker_name(number, item.get("worker"))
    try:
        states = [(_number(s["time"], "'time' of a state"), str(s["state"]))
                  for s in item.get("states", [])]
        ended = item.get("ended")
        return WorkerRecord(
            id=None, worker=name, kind=str(item["kind"]),
            spec=dict(item.get("spec") or {}), state=str(item.get("state", "finished")),
            local=item.get("local"), target=item.get("target"),
            counters={str(k): _count(v, f"counter {str(k)[:_SHOWN]!r}")
                      for k, v in (item.get("counters") or {}).items()},
            started=_number(item["started"], "'started'"),
            ended=None if ended is None else _number(ended, "'ended'"), states=states,
            dropped=_count(item.get("events_dropped", 0), "'events_dropped'"))
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise _refuse(number, f"a worker line lacks or mangles {exc}") from None


def _event(number: int, item: dict[str, Any]) -> dict[str, Any]:
    for name, kinds in (("seq", int), ("time", (int, float)), ("worker", str),
                        ("message", str)):
        if not isinstance(item.get(name), kinds) or isinstance(item.get(name), bool):
            raise _refuse(number, f"an event needs '{name}'")
    try:
        _count(item["seq"], "'seq'")
        _number(item["time"], "'time'")
    except ValueError as exc:
        raise _refuse(number, f"an event mangles {exc}") from None
    _worker_name(number, item["worker"])
    return item
