"""Faults: a worker that raises, junk on the WebSockets, a stuck watcher, a page that
reconnects. Loopback only."""

import asyncio
import fcntl
import json
import socket
import struct
import termios
import time

import pytest
from websockets.asyncio.client import connect

from webapp.engine import Supervisor

LOOPBACK = "127.0.0.1"


# --- a worker that raises (engine level) ------------------------------------------------

def ask(port: int, data: bytes) -> bytes:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(2)
        sock.sendto(data, (LOOPBACK, port))
        return sock.recv(65535)


async def test_a_worker_that_raises_is_reported_and_the_others_go_on():
    async with Supervisor() as sup:
        steady = await sup.start({"kind": "server", "host": LOOPBACK, "port": 0,
                                  "reply": "echo"})
        doomed = await sup.start({"kind": "server", "host": LOOPBACK, "port": 0})
        crashing = await sup.start({"kind": "client", "host": LOOPBACK,
                                    "port": steady.local[1], "count": 1000, "interval": 0.01})

        async def boom():
            raise RuntimeError("injected fault")

        crashing.run = boom  # before its task's first step: run() itself raises

        def bad_record(record):
            raise ZeroDivisionError("injected fault in a reader callback")

        doomed.on_record = bad_record  # the next datagram crashes the server's callback
        assert await asyncio.to_thread(ask, steady.local[1], b"before") == b"before"
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.sendto(b"crash", (LOOPBACK, doomed.local[1]))
        await asyncio.wait([crashing.task, doomed.task], timeout=3)
        for worker, words in ((crashing, "injected fault"), (doomed, "ZeroDivisionError")):
            assert worker.state == "failed", worker.to_dict()
            assert worker.sock is None, "a failed worker's socket was left open"
            types = [e.type for e in worker.history]
            assert "error" in types and types[-1] == "stopped", types
            error = next(e for e in worker.history if e.type == "error")
            assert words in error.message, error
        # The others and the supervisor go on, without a gap.
        assert steady.state == "running"
        for n in range(20):
            data = f"after {n}".encode()
            assert await asyncio.to_thread(ask, steady.local[1], data) == data
        again = await sup.start({"kind": "server", "host": LOOPBACK,
                                 "port": doomed.local[1]})  # its port was freed
        assert again.state == "running"


# --- junk on the WebSockets -------------------------------------------------------------

JUNK = ["hello", "{", '{"type": "stop", "worker": "*"}', "null", "[]" * 1000, "\u0000\udfff"
        .encode("utf-8", "surrogatepass").decode("utf-8", "replace"), "x" * 60_000,
        b"\x00\xff\xfe", b"", bytes(range(256)) * 200]


async def drain_until(ws, predicate, what: str, timeout: float = 5.0) -> None:
    try:
        async with asyncio.timeout(timeout):
            while not predicate(await ws.recv()):
                pass
    except TimeoutError:
        pytest.fail(f"timed out waiting for {what}")


async def test_junk_on_both_websockets_is_ignored(apps):
    app = apps.start()
    page_headers = {**app.cookie, "Origin": app.origin}
    async with connect(f"{app.ws_base}/api/events", additional_headers=app.bearer,
                       open_timeout=5) as events, \
            connect(f"{app.ws_base}/ws/page", additional_headers=page_headers,
                    open_timeout=5) as page:
        async with asyncio.timeout(5):
            await events.recv()
            await page.recv()
        for junk in JUNK:
            await events.send(junk)
            await page.send(junk)
        await events.ping()
        await page.ping()
        async with app.async_client() as http:
            assert (await http.get("/api/health")).json() == {"status": "ok"}
            worker = (await http.post("/api/workers", json={"kind": "server", "host": LOOPBACK,
                                                             "port": 0})).json()
            await drain_until(events, lambda m: any(e["worker"] == worker["id"]
                                                    for e in json.loads(m)["events"]),
                              "the JSON stream to deliver after the junk")
            await drain_until(page, lambda m: worker["id"] in m,
                              "the page stream to deliver after the junk")
            await http.delete(f"/api/workers/{worker['id']}")
            stats = (await http.get("/api/stats")).json()
            assert stats["watchers"] == 2, stats
    log = app.log()
    assert "Traceback" not in log and "ERROR" not in log, log


