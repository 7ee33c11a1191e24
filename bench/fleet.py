"""Fleet latency (issue 15), on loopback: one `udplab agent` process and a dashboard-side
`Fleet` in this process, through a real nats-server on a free port.

  .venv/bin/python bench/fleet.py [--rounds 200]

Prints the round trip of a command (get a worker), the time to start a server on the
remote machine (p50/p99), and the agent's idle RSS. Not yet part of bench/run.py.
"""

import argparse
import asyncio
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from webapp.engine import Supervisor  # noqa: E402
from webapp.fleet import config  # noqa: E402
from webapp.fleet.connection import Connection  # noqa: E402
from webapp.fleet.fleet import Fleet  # noqa: E402
from webapp.fleet.machine import LocalMachine  # noqa: E402


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def measure(url: str, directory: Path, rounds: int) -> dict:
    async with Supervisor() as supervisor:
        fleet = Fleet(LocalMachine(supervisor))
        connection = Connection(url, config.Creds.load(directory / "dashboard.creds"),
                                name="bench")
        await connection.open()
        try:
            await fleet.join(connection)
            async with asyncio.timeout(10):
                while "a" not in fleet.machines:
                    await asyncio.sleep(0.05)
            worker = await fleet.start({"machine": "a", "kind": "server", "port": 0})
            gets, starts = [], []
            for _ in range(rounds):
                t = time.perf_counter()
                await fleet.get(worker["id"])
                gets.append(time.perf_counter() - t)
            for _ in range(max(rounds // 4, 10)):
                t = time.perf_counter()
                started = await fleet.start({"machine": "a", "kind": "server", "port": 0})
                starts.append(time.perf_counter() - t)
                await fleet.remove(started["id"])
            await fleet.remove(worker["id"])
        finally:
            await fleet.close()
    return {"get": gets, "start": starts}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        config.init(directory, ["a"], listen=f"127.0.0.1:{port}")
        url = f"nats://127.0.0.1:{port}"
        server = subprocess.Popen(["/usr/sbin/nats-server", "-c",
                                   str(directory / "nats-server.conf")],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        agent = None
        try:
            time.sleep(0.5)
            agent = subprocess.Popen(
                [sys.executable, "-m", "webapp", "agent", "--nats", url, "--name", "a",
                 "--creds", str(directory / "a.creds")], cwd=REPO,
                env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL)
            agent.stdout.readline()  # "... is serving the fleet ..."
            time.sleep(1.0)
            idle = rss_mib(agent.pid)
            result = asyncio.run(measure(url, directory, args.rounds))
        finally:
            for proc in (agent, server):
                if proc is not None:
                    proc.terminate()
                    proc.wait(timeout=10)
    ms = lambda v: f"{v * 1000:.2f} ms"  # noqa: E731
    print(f"command round trip (get), {len(result['get'])} rounds: "
          f"p50 {ms(statistics.median(result['get']))}, p99 {ms(pct(result['get'], 0.99))}")
    print(f"start a server on the remote machine, {len(result['start'])} rounds: "
          f"p50 {ms(statistics.median(result['start']))}, p99 {ms(pct(result['start'], 0.99))}")
    print(f"agent idle RSS: {idle:.1f} MiB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
