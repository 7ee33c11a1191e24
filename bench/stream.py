"""Benchmark 7, stream sender: UDP Lab's `stream` worker against `iperf3 -u` (issue 17).

Both send as fast as they can on loopback, at 64 and 1400 bytes of UDP payload, with the
sender pinned to CPU 0 (udplab with `taskset -a`, every thread) and the receiver on CPU 1:
* UDP Lab: a `stream` worker (`rate` 1 000 000/s, its most, so it never waits) in a udplab
  with no watcher; the receiver is the book's `recvfrom` loop (bench/plain_receiver.py,
  4 MiB buffer). Rate = growth of the worker's `sent` counter between two API reads SECONDS
  apart (after 0.5 s of warm-up) ÷ the time between them; udplab's CPU over the same window.
* iperf3 (Debian's package, `make bench` installs it): `iperf3 -s -1` on CPU 1 and
  `iperf3 -c 127.0.0.1 -u -b 0 -l SIZE -t SECONDS -J` on CPU 0; rate = the client's
  packets ÷ its seconds.

The stream worker sends from an OS thread of its own (named `udp:<worker name>`, cut to 15
bytes): it is made after the pinning and inherits CPU 0 from udplab's event-loop thread, so
the same pinning holds; the bench checks that it is there and on CPU 0, and gives its own CPU
time too (`thread per CPU-s`: datagrams ÷ the sending thread's CPU, the figure to set beside
iperf3's single thread; `udplab per CPU-s` counts every thread of udplab).

ROUNDS rounds alternate the two; medians, and the ratio UDP Lab / iperf3 (target ≥ 0.8×).
On a shared machine a sender pinned to a busy core gets only part of it, so each is also
given per CPU-second of its own (datagrams ÷ its CPU time: schedstat for udplab over the
window, iperf3's own `cpu_utilization_percent.host_total` × its seconds): the rate one whole
core would give. The verdict uses both: the wall rate when the machine is quiet.

  .venv/bin/python bench/stream.py [--seconds 2] [--rounds 2] [--sizes 64,1400]

Loopback only; every process started is bounded in time and stopped.
"""

import argparse
import itertools
import json
import os
import shutil
import socket
import subprocess
import time

import httpx

from common import (PY, BENCH, cpu_ns, end, machine, median, save, spawn_pinned, start_udplab,
                    stop_udplab, table)

NAMES = itertools.count(1)  # a stopped worker keeps its name on the dashboard: a new one each
SENDER_CPU = "0"
RECEIVER_CPU = "1"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def sender_thread(pid: int, name: str) -> int | None:
    """The id of the stream's sending thread (`udp:<name>`, as the kernel keeps it: 15 bytes),
    checked to be pinned to SENDER_CPU; None for a udplab that sends from its event loop."""
    comm = f"udp:{name}".encode()[:15].decode(errors="ignore")
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{task}/comm") as f:
                if f.read().strip() != comm:
                    continue
        except FileNotFoundError:
            continue
        cpus = os.sched_getaffinity(int(task))
        assert cpus == {int(SENDER_CPU)}, f"the sending thread {comm} runs on CPUs {cpus}"
        return int(task)
    return None


def thread_ns(pid: int, tid: int | None) -> int:
    """Time on CPU of one thread, in nanoseconds (0 without one)."""
    if tid is None:
        return 0
    with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
        return int(f.read().split()[0])


def udplab_case(server, api, size: int, seconds: float) -> dict:
    receiver = spawn_pinned(RECEIVER_CPU, [PY, str(BENCH / "plain_receiver.py"),
                                           4 * 1024 * 1024, seconds + 60],  # ended below
                            stdout=subprocess.PIPE, text=True)
    name = f"stream-{size}-{next(NAMES)}"
    try:
        port = int(receiver.stdout.readline())
        worker = api.post("/api/workers", json={"kind": "stream", "name": name,
                                                "host": "127.0.0.1", "port": port,
                                                "size": size, "rate": 1_000_000,
                                                "count": 10_000_000})
        assert worker.status_code == 201, worker.text
        time.sleep(0.5)
        pid = server.proc.pid
        tid = sender_thread(pid, name)
        sent0 = api.get(f"/api/workers/{name}").json()["counters"]["sent"]
        ns0, t0, tns0 = cpu_ns(pid), time.perf_counter(), thread_ns(pid, tid)
        time.sleep(seconds)
        sent1 = api.get(f"/api/workers/{name}").json()["counters"]["sent"]
        ns1, t1, tns1 = cpu_ns(pid), time.perf_counter(), thread_ns(pid, tid)
        counters = api.get(f"/api/workers/{name}").json()["counters"]
        api.delete(f"/api/workers/{name}")
    finally:
        end(receiver)
    return {"rate": (sent1 - sent0) / (t1 - t0), "cpu_pct": (ns1 - ns0) / 1e9 / (t1 - t0) * 100,
            "per_cpu_second": (sent1 - sent0) / max(1e-9, (ns1 - ns0) / 1e9),
            "thread_per_cpu_second": (sent1 - sent0) / ((tns1 - tns0) / 1e9) if tid else None,
            "blocked": counters["blocked"], "errors": counters["errors"]}


