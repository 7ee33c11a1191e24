"""A stream sender's pacing under CPU load: what a receiver with a default buffer loses.

A `stream` worker sends COUNT datagrams of 200 bytes at RATE a second to a plain receiving
process (a blocking `recv` loop, as the book's programs read) with the default receive
buffer (~166 such datagrams), while LOAD busy-loop processes compete for the cores. Per run:
datagrams lost, the most that left within one millisecond (from the send times the
datagrams carry), the longest gap between two sends, and how long the stream took.

  .venv/bin/python bench/pacing.py [--runs 4] [--load 2] [--rate 50000] [--count 2000]

Loopback only; bounded (each run ends when the stream does, or 5 s).
"""

import argparse
import asyncio
import multiprocessing
import socket
import time

from common import table
from webapp.engine import Supervisor
from webapp.engine.stream import unpack


def receive(ports: multiprocessing.Queue, sent_times: multiprocessing.Queue, count: int) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.settimeout(1.0)
        ports.put(sock.getsockname()[1])
        times = []
        try:
            while len(times) < count:
                times.append(unpack(sock.recv(2048))[2])
        except TimeoutError:
            pass
        sent_times.put(times)


def busy(until: float) -> None:
    while time.monotonic() < until:
        pass


async def one_run(rate: int, count: int) -> list:
    ports, sent_times = multiprocessing.Queue(), multiprocessing.Queue()
    receiver = multiprocessing.Process(target=receive, args=(ports, sent_times, count))
    receiver.start()
    port = ports.get(timeout=5)
    async with Supervisor() as sup:
        sender = await sup.start({"kind": "stream", "port": port, "count": count, "size": 200,
                                  "rate": rate})
        await asyncio.wait([sender.task], timeout=5)
    times = sorted(sent_times.get(timeout=10))
    receiver.join(5)
    busiest, first = 0, 0
    for last, at in enumerate(times):
        while at - times[first] > 0.001:
            first += 1
        busiest = max(busiest, last - first + 1)
    gap = max((b - a for a, b in zip(times, times[1:])), default=0.0)
    return [count - len(times), busiest, gap * 1000, (times[-1] - times[0]) * 1000]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=4)
    parser.add_argument("--load", type=int, default=2, help="busy-loop processes")
    parser.add_argument("--rate", type=int, default=50_000)
    parser.add_argument("--count", type=int, default=2000)
    args = parser.parse_args()
    rows = []
    for run in range(1, min(args.runs, 50) + 1):
        loaders = [multiprocessing.Process(target=busy, args=(time.monotonic() + 3.0,))
                   for _ in range(min(args.load, 8))]
        for p in loaders:
            p.start()
        time.sleep(0.2)
        rows.append([run] + asyncio.run(one_run(args.rate, args.count)))
        for p in loaders:
            p.join(5)
    print(table(f"Stream of {args.count} x 200 B at {args.rate}/s to a default buffer, "
                f"{args.load} busy loops", ["run", "lost", "most in 1 ms", "longest gap ms",
                                             "stream ms"], rows))


if __name__ == "__main__":
    main()
