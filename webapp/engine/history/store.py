"""The history store: every worker's spec, state changes, counters and newest events, in SQLite.

One app run is a *session*; each worker of it gets a row (a worker id that comes back after a
remove is a new row). The store is plain synchronous `sqlite3`: the recorder calls it from one
worker thread, never from the event loop (see `webapp.engine.history.recorder`).

Schema versions live in `PRAGMA user_version`. An older database is migrated in place; one
from a newer UDP Lab (or not ours) raises `HistoryUnavailable`, naming the file and the fix.

One app writes a file at a time: the store holds the file's lock for its life (see
`webapp.engine.history.file`) and a second app gets `HistoryInUse` (two writers deleted each
other's live sessions). A file that fails `PRAGMA quick_check` at start-up is moved aside as
`<file>.damaged-<time>` and a fresh one started; `notice` says so.
"""

import json
import os
import sqlite3
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from webapp.engine.history import file as historyfile
from webapp.engine.errors import EngineError

FILENAME = "history.sqlite3"

# Each entry takes the schema from version i to i + 1. Never edit one that has shipped:
# append a new step instead, so every older file can still be brought up to date.
MIGRATIONS: tuple[str, ...] = (
    # 0 -> 1: sessions, workers, their state changes and events.
    """
    CREATE TABLE sessions (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        started REAL NOT NULL,
        ended REAL
    );
    CREATE TABLE workers (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        session INTEGER NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
        worker TEXT NOT NULL,
        kind TEXT NOT NULL,
        spec TEXT NOT NULL,
        state TEXT NOT NULL,
        local TEXT,
        target TEXT,
        counters TEXT NOT NULL DEFAULT '{}',
        started REAL NOT NULL,
        ended REAL
    );
    CREATE INDEX workers_session ON workers(session);
    CREATE TABLE states (
        worker INTEGER NOT NULL REFERENCES workers(id) ON DELETE CASCADE,
        time REAL NOT NULL,
        state TEXT NOT NULL
    );
    CREATE INDEX states_worker ON states(worker);
    CREATE TABLE events (
        worker INTEGER NOT NULL REFERENCES workers(id) ON DELETE CASCADE,
        seq INTEGER NOT NULL,
        time REAL NOT NULL,
        type TEXT NOT NULL,
        message TEXT NOT NULL,
        data TEXT NOT NULL
    );
    CREATE INDEX events_worker ON events(worker, seq);
    """,
    # 1 -> 2: the per-worker cap (how many events were let go, how many are kept), events the
    # recorder itself lost, and imported sessions with a label.
    """
    ALTER TABLE workers ADD COLUMN events_dropped INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE workers ADD COLUMN events_kept INTEGER NOT NULL DEFAULT 0;
    UPDATE workers SET events_kept = (SELECT COUNT(*) FROM events WHERE events.worker = workers.id);
    ALTER TABLE sessions ADD COLUMN events_lost INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE sessions ADD COLUMN label TEXT NOT NULL DEFAULT '';
    ALTER TABLE sessions ADD COLUMN imported INTEGER NOT NULL DEFAULT 0;
    """,
    # 2 -> 3: an import is written in batches as it streams in; its session stays hidden
    # (complete = 0) until the last batch, and is swept away at start-up if the app died first.
    """
    ALTER TABLE sessions ADD COLUMN complete INTEGER NOT NULL DEFAULT 1;
    """,
)
SCHEMA_VERSION = len(MIGRATIONS)


class HistoryUnavailable(EngineError):
    """The history database cannot be used (newer schema, not a database, no permission)."""

    status = 503


class HistoryInUse(HistoryUnavailable):
    """Another UDP Lab holds the history file's lock."""


class UnknownHistory(EngineError):
    """No worker or session of the history has this id."""

    status = 404


def default_data_dir() -> Path:
    """Where UDP Lab keeps its data: `$XDG_DATA_HOME/udplab`, else `~/.local/share/udplab`."""
    base = os.environ.get("XDG_DATA_HOME", "").strip()
    root = Path(base) if base and Path(base).is_absolute() else Path.home() / ".local" / "share"
    return root / "udplab"


