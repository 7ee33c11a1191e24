"""SIGTERM and SIGINT with dozens of live workers: exit 0 within a few seconds, every socket
closed (each UDP port the workers held binds again at once), no traceback."""

import signal
import socket
import time

import pytest

LOOPBACK = "127.0.0.1"
EXIT_WITHIN = 5.0
WORKERS = 40


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_with_dozens_of_workers_exits_cleanly_and_frees_every_port(apps, until, signum):
    app = apps.start()
    with app.client() as http:
        servers = [http.start(kind="server", host=LOOPBACK, port=0, reply="echo")
                   for _ in range(16)]
        listeners = [http.start(kind="listener", host="0.0.0.0", port=0) for _ in range(8)]
        ports = [s["local"][1] for s in servers]
        clients = [http.start(kind="client", host=LOOPBACK, port=ports[i], count=100_000,
                              interval=0.01, message=f"busy {i}") for i in range(8)]
        streams = [http.start(kind="stream", host=LOOPBACK, port=ports[8 + i],
                              count=10_000_000, rate=200) for i in range(8)]
        assert len(http.started) == WORKERS
        # Every client has sent (so has its port) and traffic flows when the signal comes.
        clients = [until(lambda c=c: (w := http.get(f"/api/workers/{c['id']}").json())
                         ["counters"]["replies"] > 0 and w, f"{c['id']} to get a reply")
                   for c in clients]
        held = [tuple(w["local"]) for w in (*servers, *listeners, *clients, *streams)]
        assert len(set(held)) == WORKERS and all(port for _, port in held), held
        assert http.get("/api/stats").json()["alive"] == WORKERS

    started = time.monotonic()
    app.proc.send_signal(signum)
    try:
        code = app.proc.wait(timeout=EXIT_WITHIN)
    except Exception:
        code = None
    took = time.monotonic() - started
    assert code == 0, f"exit code {code} {took:.1f} s after {signum.name}:\n{app.log()}"
    assert took < EXIT_WITHIN

    not_free = []
    for host, port in held:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            try:
                sock.bind((host, port))
            except OSError as exc:
                not_free.append((host, port, exc.strerror))
    assert not not_free, f"ports still held after exit: {not_free}"
    log = app.log()
    assert "Traceback" not in log and "ERROR" not in log, log
    assert "UDP Lab stopped" in app.output()


def test_sigterm_with_streams_sending_flat_out_exits_cleanly(apps, until):
    """Streams send from threads of their own, as fast as they can: SIGTERM still ends udplab
    promptly with exit 0 and no traceback, and no datagram arrives after it has exited (no
    sending thread outlived its worker)."""
    app = apps.start()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sink:
        sink.bind((LOOPBACK, 0))
        sink.settimeout(0.05)
        with app.client() as http:
            streams = [http.start(kind="stream", host=LOOPBACK, port=sink.getsockname()[1],
                                  count=10_000_000, size=64, rate=1_000_000)
                       for _ in range(3)]
            for stream in streams:
                until(lambda s=stream: http.get(f"/api/workers/{s['id']}").json()
                      ["counters"]["sent"] > 10_000, f"{stream['id']} under way")
        started = time.monotonic()
        app.proc.send_signal(signal.SIGTERM)
        code = app.proc.wait(timeout=EXIT_WITHIN)
        took = time.monotonic() - started
        assert code == 0 and took < EXIT_WITHIN, f"exit {code} after {took:.1f} s:\n{app.log()}"
        log = app.log()
        assert "Traceback" not in log and "ERROR" not in log, log
        for _ in range(100_000):  # what was queued before the exit (a few hundred at most)
            try:
                sink.recv(2048)
            except TimeoutError:
                break
        sink.settimeout(0.5)
        with pytest.raises(TimeoutError):
            sink.recv(2048)
