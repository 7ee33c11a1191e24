"""Bounded requests (issue 13): bodies over their route's limit refused early with 413, by
Content-Length and while a chunked body streams in; JSON nested too deep is a 422, not a 500;
error messages do not echo what was sent back whole; and connections that never finish their
headers (slow-loris) are closed in time while the real user still gets in."""

import asyncio
import os
import socket
import subprocess
import sys
import time

import httpx
import pytest

from live import REPO

KIB, MIB = 1024, 2**20
LIMIT_WORDS = "larger than"


def raw_request(app, head: str, timeout: float = 10.0) -> socket.socket:
    """A TCP connection to the app with `head` (request line and headers) sent."""
    sock = socket.create_connection(("127.0.0.1", app.port), timeout=timeout)
    sock.sendall(head.encode("latin-1"))
    return sock


def read_response(sock: socket.socket, timeout: float = 10.0) -> bytes:
    """Everything the server sends until it closes or `timeout` passes (bounded)."""
    sock.settimeout(timeout)
    data = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            chunk = sock.recv(65536)
        except (ConnectionResetError, socket.timeout):
            break
        if not chunk:
            break
        data += chunk
        if b"\r\n\r\n" in data and _complete(data):
            break
    return data


def _complete(data: bytes) -> bool:
    head, _, body = data.partition(b"\r\n\r\n")
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            return len(body) >= int(line.split(b":", 1)[1])
    return False


def status_of(data: bytes) -> int:
    return int(data.split(b" ", 2)[1]) if data.startswith(b"HTTP/1.1 ") else 0


def head(app, method: str, path: str, **headers: str) -> str:
    lines = [f"{method} {path} HTTP/1.1", f"Host: 127.0.0.1:{app.port}",
             f"Authorization: Bearer {app.token}", *(f"{k.replace('_', '-')}: {v}"
                                                      for k, v in headers.items())]
    return "\r\n".join(lines) + "\r\n\r\n"


# --- body sizes ------------------------------------------------------------------------------

@pytest.mark.parametrize(("path", "limit"), [("/api/workers", 512 * KIB),
                                             ("/api/history/import", 2 * MIB)])
def test_a_body_over_its_content_length_limit_is_refused_before_it_is_sent(apps, path, limit):
    app = apps.start("--max-import", str(2 * MIB))
    # Only the headers go out: the 413 must come without the server waiting for the body.
    started = time.monotonic()
    with raw_request(app, head(app, "POST", path, Content_Type="application/json",
                               Content_Length=str(limit + 1))) as sock:
        answer = read_response(sock, timeout=5)
    assert status_of(answer) == 413, answer[:500]
    assert time.monotonic() - started < 2
    text = answer.decode()
    assert LIMIT_WORDS in text and ("--max-import" in text if "import" in path
                                    else "--max-body" in text), text
    # Just under the limit is read and judged on its content.
    with app.client() as http:
        ok = http.post(path, content=b" " * (limit - 1),
                       headers={"Content-Type": "application/json"})
    assert ok.status_code == 422, ok.text


@pytest.mark.parametrize(("path", "limit"), [("/api/workers", 512 * KIB),
                                             ("/api/history/import", 2 * MIB)])
def test_a_chunked_body_is_refused_as_it_streams_past_the_limit(apps, path, limit):
    app = apps.start("--max-import", str(2 * MIB))
    sock = raw_request(app, head(app, "POST", path, Content_Type="application/json",
                                 Transfer_Encoding="chunked"))
    chunk = b"%x\r\n%s\r\n" % (64 * KIB, b" " * (64 * KIB))
    sent, answer = 0, b""
    with sock:
        sock.settimeout(0.05)
        # Send until the server answers (bounded: four times the limit at most).
        while sent < 4 * limit and not answer:
            try:
                sock.sendall(chunk)
                sent += 64 * KIB
            except (BrokenPipeError, ConnectionResetError):
                break
            try:
                answer = sock.recv(65536)
            except socket.timeout:
                pass
        answer += read_response(sock, timeout=5)
    assert status_of(answer) == 413, answer[:500]
    assert LIMIT_WORDS in answer.decode()
    assert sent < 4 * limit


def test_an_oversized_page_import_is_refused_with_a_page(apps):
    app = apps.start("--max-import", str(2 * MIB))
    with httpx.Client(base_url=app.base, timeout=10) as http:
        assert http.get("/", params={"token": app.token}).status_code == 303
        with raw_request(app, head(app, "POST", "/history/import", Origin=app.origin,
                                   Content_Type="multipart/form-data; boundary=x",
                                   Content_Length=str(3 * MIB))) as sock:
            answer = read_response(sock, timeout=5)
    assert status_of(answer) == 413, answer[:500]
    assert b"text/html" in answer and b"2 MiB" in answer and b"--max-import" in answer


def test_health_answers_while_a_big_import_is_refused(apps):
    """A 100 MB upload does not stall the dashboard: it is refused before it is read."""
    app = apps.start()

    async def scenario():
        async with httpx.AsyncClient(base_url=app.base, timeout=10) as http:
            latencies = []

            async def poll():
                for _ in range(40):
                    started = time.monotonic()
                    assert (await http.get("/api/health")).status_code == 200
                    latencies.append(time.monotonic() - started)
                    await asyncio.sleep(0.01)

            def upload():
                with raw_request(app, head(app, "POST", "/api/history/import",
                                           Content_Length=str(100 * MIB))) as sock:
                    return read_response(sock, timeout=5)

            answer, _ = await asyncio.gather(asyncio.to_thread(upload), poll())
            assert status_of(answer) == 413
            assert b"32 MiB" in answer
            assert max(latencies) < 0.25, latencies

    asyncio.run(scenario())


