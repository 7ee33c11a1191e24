"""The history file shared, damaged or read-only: a second app on one file runs with history
off and says who holds it; a damaged file is moved aside at start-up and a fresh one started;
a read-only file is called read-only, with the fix."""

import os
import shutil
import sqlite3
import time
from pathlib import Path

import pytest

from history_helpers import exchange, find, start_with_data, visit_and_stop
from live import start_server, stop_and_check
from webapp.engine.history import FILENAME, HistoryInUse, HistoryStore, WorkerRecord


def test_a_second_store_on_one_file_is_refused_with_the_holders_pid(tmp_path):
    first = HistoryStore(tmp_path / FILENAME)
    try:
        with pytest.raises(HistoryInUse, match=rf"in use by another udplab \(pid {os.getpid()}\)"):
            HistoryStore(tmp_path / FILENAME)
    finally:
        first.close()
    HistoryStore(tmp_path / FILENAME).close()  # the lock goes with the store


def test_a_second_app_on_one_history_file_runs_with_history_off(tmp_path, data_dir):
    first = start_with_data(tmp_path / "first", data_dir)
    second = None
    try:
        second = start_with_data(tmp_path / "second", data_dir)
        with first.client() as a, second.client() as b:
            _, client = exchange(a, count=1)
            b_worker = b.start(kind="server", host="127.0.0.1", port=0)  # the rest works
            refused = b.get("/api/history")
            page = b.get("/history")
            # The finding: B's "delete all" removed A's live session; now B cannot touch it.
            b_delete = b.delete("/api/history")
            kept = find(a.get("/api/history").json(), client["id"])
            a_delete = a.delete("/api/history")
            b.stop_started()
    finally:
        if second is not None:
            stop_and_check(second)
        stop_and_check(first)
    holder = f"in use by another udplab (pid {first.proc.pid})"
    assert refused.status_code == 503 and holder in refused.json()["error"]
    assert str(data_dir / FILENAME) in refused.json()["error"]
    assert "--data-dir" in refused.json()["error"]
    assert page.status_code == 503 and holder in page.text
    assert holder in second.log() and "history is off" in second.log()
    assert b_delete.status_code == 503 and kept["worker"] == client["id"]
    assert a_delete.status_code == 200 and b_worker["state"] == "running"


def _zero_a_middle_page(path: Path) -> int:
    """Overwrite one page in the middle of a SQLite file with zeros; its number."""
    with sqlite3.connect(path) as db:
        size = db.execute("PRAGMA page_size").fetchone()[0]
    db.close()
    pages = path.stat().st_size // size
    middle = pages // 2
    with path.open("r+b") as f:
        f.seek(middle * size)
        f.write(bytes(size))
    return middle


def test_a_damaged_file_is_moved_aside_and_a_fresh_history_started(tmp_path, data_dir):
    first = start_with_data(tmp_path / "first", data_dir)
    with first.client() as http:
        for _ in range(3):  # enough rows for a file of many pages
            exchange(http, count=20, message="x" * 300)
    stop_and_check(first)
    path = data_dir / FILENAME
    assert not Path(f"{path}-wal").exists()  # a clean stop checkpointed everything
    page = _zero_a_middle_page(path)
    assert page > 1

    second = start_with_data(tmp_path / "second", data_dir)
    try:
        with second.client() as http:
            history = http.get("/api/history").json()
            _, client = exchange(http, count=2)  # history works in the fresh file
            kept = find(http.get("/api/history").json(), client["id"])
            shown = http.get("/history")
    finally:
        stop_and_check(second)
    aside = sorted(data_dir.glob(f"{FILENAME}.damaged-*"))
    assert len(aside) == 1
    assert [s["id"] for s in history["sessions"]] == [history["current"]]
    assert kept["session"] == history["current"]
    for notice in (history["notice"], shown.text, second.log()):
        assert "was damaged" in notice and str(aside[0]) in notice
    assert _problems(aside[0]) != ["ok"]  # the damaged copy is what it was


def _problems(path: Path) -> list[str]:
    """What quick_check says of a file (SQLite raises for some damage, lists the rest)."""
    db = sqlite3.connect(path)
    try:
        return [r[0] for r in db.execute("PRAGMA quick_check")]
    except sqlite3.DatabaseError as exc:
        return [str(exc)]
    finally:
        db.close()


def test_a_damaged_file_in_the_store_keeps_its_wal_beside_it(tmp_path):
    store = HistoryStore(tmp_path / FILENAME)
    session = store.new_session(time.time())
    store.write(session, [WorkerRecord(
        id=None, worker=f"w{i}", kind="client", spec={"message": "m" * 500}, state="finished",
        local=None, target=None, counters={}, started=time.time(), ended=None,
        events=[{"seq": j, "time": time.time(), "type": "sent", "message": "x" * 200,
                 "worker": f"w{i}"} for j in range(100)]) for i in range(5)])
    store.close()
    _zero_a_middle_page(tmp_path / FILENAME)
    fresh = HistoryStore(tmp_path / FILENAME)
    try:
        assert fresh.sessions() == [] and "was damaged" in fresh.notice
        assert len(list(tmp_path.glob(f"{FILENAME}.damaged-*"))) == 1
        assert fresh.new_session(time.time()) == 1
    finally:
        fresh.close()
    again = HistoryStore(tmp_path / FILENAME)  # the fresh file is fine: nothing moved again
    try:
        assert again.notice is None and len(again.sessions()) == 1
    finally:
        again.close()


def test_a_read_only_file_is_called_read_only(tmp_path, data_dir):
    # Root ignores a file's mode bits, so chmod cannot make the file unwritable here. A
    # read-only bind mount of the file, in a mount namespace of the app's own (unshare -m),
    # can: the kernel refuses every write to it with EROFS, root or not, and the mount ends
    # with the app.
    unshare = shutil.which("unshare")
    if unshare is None or os.geteuid() != 0:
        pytest.skip("needs root and unshare(1) for a read-only bind mount")
    first = start_with_data(tmp_path / "first", data_dir)
    with first.client() as http:
        _, client = exchange(http, count=1)
    stop_and_check(first)
    path = data_dir / FILENAME
    read_only = (unshare, "-m", "--propagation", "private", "sh", "-c",
                 'mount --bind "$0" "$0" && mount -o remount,bind,ro "$0" && exec "$@"',
                 str(path))
    server = start_server(tmp_path / "ro", args=("--data-dir", str(data_dir)),
                          wrapper=read_only)
    api, page, worker = visit_and_stop(server)
    error = api.json()["error"]
    assert api.status_code == 503 and f"{path} is read-only" in error
    assert f"chmod u+w {path}" in error and "--data-dir" in error
    assert "not a UDP Lab history database" not in error
    assert page.status_code == 503 and "is read-only" in page.text
    assert worker["state"] == "running"
    store = HistoryStore(path)  # outside that namespace the file is writable, and intact
    try:
        assert find({"sessions": store.sessions()}, client["id"])
        assert store.notice is None
    finally:
        store.close()
