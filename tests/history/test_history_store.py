"""The history store without a web server: migrations, the unknown-version refusal, the cap
per worker, search and delete; the exports of synthetic events (IPv6, cut payloads)."""

import json
import sqlite3

import pytest

from history_helpers import tshark_fields
from webapp.engine.history import export
from webapp.engine.history import (
    FILENAME, SCHEMA_VERSION, HistoryStore, HistoryUnavailable, UnknownHistory, WorkerRecord,
)

# The schema of version 1 as UDP Lab 0.1 wrote it, spelled out (not taken from MIGRATIONS) so
# the test keeps describing the old files even if someone edits the migrations by mistake.
V1 = """
CREATE TABLE sessions (id INTEGER PRIMARY KEY AUTOINCREMENT, started REAL NOT NULL, ended REAL);
CREATE TABLE workers (id INTEGER PRIMARY KEY AUTOINCREMENT,
    session INTEGER NOT NULL REFERENCES sessions(id) ON DELETE CASCADE, worker TEXT NOT NULL,
    kind TEXT NOT NULL, spec TEXT NOT NULL, state TEXT NOT NULL, local TEXT, target TEXT,
    counters TEXT NOT NULL DEFAULT '{}', started REAL NOT NULL, ended REAL);
CREATE INDEX workers_session ON workers(session);
CREATE TABLE states (worker INTEGER NOT NULL REFERENCES workers(id) ON DELETE CASCADE,
    time REAL NOT NULL, state TEXT NOT NULL);
CREATE INDEX states_worker ON states(worker);
CREATE TABLE events (worker INTEGER NOT NULL REFERENCES workers(id) ON DELETE CASCADE,
    seq INTEGER NOT NULL, time REAL NOT NULL, type TEXT NOT NULL, message TEXT NOT NULL,
    data TEXT NOT NULL);
CREATE INDEX events_worker ON events(worker, seq);
PRAGMA user_version = 1;
"""


def event(seq: int, type_: str = "sent", **fields) -> dict:
    base = {"type": type_, "seq": seq, "time": 1_700_000_000 + seq / 10, "worker": "client-1",
            "message": f"event {seq}"}
    return {**base, **fields}


def record(events: list[dict], **fields) -> WorkerRecord:
    base = dict(id=None, worker="client-1", kind="client", spec={"kind": "client", "port": 1060},
                state="finished", local=["127.0.0.1", 5000], target=["127.0.0.1", 1060],
                counters={"sent": len(events)}, started=1_700_000_000.0, ended=1_700_000_100.0,
                events=events)
    return WorkerRecord(**{**base, **fields})


def test_an_older_database_is_migrated_and_keeps_its_history(tmp_path):
    path = tmp_path / FILENAME
    db = sqlite3.connect(path)
    db.executescript(V1)
    db.execute("INSERT INTO sessions (started, ended) VALUES (1.0, 2.0)")
    db.execute("INSERT INTO workers (session, worker, kind, spec, state, started) "
               "VALUES (1, 'server-1', 'server', '{\"kind\": \"server\"}', 'stopped', 1.0)")
    for seq in (1, 2):
        db.execute("INSERT INTO events VALUES (1, ?, 1.5, 'listening', 'Listening', ?)",
                   (seq, json.dumps(event(seq, "listening", worker="server-1"))))
    db.commit()
    db.close()

    store = HistoryStore(path)
    assert store.migrated_from == 1
    assert store.db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    worker = store.worker(1)
    assert worker["worker"] == "server-1" and [e["seq"] for e in worker["events"]] == [1, 2]
    assert worker["events_kept"] == 2 and worker["events_dropped"] == 0
    assert store.sessions()[0]["label"] == ""
    store.close()


def test_a_newer_database_is_refused_untouched_with_the_file_and_the_fix(tmp_path):
    path = tmp_path / FILENAME
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE future (x)")
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 7}")
    db.commit()
    db.close()
    before = path.read_bytes()
    with pytest.raises(HistoryUnavailable) as refused:
        HistoryStore(path)
    assert str(path) in refused.value.message
    assert "--data-dir" in refused.value.message and "newer" in refused.value.message
    assert path.read_bytes() == before


def test_a_file_that_is_no_database_is_refused(tmp_path):
    path = tmp_path / FILENAME
    path.write_bytes(b"not sqlite at all" * 100)
    with pytest.raises(HistoryUnavailable, match="not a UDP Lab history database"):
        HistoryStore(path)


def test_the_cap_keeps_the_newest_events_and_counts_the_rest(tmp_path):
    store = HistoryStore(tmp_path / FILENAME, cap=5)
    session = store.new_session(1.0)
    r = record([event(s) for s in range(1, 4)])
    store.write(session, [r])
    r.events = [event(s) for s in range(4, 9)]  # a later flush: 8 in all
    store.write(session, [r])
    r.events = [event(s) for s in range(9, 21)]  # one flush larger than the cap
    store.write(session, [r])
    worker = store.worker(r.id)
    assert [e["seq"] for e in worker["events"]] == [16, 17, 18, 19, 20]
    assert worker["events_dropped"] == 15 and worker["events_kept"] == 5