@dataclass
class WorkerRecord:
    """What the recorder hands the store about one worker at one flush."""

    id: int | None  # the store's id; None until the worker's row exists
    worker: str
    kind: str
    spec: dict[str, Any]
    state: str
    local: list | None
    target: list | None
    counters: dict[str, int]
    started: float
    ended: float | None
    states: list[tuple[float, str]] = field(default_factory=list)  # new since the last flush
    events: list[dict[str, Any]] = field(default_factory=list)  # new since the last flush
    dropped: int = 0  # events let go before they reached the store (cap applied early)


def _like(q: str) -> str:
    return "%" + q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


class HistoryStore:
    """The SQLite file of one data directory; use it from one thread at a time."""

    def __init__(self, path: Path, *, cap: int = 10_000):
        self.path = Path(path)
        self.cap = cap
        self.notice: str | None = None  # what start-up had to do, for people (a damaged file)
        self.migrated_from = SCHEMA_VERSION
        self._lock_fd: int | None = None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._lock_fd = historyfile.lock(self.path)
        except historyfile.LockHeld as held:
            raise HistoryInUse(
                f"The history file {self.path} is in use by another udplab (pid {held.pid}), "
                "so history is off in this one: start this one with --data-dir pointing "
                "elsewhere") from None
        except OSError as exc:
            raise HistoryUnavailable(
                f"Cannot open the history database {self.path}: {exc}. Check that the folder "
                "is writable, or start udplab with --data-dir pointing elsewhere") from None
        try:
            self.db = self._open()
        except BaseException:
            self._unlock()
            raise

    def _open(self) -> sqlite3.Connection:
        """Connect, check, migrate; a damaged file is moved aside once and a fresh one made."""
        for attempt in range(2):
            if not historyfile.writable(self.path):
                raise self._read_only()
            try:
                self.db = sqlite3.connect(self.path, check_same_thread=False,
                                          isolation_level=None)
            except (OSError, sqlite3.Error) as exc:
                raise HistoryUnavailable(
                    f"Cannot open the history database {self.path}: {exc}. Check that the "
                    "folder is writable, or start udplab with --data-dir pointing elsewhere"
                ) from None
            try:
                newer = self.db.execute("PRAGMA user_version").fetchone()[0] > SCHEMA_VERSION
                # A newer UDP Lab's file is refused untouched (by _migrate), never moved.
                damage = None if newer else historyfile.damage(self.db)
                if damage is None:
                    self._migrate()
                    self.db.execute("PRAGMA foreign_keys = ON")
                    self._sweep_imports()
                    return self.db
            except sqlite3.DatabaseError as exc:
                self.db.close()
                if historyfile.is_read_only(exc):
                    raise self._read_only() from None
                raise HistoryUnavailable(
                    f"{self.path} is not a UDP Lab history database ({exc}): move it away, "
                    "or start udplab with --data-dir pointing elsewhere") from None
            except HistoryUnavailable:
                self.db.close()
                raise
            self.db.close()
            if attempt:
                break
            aside = historyfile.move_aside(self.path)
            self.notice = (f"The history file {self.path} was damaged ({damage}): it was moved "
                           f"aside to {aside} and a fresh history started. The old sessions "
                           "are in that copy (sqlite3's .recover may save some of them)")
        raise HistoryUnavailable(f"The history database {self.path} is damaged again right "
                                 "after a fresh start: check the disk, or start udplab with "
                                 "--data-dir pointing elsewhere")

    def _read_only(self) -> HistoryUnavailable:
        return HistoryUnavailable(
            f"The history database {self.path} is read-only, so history is off: make it "
            f"writable (chmod u+w {self.path}; chattr -i if it is immutable; or remount its "
            "file system read-write), or start udplab with --data-dir pointing elsewhere")

    def _sweep_imports(self) -> None:
        # An import the app did not live to finish: its half is not a session anyone made.
        self.db.executescript(
            "BEGIN; DELETE FROM workers WHERE session IN (SELECT id FROM sessions WHERE "
            "complete = 0); DELETE FROM sessions WHERE complete = 0; COMMIT;")

    def _migrate(self) -> None:
        version = self.db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise HistoryUnavailable(
                f"The history database {self.path} has schema version {version}, newer than "
                f"this UDP Lab understands ({SCHEMA_VERSION}); it was left untouched and "
                "history is off. Upgrade udplab, or start it with --data-dir pointing to "
                "another folder (or move the file away)")
        # WAL: readers never wait for the writer, and a crash loses only what was not
        # committed. NORMAL sync is durable across a killed process (not a power cut).
        self.db.execute("PRAGMA journal_mode = WAL")
        self.db.execute("PRAGMA synchronous = NORMAL")
        for step in range(version, SCHEMA_VERSION):
            self.db.executescript(
                "BEGIN;\n" + MIGRATIONS[step] + f"\nPRAGMA user_version = {step + 1};\nCOMMIT;")
        self.migrated_from = version

    def close(self) -> None:
        """Close the file and let go of its lock; safe to call twice."""
        self.db.close()
        self._unlock()

    def _unlock(self) -> None:
        if self._lock_fd is not None:
            historyfile.unlock(self._lock_fd)
            self._lock_fd = None

    # --- writing -----------------------------------------------------------------------

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """One transaction around the block: committed when it ends, rolled back when it
        raises (cancellation included), so a flush or a batch lands whole or not at all."""
        db = self.db
        db.execute("BEGIN")
        try:
            yield db
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    def new_session(self, started: float, *, label: str = "", imported: bool = False) -> int:
        """A new session; its id."""
        cur = self.db.execute("INSERT INTO sessions (started, label, imported) VALUES (?, ?, ?)",
                              (started, label, int(imported)))
        return cur.lastrowid

    def end_session(self, session: int, ended: float) -> None:
        """Mark a session as cleanly ended."""
        self.db.execute("UPDATE sessions SET ended = ? WHERE id = ?", (ended, session))

    def write(self, session: int, records: Sequence[WorkerRecord], lost: int = 0) -> None:
        """Write one flush in one transaction: new rows get their `id` set in `records`."""
        with self._transaction() as db:
            if lost:
                db.execute("UPDATE sessions SET events_lost = events_lost + ? WHERE id = ?",
                           (lost, session))
            for r in records:
                self._write_worker(session, r)

    def _write_worker(self, session: int, r: WorkerRecord) -> None:
        db = self.db
        row = (r.worker, r.kind, json.dumps(r.spec), r.state, json.dumps(r.local),
               json.dumps(r.target), json.dumps(r.counters), r.started, r.ended)
        if r.id is None:
            r.id = db.execute(
                "INSERT INTO workers (worker, kind, spec, state, local, target, counters, "
                "started, ended, session) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (*row, session)).lastrowid
        elif not db.execute("UPDATE workers SET worker=?, kind=?, spec=?, state=?, local=?, "
                            "target=?, counters=?, started=?, ended=? WHERE id = ?",
                            (*row, r.id)).rowcount:
            return  # deleted from the history meanwhile: deleted stays deleted
        db.executemany("INSERT INTO states (worker, time, state) VALUES (?, ?, ?)",
                       [(r.id, t, s) for t, s in r.states])
        events, dropped = r.events, r.dropped
        if len(events) > self.cap:
            dropped += len(events) - self.cap
            events = events[-self.cap:]
        events = [e if isinstance(e, dict) else e.to_dict() for e in events]
        db.executemany(
            "INSERT INTO events (worker, seq, time, type, message, data) VALUES (?, ?, ?, ?, ?, ?)",
            [(r.id, e["seq"], e["time"], e["type"], e["message"], json.dumps(e)) for e in events])
        kept = db.execute("UPDATE workers SET events_kept = events_kept + ?, "
                          "events_dropped = events_dropped + ? WHERE id = ? RETURNING events_kept",
                          (len(events), dropped, r.id)).fetchone()[0]
        if kept > self.cap:
            # The newest are kept: let the oldest go and count them.
            extra = kept - self.cap
            db.execute("DELETE FROM events WHERE rowid IN (SELECT rowid FROM events WHERE "
                       "worker = ? ORDER BY seq LIMIT ?)", (r.id, extra))
            db.execute("UPDATE workers SET events_kept = events_kept - ?, "
                       "events_dropped = events_dropped + ? WHERE id = ?", (extra, extra, r.id))

    def import_session(self, label: str, workers: Iterable[WorkerRecord]) -> int:
        """Add an imported session with its workers in one go; its id."""
        session = self.begin_import(label)
        records = list(workers)
        try:
            self.import_batch(session, records)
        except BaseException:
            self.abort_import(session)
            raise
        started = min((w.started for w in records), default=time.time())
        ended = max((w.ended or w.started for w in records), default=started)
        self.end_import(session, started, ended)
        return session

    # An import streams in: `begin_import`, then `import_batch` as often as needed (each its
    # own short transaction, so the recorder writes between them), then `end_import` shows
    # the session, or `abort_import` forgets it.

    def begin_import(self, label: str) -> int:
        """A hidden session for an import about to stream in; its id."""
        return self.db.execute(
            "INSERT INTO sessions (started, label, imported, complete) VALUES (?, ?, 1, 0)",
            (time.time(), label)).lastrowid

    def import_batch(self, session: int, records: Sequence[WorkerRecord]) -> None:
        """Write one batch of an import; new rows get their `id` set in `records`."""
        with self._transaction() as db:
            if db.execute("SELECT 1 FROM sessions WHERE id = ? AND complete = 0",
                          (session,)).fetchone() is None:
                raise UnknownHistory("The import was cancelled: its session was deleted "
                                     "meanwhile. Import the file again")
            for r in records:
                self._write_worker(session, r)

    def end_import(self, session: int, started: float, ended: float, label: str | None = None
                   ) -> None:
        """Show a finished import as a session of its own."""
        self.db.execute("UPDATE sessions SET started = ?, ended = ?, complete = 1, "
                        "label = coalesce(?, label) WHERE id = ?",
                        (started, ended, label, session))

    def abort_import(self, session: int) -> None:
        """Forget an import that failed half-way."""
        with self._transaction() as db:
            db.execute("DELETE FROM workers WHERE session = ?", (session,))
            db.execute("DELETE FROM sessions WHERE id = ? AND complete = 0", (session,))

    def delete_worker(self, worker_id: int) -> None:
        """Forget one worker of the history, events and all."""
        _check_id(worker_id)
        if not self.db.execute("DELETE FROM workers WHERE id = ?", (worker_id,)).rowcount:
            raise UnknownHistory(f"There is no worker {worker_id} in the history: list them "
                                 "with GET /api/history")

    def delete_all(self, session: int | None = None, *, keep: int | None = None) -> int:
        """Forget one session (or every one); the session `keep` (this run) stays, emptied.
        How many workers went."""
        if session is not None:
            _check_id(session)
        with self._transaction() as db:
            if session is not None:
                self.session(session)
                where, args = "WHERE session = ?", (session,)
            else:
                # An import still streaming in is not a session yet: it stays.
                where, args = "WHERE session IN (SELECT id FROM sessions WHERE complete)", ()
            gone = db.execute(f"DELETE FROM workers {where}", args).rowcount
            sessions_where = "WHERE id = ?" if session is not None else "WHERE complete"
            db.execute(f"DELETE FROM sessions {sessions_where} AND id IS NOT ?",
                       (*args, keep))
        return gone

    # --- reading -----------------------------------------------------------------------

    def session(self, session: int) -> dict[str, Any]:
        """One session's row, or `UnknownHistory`."""
        _check_id(session)
        row = self.db.execute("SELECT id, started, ended, label, imported, events_lost "
                              "FROM sessions WHERE id = ? AND complete", (session,)).fetchone()
        if row is None:
            raise UnknownHistory(f"There is no session {session} in the history: list them "
                                 "with GET /api/history")
        return _session_dict(row)

    def sessions(self, q: str = "", *, current: int | None = None) -> list[dict[str, Any]]:
        """Every session, newest first, with its workers; `q` keeps the workers whose id,
        kind, spec or any event message contains it (sessions left empty are left out)."""
        where, args = "", ()
        if q:
            pattern = _like(q)
            where = ("WHERE w.worker LIKE ?1 ESCAPE '\\' OR w.kind LIKE ?1 ESCAPE '\\' "
                     "OR w.spec LIKE ?1 ESCAPE '\\' OR EXISTS (SELECT 1 FROM events e "
                     "WHERE e.worker = w.id AND e.message LIKE ?1 ESCAPE '\\')")
            args = (pattern,)
        workers: dict[int, list[dict[str, Any]]] = {}
        for row in self.db.execute(f"SELECT {WORKER_COLUMNS} FROM workers w {where} "
                                   "ORDER BY w.id", args):
            w = _worker_dict(row)
            workers.setdefault(w["session"], []).append(w)
        out = []
        for row in self.db.execute("SELECT id, started, ended, label, imported, events_lost "
                                   "FROM sessions WHERE complete ORDER BY id DESC"):
            s = _session_dict(row)
            s["current"] = s["id"] == current
            s["workers"] = workers.get(s["id"], [])
            if s["workers"] or not q:
                out.append(s)
        return out

    def worker(self, worker_id: int, *, events: bool = True) -> dict[str, Any]:
        """One worker of the history: spec, states, counters and (oldest first) events."""
        _check_id(worker_id)
        row = self.db.execute(f"SELECT {WORKER_COLUMNS} FROM workers w WHERE w.id = ?",
                              (worker_id,)).fetchone()
        if row is None:
            raise UnknownHistory(f"There is no worker {worker_id} in the history: list them "
                                 "with GET /api/history")
        w = _worker_dict(row)
        w["states"] = [{"time": t, "state": s} for t, s in self.db.execute(
            "SELECT time, state FROM states WHERE worker = ? ORDER BY rowid", (worker_id,))]
        if events:
            w["events"] = [json.loads(d) for (d,) in self.db.execute(
                "SELECT data FROM events WHERE worker = ? ORDER BY seq", (worker_id,))]
        return w

    def session_workers(self, session: int) -> list[dict[str, Any]]:
        """Every worker of one session, in full, in the order they started."""
        _check_id(session)
        self.session(session)
        ids = [i for (i,) in self.db.execute(
            "SELECT id FROM workers WHERE session = ? ORDER BY id", (session,))]
        return [self.worker(i) for i in ids]


WORKER_COLUMNS = ("w.id, w.session, w.worker, w.kind, w.spec, w.state, w.local, w.target, "
                  "w.counters, w.started, w.ended, w.events_kept, w.events_dropped")


def _worker_dict(row: tuple) -> dict[str, Any]:
    (id_, session, worker, kind, spec, state, local, target, counters, started, ended,
     kept, dropped) = row
    return {"id": id_, "session": session, "worker": worker, "kind": kind,
            "spec": json.loads(spec), "state": state, "local": json.loads(local or "null"),
            "target": json.loads(target or "null"), "counters": json.loads(counters),
            "started": started, "ended": ended, "events_kept": kept,
            "events_dropped": dropped}


def _session_dict(row: tuple) -> dict[str, Any]:
    id_, started, ended, label, imported, lost = row
    return {"id": id_, "started": started, "ended": ended, "label": label,
            "imported": bool(imported), "events_lost": lost}


def _check_id(value: int) -> None:
    """Ids SQLite cannot hold are simply not in the history (404, not a crash)."""
    if not 1 <= value <= 2**63 - 1:
        raise UnknownHistory(f"There is no {value} in the history: ids are whole numbers "
                             "from 1, as GET /api/history lists them")