# --- what error messages repeat -------------------------------------------------------------

def test_deeply_nested_json_is_a_422_not_a_500(apps):
    app = apps.start()
    with app.client() as http:
        for path in ("/api/workers", "/api/experiments/binding"):
            response = http.post(path, content=b"[" * 200_000,
                                 headers={"Content-Type": "application/json"})
            assert response.status_code == 422, (path, response.text[:300])
            assert "nested too deeply" in response.json()["error"]
        assert http.get("/api/health").status_code == 200
    assert "Traceback" not in app.log()


def test_a_long_name_is_refused_without_echoing_it_back(apps):
    app = apps.start()
    name = "n" * 400_000
    with app.client() as http:
        response = http.post("/api/workers", json={"kind": "server", "host": "127.0.0.1",
                                                   "port": 0, "name": name})
    assert response.status_code == 422, response.text[:300]
    assert len(response.content) < 1000, len(response.content)
    error = response.json()["error"]
    assert "400000 characters" in error and "up to 48" in error, error


def test_a_long_name_typed_in_the_form_is_kept_once_not_echoed_in_the_error(apps):
    app = apps.start()
    name = "n" * 400_000
    with app.client(auth=False, headers={**app.cookie, "Origin": app.origin}) as http:
        response = http.post("/workers", data={"kind": "server", "host": "127.0.0.1",
                                               "port": "0", "name": name})
    assert response.status_code == 422, response.text[:300]
    assert "400000 characters" in response.text
    # What was typed stays in its field (once); the error line does not repeat it.
    assert response.text.count(name) == 1, len(response.text)
    assert len(response.text) < len(name) + 100_000


# --- slow-loris -----------------------------------------------------------------------------

def open_files(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def test_connections_that_never_finish_their_headers_are_closed(apps):
    """300 connections that send half a request each, against a cap of 100 and a 2 s header
    deadline: the app never holds much more than the cap, the real user gets in meanwhile,
    and every one of them is closed within the deadline."""
    app = apps.start("--header-timeout", "2", "--max-connections", "100")
    baseline = open_files(app.proc.pid)
    loris = []
    try:
        started = time.monotonic()
        for _ in range(300):
            sock = socket.create_connection(("127.0.0.1", app.port), timeout=5)
            sock.sendall(f"GET /api/workers HTTP/1.1\r\nHost: 127.0.0.1:{app.port}\r\nX-a: "
                         .encode())
            loris.append(sock)
        opened = time.monotonic() - started
        assert opened < 2, f"opening took {opened:.1f} s: the test would not show the deadline"
        peak = open_files(app.proc.pid)
        with app.client() as http:
            for _ in range(5):
                t0 = time.monotonic()
                response = http.get("/api/workers")
                assert response.status_code == 200, response.text
                assert time.monotonic() - t0 < 0.5
            assert httpx.get(f"{app.base}/api/health", timeout=5).status_code == 200
        peak = max(peak, open_files(app.proc.pid))
        assert peak - baseline <= 110, (baseline, peak)
        # Within the deadline (and a little slack) the server has closed every one of them.
        deadline = started + 2 + 3
        still_open = list(loris)
        while still_open and time.monotonic() < deadline:
            for sock in list(still_open):
                sock.settimeout(0.01)
                try:
                    if sock.recv(1) == b"":
                        still_open.remove(sock)
                except socket.timeout:
                    pass
                except ConnectionResetError:
                    still_open.remove(sock)
        assert not still_open, f"{len(still_open)} of 300 half-open connections still open"
    finally:
        for sock in loris:
            sock.close()


def test_headers_without_end_are_refused(apps):
    app = apps.start()
    with raw_request(app, f"GET / HTTP/1.1\r\nHost: 127.0.0.1:{app.port}\r\n") as sock:
        try:
            for _ in range(40):  # 40 x 4 KiB: past the 64 KiB that headers may take
                sock.sendall(b"X-Filler: " + b"x" * 4086 + b"\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass
        answer = read_response(sock, timeout=5)
    assert status_of(answer) == 431, answer[:300]
    assert b"larger than 64 KiB" in answer


@pytest.mark.parametrize(("flag", "value", "words"), [
    ("--header-timeout", "0", "seconds above 0"),
    ("--max-connections", "3", "at least 16"),
    ("--max-body", "10", "at least 1024 bytes"),
    ("--max-import", "lots", "not a whole number"),
    ("--max-token-failures-total", "-1", "not a whole number"),
])
def test_limits_that_would_break_the_dashboard_are_refused_at_start(flag, value, words):
    done = subprocess.run([sys.executable, "-m", "webapp", "--port", "0", flag, value],
                          capture_output=True, text=True, timeout=30, cwd=REPO,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert done.returncode == 2, done.stdout + done.stderr
    assert flag in done.stderr and words in done.stderr, done.stderr
    assert "Traceback" not in done.stderr