# --- a stuck watcher --------------------------------------------------------------------

def exchanges(port: int, count: int) -> float:
    """`count` request/reply exchanges with a plain socket; the seconds they took."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(2)
        started = time.monotonic()
        for n in range(count):
            data = f"exchange {n:04} ".encode() + b"." * 400
            sock.sendto(data, (LOOPBACK, port))
            assert sock.recv(65535) == data
        return time.monotonic() - started


def unread(sock: socket.socket) -> int:
    """Bytes waiting unread in the socket's kernel receive queue."""
    return struct.unpack("i", fcntl.ioctl(sock.fileno(), termios.FIONREAD, b"\0" * 4))[0]


async def test_a_stuck_watcher_never_slows_the_udp_path_or_other_watchers(apps):
    app = apps.start("--events-per-second", "0")  # every datagram an event: the flood we want
    async with app.async_client() as http:
        server = (await http.post("/api/workers", json={"kind": "server", "host": LOOPBACK,
                                                         "port": 0, "reply": "echo"})).json()
        port = server["local"][1]
        await asyncio.to_thread(exchanges, port, 50)  # warm up
        baseline = await asyncio.to_thread(exchanges, port, 200)

        # A watcher that connects and never reads, with a tiny receive window.
        raw = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        raw.connect((LOOPBACK, app.port))
        stuck = await connect(f"{app.ws_base}/api/events", sock=raw, max_queue=1,
                              close_timeout=1, additional_headers=app.bearer, open_timeout=5)
        seen: list[str] = []

        async def watch(ws) -> None:
            async for message in ws:
                for event in json.loads(message)["events"]:
                    seen.append(event.get("text") or "")

        try:
            async with connect(f"{app.ws_base}/api/events", additional_headers=app.bearer,
                               open_timeout=5) as other:
                watcher = asyncio.create_task(watch(other))
                # Flood events until the stuck watcher's window is full (100 exchanges take
                # a few ms: give each flood the hub's flushes to reach the socket).
                for _ in range(20):
                    await asyncio.to_thread(exchanges, port, 100)
                    for _ in range(10):
                        if unread(raw) > 0:
                            break
                        await asyncio.sleep(0.02)
                    if unread(raw) > 0:
                        break
                assert unread(raw) > 0, "the stuck watcher is not stuck"
                with_stuck = await asyncio.to_thread(exchanges, port, 200)
                last = f"exchange {199:04} "
                for _ in range(200):  # up to 10 s on a loaded machine (CI runs everything)
                    if any(t.startswith(last) for t in seen):
                        break
                    await asyncio.sleep(0.05)
                assert any(t.startswith(last) for t in seen), \
                    f"the other watcher stopped receiving while one was stuck: it saw " \
                    f"{len(seen)} events, the last {seen[-3:]}; its reader " \
                    f"{watcher.exception() if watcher.done() else 'still waits'}"
                watcher.cancel()
            assert with_stuck < max(3 * baseline, baseline + 1.0), \
                f"200 exchanges took {with_stuck:.2f} s with a stuck watcher, " \
                f"{baseline:.2f} s without"
            assert (await http.get("/api/health")).status_code == 200
        finally:
            await stuck.close()  # never read: the close may not be acknowledged
        await http.delete(f"/api/workers/{server['id']}")


# --- a page that reconnects -------------------------------------------------------------

async def test_a_reconnecting_page_gets_a_fresh_snapshot(apps):
    app = apps.start()
    url = f"{app.ws_base}/ws/page"
    headers = {**app.cookie, "Origin": app.origin}
    async with connect(url, additional_headers=headers, open_timeout=5) as page:
        async with asyncio.timeout(5):
            first = await page.recv()
    assert 'id="workers"' in first and "hx-swap-oob" in first, first[:500]
    async with app.async_client() as http:
        worker = (await http.post("/api/workers", json={"kind": "server", "host": LOOPBACK,
                                                         "port": 0, "name": "while-away"}))
        assert worker.status_code == 201
        async with connect(url, additional_headers=headers, open_timeout=5) as page:
            async with asyncio.timeout(5):
                again = await page.recv()
        assert 'id="workers"' in again and "hx-swap-oob" in again
        assert "while-away" in again, "the snapshot after reconnecting misses a new worker"
        await http.delete("/api/workers/while-away")
