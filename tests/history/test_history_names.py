"""Names that could steer a header: every export route's Content-Disposition stays one
well-formed header with a safe file name, whatever name the history holds; an import is held
to the rule of live names."""

import json
import re
import time
from pathlib import Path
from urllib.parse import unquote

import pytest

from history_helpers import exchange, start_with_data
from live import stop_and_check
from webapp.engine.history import FILENAME, HistoryStore, WorkerRecord

HOSTILE = {
    "quotes": "a\"; filename*=UTF-8''evil.html; x=\"",
    "crlf": "a\r\nSet-Cookie: stolen=1\r\n\r\n<html>",
    "snowman": "☃",
    "huge": "n" * (8 * 1024 * 1024),
}
FORMATS = ("jsonl", "csv", "pcapng")
# The whole header: an ASCII slug in `filename`, the real name percent-encoded in `filename*`.
DISPOSITION = re.compile(
    r"attachment; filename=\"(udplab-[A-Za-z0-9_-]+\.(jsonl|csv|pcapng))\"; "
    r"filename\*=UTF-8''([A-Za-z0-9%._~-]+)")


def check_download(response, fmt: str) -> tuple[str, str]:
    """The response is a download whose one Content-Disposition header is well formed and
    names a `.fmt` file either way a browser reads it; (filename, decoded filename*)."""
    assert response.status_code == 200, response.text[:300]
    raw = [v for k, v in response.headers.raw if k.lower() == b"content-disposition"]
    assert len(raw) == 1, raw
    assert len(raw[0]) < 1000  # an 8 MiB name does not make an 8 MiB header
    match = DISPOSITION.fullmatch(raw[0].decode("ascii"))
    assert match, raw[0][:300]
    plain, ext, real = match.group(1), match.group(2), unquote(match.group(3))
    assert ext == fmt and real.endswith(f".{fmt}") and real.startswith("udplab-")
    assert not any(h.lower().startswith(b"set-cookie") for h, _ in response.headers.raw)
    return plain, real


def hostile_history(data_dir: Path) -> dict[str, int]:
    """A history file holding workers with hostile names, as one written before imports were
    checked would: {label: history id}."""
    data_dir.mkdir(parents=True, exist_ok=True)
    store = HistoryStore(data_dir / FILENAME)
    try:
        session = store.new_session(time.time() - 60)
        records = {}
        for label, name in HOSTILE.items():
            event = {"seq": 1, "time": time.time() - 30, "worker": name, "type": "sent",
                     "message": "sent", "local": ["127.0.0.1", 40000],
                     "peer": ["127.0.0.1", 1060], "size": 2, "text": "hi"}
            records[label] = WorkerRecord(
                id=None, worker=name, kind="client", spec={"kind": "client"},
                state="finished", local=["127.0.0.1", 40000], target=["127.0.0.1", 1060],
                counters={"sent": 1}, started=time.time() - 40, ended=time.time() - 20,
                events=[event])
        store.write(session, list(records.values()))
        store.end_session(session, time.time() - 10)
        return {label: r.id for label, r in records.items()} | {"session": session}
    finally:
        store.close()


def test_every_export_route_names_its_download_safely(tmp_path, data_dir):
    ids = hostile_history(data_dir)
    server = start_with_data(tmp_path / "names", data_dir)
    try:
        with server.client() as http:
            http.timeout = 30  # the 8 MiB name's exports
            for label in HOSTILE:
                for fmt in FORMATS:
                    plain, real = check_download(
                        http.get(f"/api/history/{ids[label]}/export.{fmt}"), fmt)
                    assert plain.endswith(f"-{ids[label]}.{fmt}") or label == "huge"
                    if label != "huge":
                        assert real == f"udplab-{HOSTILE[label]}-{ids[label]}.{fmt}"
            for fmt in FORMATS:
                plain, real = check_download(
                    http.get(f"/api/history/sessions/{ids['session']}/export.{fmt}"), fmt)
                assert plain == real == f"udplab-session-{ids['session']}.{fmt}"
            # A live worker's card links: live names are held to the rule already, and the
            # route builds its header the same way.
            _, client = exchange(http, count=1)
            for fmt in FORMATS:
                plain, real = check_download(
                    http.get(f"/api/workers/{client['id']}/export.{fmt}"), fmt)
                assert plain.startswith(f"udplab-{client['id']}-") and plain == real
            quoted = http.get(f"/api/history/{ids['quotes']}/export.jsonl")
            assert quoted.headers["content-disposition"].startswith(
                'attachment; filename="udplab-a-filename-UTF-8-evil-html-x-')
    finally:
        stop_and_check(server)


