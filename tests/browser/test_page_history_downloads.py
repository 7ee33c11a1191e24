"""Chromium saves a history download under a safe name, whatever name the history holds (a
worker named `a"; filename*=UTF-8''evil.html; x="` was saved as `evil.html`)."""

import time

import pytest

from live import start_server, stop_and_check
from webapp.engine.history import FILENAME, HistoryStore, WorkerRecord

HOSTILE = ("a\"; filename*=UTF-8''evil.html; x=\"", "a\r\nX-Evil: 1", "☃")


@pytest.fixture
def hostile(tmp_path):
    """A udplab whose history file (written before imports were checked) holds hostile
    names: (server, {name: history id})."""
    data = tmp_path / "data"
    data.mkdir()
    store = HistoryStore(data / FILENAME)
    session = store.new_session(time.time() - 60)
    records = [WorkerRecord(id=None, worker=name, kind="client", spec={"kind": "client"},
                            state="finished", local=None, target=None, counters={},
                            started=time.time() - 50, ended=time.time() - 40)
               for name in HOSTILE]
    store.write(session, records)
    store.end_session(session, time.time() - 30)
    store.close()
    server = start_server(tmp_path / "udplab", args=("--data-dir", str(data)))
    yield server, {r.worker: r.id for r in records}
    stop_and_check(server)


def test_chromium_saves_hostile_names_as_safe_files(page, hostile):
    server, ids = hostile
    page.goto(f"{server.base}/?token={server.token}")
    for name, history_id in ids.items():
        page.goto(f"{server.base}/history/{history_id}")
        for fmt in ("jsonl", "csv", "pcapng"):
            with page.expect_download() as info:
                page.click(f"a[href='/api/history/{history_id}/export.{fmt}']")
            saved = info.value.suggested_filename
            assert saved.startswith("udplab-") and saved.endswith(f"-{history_id}.{fmt}"), saved
            assert not any(c in saved for c in "\"\r\n/\\"), saved
    assert page.console_errors == []
