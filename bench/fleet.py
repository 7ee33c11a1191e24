"""Fleet benchmark (issue 15): 40 `udplab agent` processes on one dashboard, through a real
nats-server on a free loopback port, each agent running a client at 10 requests/s to a server
on the dashboard's own machine.

  .venv/bin/python bench/fleet.py [--agents 40] [--seconds 20] [--rounds 100]

Measures: each agent's idle RSS; the time to start a worker on a remote machine through the
JSON API (p50/p99: the 40 clients, then `--rounds` servers started and removed); the
dashboard's CPU while the 40 clients run; and how late a remote event reaches a watcher of
/api/events (p50/p99, the event's own time to its arrival: what a page row waits for).
Loopback only; every loop is bounded in count and time.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from common import (PY, ROOT, cpu_seconds, end, percentile, rss_kib, save, start_udplab,
                    stop_udplab, table, wait_for)

from webapp.fleet import config

NATS_SERVER = "/usr/sbin/nats-server"
SERVER_PORT = 1099


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def watch_events(live, stop: threading.Event, lags: list[float]) -> None:
    """Collect, for each remote event on /api/events, now minus its time."""
    from websockets.sync.client import connect

    with connect(f"{live.ws_base}/api/events",
                 additional_headers={**live.bearer, "Origin": live.origin}) as ws:
        while not stop.is_set():
            try:
                message = json.loads(ws.recv(timeout=1))
            except TimeoutError:
                continue
            now = time.time()
            lags.extend(now - e["time"] for e in message.get("events", ())
                        if e.get("machine") not in (None, "local"))


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--agents", type=int, default=40)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--rounds", type=int, default=100)
    args = parser.parse_args()
    names = [f"m{i:02d}" for i in range(1, args.agents + 1)]
    directory = Path(tempfile.mkdtemp(prefix="udplab-fleet-bench-"))
    port = free_port()
    config.init(directory, names, listen=f"127.0.0.1:{port}")
    url = f"nats://127.0.0.1:{port}"
    nats = subprocess.Popen([NATS_SERVER, "-c", str(directory / "nats-server.conf")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    agents: list[subprocess.Popen] = []
    live = None
    results: dict = {}
    try:
        live = start_udplab(args=("--max-token-failures", "0", "--nats", url, "--creds",
                                  str(directory / "dashboard.creds")))
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        for name in names:
            agents.append(subprocess.Popen(
                [PY, "-m", "webapp", "agent", "--nats", url, "--name", name, "--creds",
                 str(directory / f"{name}.creds")], cwd=ROOT, env=env,
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL))
        with live.client() as http:
            def all_up():
                machines = http.get("/api/machines").json()["machines"]
                return sum(1 for m in machines if m["state"] == "up" and not m["local"]) \
                    == len(names)
            if not wait_for(all_up, timeout=120, step=0.5):
                raise SystemExit("not every agent said hello within 120 s")
            time.sleep(3)  # settle: imports done, first hellos sent
            idle = [rss_kib(a.pid) / 1024 for a in agents]
            server = http.post("/api/workers", json={"kind": "server", "host": "127.0.0.1",
                                                     "port": SERVER_PORT}).json()
            starts = []
            for name in names:
                t = time.perf_counter()
                response = http.post("/api/workers", json={
                    "machine": name, "kind": "client", "host": "127.0.0.1",
                    "port": SERVER_PORT, "count": 1_000_000, "interval": 0.1})
                starts.append(time.perf_counter() - t)
                assert response.status_code == 201, response.text
            time.sleep(2)
            lags: list[float] = []
            stop = threading.Event()
            watcher = threading.Thread(target=watch_events, args=(live, stop, lags))
            watcher.start()
            received0 = http.get(f"/api/workers/{server['id']}").json()["counters"]["received"]
            cpu0, t0 = cpu_seconds(live.proc.pid), time.monotonic()
            time.sleep(args.seconds)
            cpu1, t1 = cpu_seconds(live.proc.pid), time.monotonic()
            received1 = http.get(f"/api/workers/{server['id']}").json()["counters"]["received"]
            stop.set()
            watcher.join(timeout=10)
            busy_rss = [rss_kib(a.pid) / 1024 for a in agents]
            for _ in range(args.rounds):
                t = time.perf_counter()
                started = http.post("/api/workers", json={"machine": names[-1],
                                                          "kind": "server", "port": 0})
                starts.append(time.perf_counter() - t)
                http.delete(f"/api/workers/{started.json()['id']}")
            results = {
                "agents": len(names),
                "requests_per_s": (received1 - received0) / (t1 - t0),
                "dashboard_cpu_pct": 100 * (cpu1 - cpu0) / (t1 - t0),
                "dashboard_rss_mib": rss_kib(live.proc.pid) / 1024,
                "start_p50_ms": 1000 * statistics.median(starts),
                "start_p99_ms": 1000 * percentile(starts, 99),
                "event_lag_p50_ms": 1000 * statistics.median(lags) if lags else float("nan"),
                "event_lag_p99_ms": 1000 * percentile(lags, 99),
                "events_seen": len(lags),
                "agent_idle_rss_mib": statistics.median(idle),
                "agent_idle_rss_max_mib": max(idle),
                "agent_busy_rss_mib": statistics.median(busy_rss),
                "starts": len(starts),
            }
    finally:
        for agent in agents:
            end(agent, timeout=10)
        if live is not None:
            stop_udplab(live)
        end(nats)
    rows = [[k, v] for k, v in results.items()]
    print(table(f"fleet: {args.agents} agents on loopback, each a client at 10 requests/s",
                ["measure", "value"], rows))
    save("fleet", results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
