"""SIGTERM with workers running and watchers connected: a quick, clean exit that frees every
UDP port (uvicorn's graceful shutdown timeout is 3 s; a watcher must not hold it up)."""

import asyncio
import json
import socket
import time

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

EXIT_WITHIN = 5.0


async def wait_exit(proc, timeout: float) -> int | None:
    deadline = time.monotonic() + timeout
    while proc.poll() is None and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    return proc.poll()


async def test_sigterm_with_worker_and_watchers_exits_cleanly(fresh):
    async with fresh.async_client() as http:
        response = await http.post("/api/workers", json={"kind": "server", "host": "127.0.0.1",
                                                         "port": 0})
        assert response.status_code == 201
        port = response.json()["local"][1]
        # A client still sending when the signal comes: traffic during shutdown.
        busy = await http.post("/api/workers", json={
            "kind": "client", "host": "127.0.0.1", "port": port, "count": 100_000,
            "interval": 0.01, "message": "busy"})
        assert busy.status_code == 201

    headers = {**fresh.cookie, "Origin": fresh.origin}
    async with connect(f"{fresh.ws_base}/api/events", additional_headers=fresh.bearer,
                       open_timeout=5) as events, \
            connect(f"{fresh.ws_base}/ws/page", additional_headers=headers,
                    open_timeout=5) as page:
        async with asyncio.timeout(5):
            first = json.loads(await events.recv())
            assert first["workers"][0]["local"] == ["127.0.0.1", port]
            assert await page.recv()
            # Wait until traffic flows, so the shutdown really interrupts work in progress.
            for _ in range(500):
                batch = json.loads(await events.recv())["events"]
                if any(e["type"] == "reply" for e in batch):
                    break
            else:
                raise AssertionError("no reply came before the shutdown")

        started = time.monotonic()
        fresh.proc.terminate()  # SIGTERM
        code = await wait_exit(fresh.proc, EXIT_WITHIN)
        took = time.monotonic() - started
        assert code == 0, f"exit code {code} after {took:.1f} s:\n{fresh.log()}"
        assert took < EXIT_WITHIN

        # The watchers were closed by the server, not left hanging.
        for ws in (events, page):
            async with asyncio.timeout(5):
                try:
                    while True:
                        await ws.recv()
                except ConnectionClosed:
                    pass

    # Every worker socket is closed: the server's port binds again at once.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", port))
    log = fresh.log()
    assert "Traceback" not in log and "ERROR" not in log, log
    assert "Application shutdown complete" in log
    assert "UDP Lab stopped" in fresh.output()


async def test_sigterm_when_idle_exits_quickly(fresh):
    started = time.monotonic()
    fresh.proc.terminate()
    code = await wait_exit(fresh.proc, EXIT_WITHIN)
    assert code == 0, fresh.log()
    # Nothing to wait for: well under uvicorn's 3 s graceful timeout.
    assert time.monotonic() - started < 2.0
