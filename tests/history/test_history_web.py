"""History through a real udplab: the JSON API, exports read back (tshark for pcapng),
import, search, delete, run again, the page, a restart, a SIGKILL and a newer database."""

import csv
import io
import json
import signal
import sqlite3
import time

from history_helpers import exchange, find, start_with_data, tshark_fields, visit_and_stop
from live import stop_and_check
from webapp.engine.history.datagrams import DATAGRAM_TYPES
from webapp.engine.history.export import CSV_COLUMNS
from webapp.engine.history import FILENAME, SCHEMA_VERSION


def datagrams(worker: dict) -> list[dict]:
    return [e for e in worker["events"] if e["type"] in DATAGRAM_TYPES and e.get("peer")]


def test_a_worker_is_kept_with_spec_states_counters_and_events(hist):
    with hist.client() as http:
        server, client = exchange(http, count=2)
        history = http.get("/api/history").json()
        entry = find(history, client["id"])
        assert entry["session"] == history["current"] == history["sessions"][0]["id"]
        kept = http.get(f"/api/history/{entry['id']}").json()
        live_events = http.get(f"/api/workers/{client['id']}/events").json()["events"]
    assert kept["spec"]["message"] == "hello history" and kept["kind"] == "client"
    assert kept["state"] == "finished" and kept["counters"]["sent"] == 2
    assert [s["state"] for s in kept["states"]] == ["running", "finished"]
    assert kept["events"] == json.loads(json.dumps(live_events))


def test_jsonl_export_imports_back_as_a_new_session_with_the_same_events(hist):
    with hist.client() as http:
        server, _ = exchange(http)
        entry = find(http.get("/api/history").json(), server["id"])
        original = http.get(f"/api/history/{entry['id']}").json()
        body = http.get(f"/api/history/sessions/{entry['session']}/export.jsonl")
        assert body.status_code == 200 and "attachment" in body.headers["content-disposition"]
        lines = [json.loads(line) for line in body.text.splitlines()]
        assert lines[0]["type"] == "udplab-export"
        done = http.post("/api/history/import", content=body.content)
        assert done.status_code == 201, done.text
        imported = http.get("/api/history").json()["sessions"][0]
        assert imported["id"] == done.json()["session"] and imported["imported"]
        copy = next(w for w in imported["workers"] if w["worker"] == server["id"])
        copy = http.get(f"/api/history/{copy['id']}").json()
        bad = http.post("/api/history/import", content=b'{"type": "udplab-export"}\n{oops\n')
    assert copy["events"] == original["events"] and copy["spec"] == original["spec"]
    assert copy["counters"] == original["counters"]
    assert bad.status_code == 422 and "Line 2" in bad.json()["error"]


def test_csv_has_a_row_per_event_with_addresses(hist):
    with hist.client() as http:
        server, _ = exchange(http)
        entry = find(http.get("/api/history").json(), server["id"])
        kept = http.get(f"/api/history/{entry['id']}").json()
        text = http.get(f"/api/history/{entry['id']}/export.csv").text
    rows = list(csv.DictReader(io.StringIO(text)))
    assert tuple(rows[0]) == CSV_COLUMNS
    assert [int(r["seq"]) for r in rows] == [e["seq"] for e in kept["events"]]
    for row, e in zip(rows, kept["events"]):
        assert (row["type"], row["message"], float(row["time"])) == \
            (e["type"], e["message"], e["time"])
        if e.get("peer"):
            assert [row["peer_host"], int(row["peer_port"])] == e["peer"]
            assert (int(row["size"]), row["text"]) == (e["size"], e["text"])


def test_pcapng_shows_the_same_datagrams_as_the_events(hist, tshark, tmp_path):
    with hist.client() as http:
        server, client = exchange(http, count=3, message="pcap \u00e9 check")
        history = http.get("/api/history").json()
        entry = find(history, server["id"])
        kept = http.get(f"/api/history/{entry['id']}").json()
        path = tmp_path / "server.pcapng"
        path.write_bytes(http.get(f"/api/history/{entry['id']}/export.pcapng").content)
        both = tmp_path / "session.pcapng"
        both.write_bytes(http.get(
            f"/api/history/sessions/{entry['session']}/export.pcapng").content)
    rows = tshark_fields(tshark, path, "ip.src", "ip.dst", "udp.srcport", "udp.dstport",
                         "udp.payload", "frame.time_epoch")
    expected = []
    for e in datagrams(kept):
        ends = [e["local"], e["peer"]] if e["type"] == "sent" else [e["peer"], e["local"]]
        expected.append([ends[0][0], ends[1][0], str(ends[0][1]), str(ends[1][1]),
                         e["text"].encode().hex()])
    assert len(expected) == 6  # three requests received, three replies sent
    assert [r[:5] for r in rows] == expected
    for row, e in zip(rows, datagrams(kept)):
        assert abs(float(row[5]) - e["time"]) < 1e-5
    names = {r[0] for r in tshark_fields(tshark, both, "frame.interface_name")}
    assert {server["id"], client["id"]} <= names  # one capture interface per worker