def iperf_case(iperf: str, size: int, seconds: float) -> dict:
    port = free_port()
    receiver = spawn_pinned(RECEIVER_CPU, [iperf, "-s", "-1", "-B", "127.0.0.1", "-p", port],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(0.3)  # the server's control socket listens
        client = subprocess.Popen(["taskset", "-c", SENDER_CPU, iperf, "-c", "127.0.0.1", "-p",
                                   str(port), "-u", "-b", "0", "-l", str(size), "-t",
                                   str(seconds), "-J"], stdout=subprocess.PIPE, text=True)
        try:
            out, _ = client.communicate(timeout=seconds + 30)
        finally:
            end(client)
    finally:
        end(receiver)
    report = json.loads(out)
    if "error" in report:
        raise RuntimeError(f"iperf3: {report['error']}")
    total = report["end"]["sum"]
    cpu = report["end"].get("cpu_utilization_percent", {}).get("host_total", 0.0)
    return {"rate": total["packets"] / total["seconds"], "cpu_pct": cpu,
            "per_cpu_second": total["packets"] / max(1e-9, cpu / 100 * total["seconds"])}


def run(sizes: list[int], seconds: float, rounds: int) -> dict:
    iperf = shutil.which("iperf3")
    if iperf is None:
        raise SystemExit("iperf3 is missing: `make bench` installs Debian's iperf3 "
                         "(or apt-get install iperf3)")
    server = start_udplab(cpus=SENDER_CPU)
    cases = []
    try:
        api = httpx.Client(base_url=server.base, headers=server.bearer, timeout=10)
        for size in sizes:
            ours, theirs = [], []
            for r in range(rounds):  # alternated, the first one rotated each round
                pair = [lambda: ours.append(udplab_case(server, api, size, seconds)),
                        lambda: theirs.append(iperf_case(iperf, size, seconds))]
                for step in pair[r % 2:] + pair[:r % 2]:
                    step()
            udplab_rate = median([c["rate"] for c in ours])
            iperf_rate = median([c["rate"] for c in theirs])
            udplab_core = median([c["per_cpu_second"] for c in ours])
            iperf_core = median([c["per_cpu_second"] for c in theirs])
            cases.append({"size": size, "udplab": ours, "iperf3": theirs,
                          "udplab_rate": udplab_rate, "iperf3_rate": iperf_rate,
                          "ratio": udplab_rate / iperf_rate,
                          "udplab_per_core": udplab_core, "iperf3_per_core": iperf_core,
                          "thread_per_core": median([c["thread_per_cpu_second"] for c in ours])
                          if all(c["thread_per_cpu_second"] for c in ours) else None,
                          "core_ratio": udplab_core / iperf_core,
                          "udplab_cpu_pct": median([c["cpu_pct"] for c in ours])})
        api.close()
    finally:
        stop_udplab(server)
    version = subprocess.run([iperf, "--version"], capture_output=True, text=True).stdout
    return {"machine": machine(), "seconds": seconds, "rounds": rounds, "cases": cases,
            "iperf3": version.split("\n")[0]}


def report(res: dict) -> str:
    rows = [[c["size"], f"{c['udplab_rate']:,.0f}", f"{c['iperf3_rate']:,.0f}",
             f"{c['ratio']:.2f}x", f"{c['udplab_per_core']:,.0f}", f"{c['iperf3_per_core']:,.0f}",
             f"{c['core_ratio']:.2f}x",
             f"{c['thread_per_core']:,.0f}" if c["thread_per_core"] else "-",
             f"{c['udplab_cpu_pct']:.0f}",
             " ".join(f"{x['rate']:,.0f}" for x in c["udplab"]),
             " ".join(f"{x['rate']:,.0f}" for x in c["iperf3"])] for c in res["cases"]]
    return table(f"Stream sender vs {res['iperf3']} -u, loopback, sender on CPU 0, receiver on "
                 f"CPU 1, {res['seconds']:g} s x {res['rounds']} rounds (medians)",
                 ["bytes", "udplab datagrams/s", "iperf3 datagrams/s", "udplab / iperf3",
                  "udplab per CPU-s", "iperf3 per CPU-s", "per CPU-s ratio", "thread per CPU-s",
                  "udplab CPU %", "udplab rounds", "iperf3 rounds"], rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="64,1400")
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    res = run([int(s) for s in args.sizes.split(",")], args.seconds, args.rounds)
    save("stream", res)
    print(report(res))


if __name__ == "__main__":
    main()