def _export_line(name: str) -> bytes:
    worker = {"type": "udplab-worker", "id": 1, "session": 1, "worker": name, "kind": "client",
              "spec": {"kind": "client"}, "state": "finished", "local": None, "target": None,
              "counters": {}, "started": time.time(), "ended": None, "states": []}
    return (json.dumps({"type": "udplab-export", "version": 1, "session": None}) + "\n"
            + json.dumps(worker) + "\n").encode()


@pytest.mark.parametrize("label", ["quotes", "crlf", "snowman", "long", "bare-event"])
def test_an_imported_name_is_held_to_the_rule_of_live_names(hist, label):
    name = "n" * 2000 if label == "long" else HOSTILE.get(label, "a b")
    body = _export_line(name)
    if label == "bare-event":  # a name carried by an event alone is checked as well
        body = json.dumps({"seq": 1, "time": 1.0, "worker": "a b", "type": "sent",
                           "message": "x"}).encode() + b"\n"
    with hist.client() as http:
        before = http.get("/api/history").json()["sessions"]
        done = http.post("/api/history/import", content=body)
        after = http.get("/api/history").json()["sessions"]
    assert done.status_code == 422, done.text[:300]
    error = done.json()["error"]
    line = "Line 1" if label == "bare-event" else "Line 2"
    assert error.startswith(f"{line} of the import") and "up to 48 lower-case letters" in error
    assert len(error) < 600  # the name is not echoed back whole
    assert after == before  # nothing of a refused import is kept


def test_an_imported_8_mib_name_is_refused(hist):
    with hist.client() as http:
        http.timeout = 30
        done = http.post("/api/history/import", content=_export_line(HOSTILE["huge"]))
        sessions = http.get("/api/history").json()["sessions"]
    assert done.status_code == 422 and len(done.content) < 1000
    assert "Line 2 of the import" in done.json()["error"]
    assert "longer than 1024 KiB" in done.json()["error"]
    assert [s["imported"] for s in sessions] == [False]


def test_the_page_import_form_streams_and_refuses_a_bad_name(hist):
    with hist.client(headers={"Origin": hist.origin}) as http:
        _, client = exchange(http, count=2)
        session = http.get("/api/history").json()["current"]
        good = http.get(f"/api/history/sessions/{session}/export.jsonl").content
        # Padding lines make the upload larger than the 1 MiB the form keeps in memory, so
        # it is read back from its temporary file in chunks.
        good += (b" " * (512 * 1024) + b"\n") * 4
        done = http.post("/history/import", files={"file": ("mine.jsonl", good)})
        bad = http.post("/history/import",
                        files={"file": ("bad.jsonl", _export_line("x" * 5000))})
        sessions = http.get("/api/history").json()["sessions"]
    assert done.status_code == 303, done.text[:3000]
    assert done.headers["location"] == "/history?done=imported"
    assert sessions[0]["imported"] and sessions[0]["label"].startswith("imported from mine.jsonl")
    assert [w["worker"] for w in sessions[0]["workers"]][-1] == client["id"]
    assert bad.status_code == 422 and "Line 2 of the import" in bad.text
    assert "up to 48 lower-case letters" in bad.text and "x" * 100 not in bad.text
    assert len(sessions) == 2