def test_search_delete_and_delete_all(hist):
    with hist.client() as http:
        server, client = exchange(http, message="needle-in-the-log")
        found = http.get("/api/history", params={"q": "needle-in-the"}).json()["sessions"]
        assert {w["worker"] for s in found for w in s["workers"]} == {server["id"], client["id"]}
        entry = find(http.get("/api/history").json(), client["id"])
        assert http.delete(f"/api/history/{entry['id']}").status_code == 200
        assert http.get(f"/api/history/{entry['id']}").status_code == 404
        assert http.delete(f"/api/history/{entry['id']}").status_code == 404
        found = http.get("/api/history", params={"q": "needle-in-the"}).json()["sessions"]
        assert [w["worker"] for s in found for w in s["workers"]] == [server["id"]]
        assert http.delete("/api/history").json()["deleted"] >= 1
        left = http.get("/api/history").json()["sessions"]
        with hist.client(auth=False) as stranger:
            unauthorised = stranger.get("/api/history")
    assert [s["workers"] for s in left] == [[]]  # this run's session stays, emptied
    assert unauthorised.status_code == 401


def test_run_again_starts_a_worker_with_the_same_spec(hist):
    with hist.client() as http:
        server = http.start(kind="server", host="127.0.0.1", port=0, drop_rate=0.25, seed=7)
        http.delete(f"/api/workers/{server['id']}")
        entry = find(http.get("/api/history").json(), server["id"])
        again = http.post(f"/api/history/{entry['id']}/run")
        assert again.status_code == 201, again.text
        http.started.append(again.json()["id"])
        page = http.post(f"/history/{entry['id']}/run")
        assert page.status_code == 303 and page.headers["location"].startswith("/#worker-")
        http.started.append(page.headers["location"].removeprefix("/#worker-"))
        http.stop_started()
    spec = {k: v for k, v in again.json()["spec"].items() if k != "name"}
    assert spec == {k: v for k, v in server["spec"].items() if k != "name"}


def test_the_history_page_lists_sessions_and_reopens_a_worker(hist):
    with hist.client() as http:
        server, client = exchange(http, message="shown on the page")
        entry = find(http.get("/api/history").json(), client["id"])
        page = http.get("/history")
        searched = http.get("/history", params={"q": "no such thing anywhere"})
        view = http.get(f"/history/{entry['id']}")
        gone = http.post(f"/history/{entry['id']}/delete")
        dashboard = http.get("/")
    assert page.status_code == 200 and client["id"] in page.text
    for fmt in ("jsonl", "csv", "pcapng"):
        assert f"/api/history/{entry['id']}/export.{fmt}" in page.text
        assert f"/api/history/sessions/{entry['session']}/export.{fmt}" in page.text
    assert f'action="/history/{entry["id"]}/run"' in page.text
    assert "Nothing in the history matches" in searched.text
    assert view.status_code == 200 and "shown on the page" in view.text
    assert 'class="ladder"' in view.text and "<script>" not in view.text
    assert gone.status_code == 303
    assert 'href="/history"' in dashboard.text  # the header links the history


def test_history_survives_a_restart_and_a_sigkill(tmp_path, data_dir):
    first = start_with_data(tmp_path / "one", data_dir)
    with first.client() as http:
        server, client = exchange(http, message="before the restart")
    stop_and_check(first)

    second = start_with_data(tmp_path / "two", data_dir)
    try:
        with second.client() as http:
            history = http.get("/api/history").json()
            old = find(history, client["id"])
            assert old["session"] != history["current"]
            assert history["sessions"][1]["ended"] is not None  # a clean stop ends a session
            killed_server, killed_client = exchange(http, message="before the SIGKILL")
            # No read through the API after this: it would write what is pending itself.
            time.sleep(1.5)  # older than the recorder's 0.5 s interval, with slack
    finally:
        second.proc.send_signal(signal.SIGKILL)
        second.proc.wait(timeout=5)
        second.terminate()

    third = start_with_data(tmp_path / "three", data_dir)
    try:
        with third.client() as http:
            history = http.get("/api/history").json()
            assert len(history["sessions"]) == 3
            kept = http.get(f"/api/history/{find(history, killed_client['id'])['id']}").json()
            first_kept = http.get(f"/api/history/{old['id']}").json()
    finally:
        stop_and_check(third)
    assert kept["spec"]["message"] == "before the SIGKILL"
    assert kept["counters"]["sent"] == 3 and len(datagrams(kept)) == 6
    assert history["sessions"][1]["ended"] is None  # killed: no clean end
    assert first_kept["spec"]["message"] == "before the restart"


def test_the_cap_per_worker_is_a_command_line_option(tmp_path, data_dir):
    server = start_with_data(tmp_path / "cap", data_dir, "--history-events", "4")
    try:
        with server.client() as http:
            _, client = exchange(http, count=4)
            kept = http.get(f"/api/history/{find(http.get('/api/history').json(), client['id'])['id']}").json()
            live_events = http.get(f"/api/workers/{client['id']}/events").json()["events"]
    finally:
        stop_and_check(server)
    assert [e["seq"] for e in kept["events"]] == [e["seq"] for e in live_events[-4:]]
    assert kept["events_dropped"] == len(live_events) - 4


def test_a_newer_database_leaves_history_off_with_a_warning(tmp_path, data_dir):
    data_dir.mkdir(parents=True)
    path = data_dir / FILENAME
    db = sqlite3.connect(path)
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    db.commit()
    db.close()
    server = start_with_data(tmp_path / "newer", data_dir)
    api, page, worker = visit_and_stop(server)
    assert api.status_code == 503 and str(path) in api.json()["error"]
    assert "--data-dir" in api.json()["error"]
    assert page.status_code == 503 and "newer than this UDP Lab" in page.text
    assert "history is off" in server.log() and str(path) in server.log()
    assert worker["state"] == "running"
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION + 1
