"""Issue 13, ended workers are kept forever: the dashboard keeps the newest `--keep-ended`
ended workers (live ones always), the page says so, and the history keeps every one of them,
final state and counters included, even a worker that started and ended between two of the
history's writes."""

import asyncio
import time

import httpx
import pytest

LOOPBACK = "127.0.0.1"
KEEP = 20
BURSTS, BURST = 4, 25  # 100 one-shot clients, each burst started at once


async def burst(app, port: int) -> list[str]:
    spec = {"kind": "client", "host": LOOPBACK, "port": port, "count": 1}
    async with app.async_client(limits=httpx.Limits(max_connections=BURST)) as http:
        responses = await asyncio.gather(*(http.post("/api/workers", json=spec)
                                           for _ in range(BURST)))
    assert all(r.status_code == 201 for r in responses), [r.text for r in responses]
    return [r.json()["id"] for r in responses]


def test_only_the_newest_ended_workers_stay_listed_and_the_history_keeps_all(apps, until):
    app = apps.start("--keep-ended", str(KEEP))
    with app.client() as http:
        server = http.start(kind="server", host=LOOPBACK, port=0, reply="echo")
        port = server["local"][1]
        clients: list[str] = []
        page_sizes = []
        for _ in range(BURSTS):
            clients += asyncio.run(burst(app, port))
            until(lambda: http.get("/api/stats").json()["alive"] == 1,
                  "the one-shot clients to finish", timeout=10)
            page = http.get("/")
            assert page.status_code == 200
            page_sizes.append(len(page.content))
        assert len(set(clients)) == BURSTS * BURST

        listed = http.get("/api/workers").json()["workers"]
        ended = [w for w in listed if w["state"] != "running"]
        assert len(ended) == KEEP, [w["id"] for w in listed]
        assert server["id"] in {w["id"] for w in listed}, "a live worker is never cleared"
        newest = sorted(clients, key=lambda c: int(c.rsplit("-", 1)[1]))[-BURST:]
        assert {w["id"] for w in ended} <= set(newest), "the oldest ended go first"
        cleared = sorted(set(clients) - {w["id"] for w in ended})[0]
        assert http.get(f"/api/workers/{cleared}").status_code == 404
        # The page stays the same size however many workers came and went.
        assert page_sizes[-1] < page_sizes[0] * 1.25, page_sizes
        assert f"beyond the newest {KEEP} are cleared from here" in page.text

        def recorded():
            sessions = http.get("/api/history").json()["sessions"]
            current = next(s for s in sessions if s["current"])
            return {w["worker"]: w for w in current["workers"]}
        deadline = time.monotonic() + 5
        while set(clients) - set(history := recorded()) and time.monotonic() < deadline:
            time.sleep(0.1)
        missing = set(clients) - set(history)
        assert not missing, f"{len(missing)} cleared workers never reached the history"
        for client in clients:
            record = history[client]
            assert record["state"] == "finished", record
            assert record["counters"]["replies"] == 1 and record["ended"], record
        http.delete(f"/api/workers/{server['id']}")


def test_keep_ended_is_a_whole_number_of_0_or_more(capsys):
    from webapp.cli import parse_args
    assert parse_args([]).keep_ended == 200
    assert parse_args(["--keep-ended", "0"]).keep_ended == 0
    with pytest.raises(SystemExit):
        parse_args(["--keep-ended", "-1"])
    assert "'-1' is not a whole number of 0 or more" in capsys.readouterr().err
