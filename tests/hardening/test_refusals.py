"""Caps with clear refusals: live workers, WebSocket watchers, WebSocket message size,
payload size and wrong tokens (slowed down, then refused, per client address)."""

import asyncio
import json
import time

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus


def test_max_workers_refuses_the_next_live_worker_with_429(apps):
    app = apps.start("--max-workers", "5")
    with app.client() as http:
        workers = [http.start(kind="server", host="127.0.0.1", port=0) for _ in range(5)]
        refused = http.post("/api/workers", json={"kind": "server", "host": "127.0.0.1",
                                                   "port": 0})
        assert refused.status_code == 429, refused.text
        assert "--max-workers" in refused.json()["error"] and "5" in refused.json()["error"]
        assert len(http.get("/api/workers").json()["workers"]) == 5
        # Stopping one frees a slot (an ended worker does not count).
        assert http.delete(f"/api/workers/{workers[0]['id']}").status_code == 200
        http.start(kind="server", host="127.0.0.1", port=0)
        again = http.post("/api/workers", json={"kind": "client", "host": "127.0.0.1",
                                                 "port": 9})
        assert again.status_code == 429
        http.stop_started()


async def test_max_watchers_refuses_the_third_handshake_with_429(apps):
    app = apps.start("--max-watchers", "2")
    url = f"{app.ws_base}/api/events"
    page_headers = {**app.cookie, "Origin": app.origin}
    async with connect(url, additional_headers=app.bearer, open_timeout=5) as one, \
            connect(f"{app.ws_base}/ws/page", additional_headers=page_headers,
                    open_timeout=5) as two:
        async with asyncio.timeout(5):
            await one.recv()
            await two.recv()
        for target, headers in ((url, app.bearer), (f"{app.ws_base}/ws/page", page_headers)):
            with pytest.raises(InvalidStatus) as refused:
                async with connect(target, additional_headers=headers, open_timeout=5):
                    pass
            response = refused.value.response
            assert response.status_code == 429, response
            assert "--max-watchers" in json.loads(response.body)["error"], response.body
        async with httpx.AsyncClient(headers=app.bearer) as http:
            stats = (await http.get(f"{app.base}/api/stats")).json()
        assert stats["watchers"] == 2, stats
    # Leaving frees the slots.
    async with connect(url, additional_headers=app.bearer, open_timeout=5) as three:
        async with asyncio.timeout(5):
            assert json.loads(await three.recv())["events"] == []


async def test_oversized_websocket_message_closes_only_that_socket(live):
    url = f"{live.ws_base}/api/events"
    async with connect(url, additional_headers=live.bearer, open_timeout=5) as big, \
            connect(url, additional_headers=live.bearer, open_timeout=5) as other:
        async with asyncio.timeout(5):
            await big.recv()
            await other.recv()
            await big.send("x" * (100 * 1024))
            with pytest.raises(ConnectionClosed) as closed:
                while True:
                    await big.recv()
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009, closed.value
        # The other watcher still gets events.
        with live.client() as http:
            worker = http.start(kind="server", host="127.0.0.1", port=0)
            http.stop_started()
        async with asyncio.timeout(5):
            while True:
                batch = json.loads(await other.recv())
                if any(e["worker"] == worker["id"] for e in batch["events"]):
                    break


def test_message_bigger_than_a_udp_payload_is_422(live):
    with live.client() as http:
        server = http.start(kind="server", host="127.0.0.1", port=0, reply="none")
        port = server["local"][1]
        for kind in ("client", "spoofer", "broadcast"):
            host = "127.255.255.255" if kind == "broadcast" else "127.0.0.1"
            response = http.post("/api/workers", json={"kind": kind, "host": host, "port": port,
                                                        "message": "x" * 65508})
            assert response.status_code == 422, (kind, response.text)
            assert response.json()["field"] == "message" and "65507" in response.json()["error"]
        # Multi-byte characters count in bytes: 21836 × 3 bytes = 65508.
        response = http.post("/api/workers", json={"kind": "client", "host": "127.0.0.1",
                                                    "port": port, "message": "€" * 21836})
        assert response.status_code == 422, response.text
        # The largest payload itself is fine.
        ok = http.start(kind="client", host="127.0.0.1", port=port, message="x" * 65507,
                        timeout=0.01, give_up_after=0.02)
        assert ok["spec"]["message"] == "x" * 65507
        response = http.post("/api/workers", json={"kind": "stream", "host": "127.0.0.1",
                                                    "port": port, "size": 65508})
        assert response.status_code == 422 and response.json()["field"] == "size"
        http.stop_started()


def timed_get(http: httpx.Client, url: str, **kwargs) -> tuple[httpx.Response, float]:
    started = time.monotonic()
    response = http.get(url, **kwargs)
    return response, time.monotonic() - started


def test_right_token_is_never_slowed(apps):
    app = apps.start()
    with app.client() as http:
        for _ in range(20):
            response, seconds = timed_get(http, "/api/workers")
            assert response.status_code == 200
            assert seconds < 0.2, f"a request with the right token took {seconds:.2f} s"
        # No token at all (a first visit) is refused at once and not counted as a guess.
        anonymous = httpx.Client(base_url=app.base, timeout=10)
        with anonymous:
            for _ in range(8):
                response, seconds = timed_get(anonymous, "/api/workers")
                assert response.status_code == 401 and seconds < 0.2
        response, _ = timed_get(http, "/api/workers")
        assert response.status_code == 200