def test_search_and_delete(tmp_path):
    store = HistoryStore(tmp_path / FILENAME)
    session = store.new_session(1.0)
    a = record([event(1, message="The server replied 'FAKE'")])
    b = record([event(1)], worker="server-9", kind="server", spec={"kind": "server", "port": 4242})
    store.write(session, [a, b])
    assert [w["worker"] for w in store.sessions("FAKE")[0]["workers"]] == ["client-1"]
    assert [w["worker"] for w in store.sessions("4242")[0]["workers"]] == ["server-9"]
    assert [w["worker"] for w in store.sessions("server-9")[0]["workers"]] == ["server-9"]
    assert store.sessions("100%_nothing") == []
    store.delete_worker(a.id)
    with pytest.raises(UnknownHistory):
        store.worker(a.id)
    a.events = [event(2)]
    store.write(session, [a])  # a live worker deleted from the history stays deleted
    with pytest.raises(UnknownHistory):
        store.worker(a.id)
    assert store.delete_all(keep=session) == 1
    assert [s["id"] for s in store.sessions()] == [session]


class Cancelled(BaseException):
    """Stands for a task's cancellation: not an Exception, so only a `BaseException` rollback
    catches it."""


class CancelsWhenRead:
    """An event whose contents cannot be had: writing it fails half-way through a worker."""

    def to_dict(self) -> dict:
        raise Cancelled


def workers_and_lost(store: HistoryStore) -> tuple[int, int, int, int]:
    """Rows of every table a write touches, and the events lost of every session."""
    db = store.db
    return (db.execute("SELECT COUNT(*) FROM workers").fetchone()[0],
            db.execute("SELECT COUNT(*) FROM states").fetchone()[0],
            db.execute("SELECT COUNT(*) FROM events").fetchone()[0],
            db.execute("SELECT COALESCE(SUM(events_lost), 0) FROM sessions").fetchone()[0])


def test_a_flush_that_fails_half_way_leaves_nothing_and_the_next_one_is_written(tmp_path):
    store = HistoryStore(tmp_path / FILENAME)
    session = store.new_session(1.0)
    store.write(session, [record([event(1)], worker="server-1")])
    before = workers_and_lost(store)
    good = record([event(1), event(2)], states=[(1.0, "running")])
    no_seq = record([{"type": "sent", "time": 1.0, "message": "no seq"}], worker="client-2")
    with pytest.raises(KeyError):
        store.write(session, [good, no_seq], lost=7)
    assert workers_and_lost(store) == before  # the first record and the lost count too
    with pytest.raises(Cancelled):
        store.write(session, [record([event(1)], worker="client-3"),
                              record([CancelsWhenRead()], worker="client-4")], lost=2)
    assert workers_and_lost(store) == before
    assert not store.db.in_transaction
    later = record([event(1)], worker="client-5")
    store.write(session, [later], lost=1)  # no transaction was left open to refuse a BEGIN
    assert store.worker(later.id)["events"][0]["seq"] == 1
    assert workers_and_lost(store) == (before[0] + 1, before[1], before[2] + 1, 1)


def test_an_import_batch_that_fails_half_way_leaves_nothing_of_it(tmp_path):
    store = HistoryStore(tmp_path / FILENAME)
    session = store.begin_import("shared")
    with pytest.raises(Cancelled):
        store.import_batch(session, [record([event(1)]),
                                     record([CancelsWhenRead()], worker="client-2")])
    assert workers_and_lost(store) == (0, 0, 0, 0) and not store.db.in_transaction
    kept = record([event(1)])
    store.import_batch(session, [kept])  # the batch sent again is written whole
    store.end_import(session, 1.0, 2.0)
    assert [w["worker"] for w in store.sessions()[0]["workers"]] == ["client-1"]
    with pytest.raises(UnknownHistory):  # refused inside the transaction: it ends too
        store.delete_all(session + 99)
    assert not store.db.in_transaction and store.delete_all() == 1


def test_jsonl_import_round_trip(tmp_path):
    store = HistoryStore(tmp_path / FILENAME)
    session = store.new_session(1.0)
    r = record([event(1, local=["127.0.0.1", 5000], peer=["127.0.0.1", 1060], size=2,
                      text="hi"), event(2, "timeout", delay=0.1, attempt=1)])
    store.write(session, [r])
    original = store.worker(r.id)
    text = "".join(export.jsonl([original], store.session(session)))
    header, records = export.parse_jsonl(text)
    assert header["id"] == session
    imported = store.worker(store.import_session("shared", records) and records[0].id)
    assert imported["events"] == original["events"]
    assert imported["spec"] == original["spec"] and imported["states"] == original["states"]
    with pytest.raises(Exception, match="Line 2"):
        export.parse_jsonl('{"type": "udplab-export"}\nnot json\n')


def test_pcapng_of_ipv6_binary_and_cut_payloads(tmp_path, tshark):
    events = [
        event(1, "sent", local=["::1", 5000], peer=["::1", 1060], size=3, text="a\\xffb"),
        event(2, "received", local=["127.0.0.1", 1060], peer=["127.0.0.2", 6000], size=300,
              text="x" * 200 + "…"),
        event(3, "timeout", delay=0.1, attempt=1),
    ]
    path = tmp_path / "c.pcapng"
    path.write_bytes(export.to_pcapng([{"id": 1, "worker": "w", "kind": "client",
                                        "events": events}]))
    rows = tshark_fields(tshark, path, "ipv6.src", "ipv6.dst", "ip.src", "ip.dst",
                         "udp.srcport", "udp.dstport", "udp.length", "udp.payload",
                         "frame.len", "frame.cap_len")
    assert rows[0][:2] == ["::1", "::1"] and rows[0][4:8] == ["5000", "1060", "11", "61ff62"]
    assert rows[1][2:4] == ["127.0.0.2", "127.0.0.1"] and rows[1][4:7] == ["6000", "1060", "308"]
    assert rows[1][8:] == ["328", "228"]  # the real length, and the 200 bytes known of it
    assert len(rows) == 2
