"""Benchmark 2, ingest: datagrams/s a worker takes in from a fast sender on loopback, with
events on (one JSON watcher connected to WS /api/events, reading every message).

Sender: bench/c/blast.c (sendmmsg, 64 datagrams a call) on CPU 1; the udplab process on CPU 0;
the watcher on CPU 1. Each case sends flat out for SECONDS; the rate is the worker's
`received` counter growth between two API reads around the send, divided by the time between
them. Loss = sent - received; kernel drops are read from /proc/net/udp's `drops` column.

Receive buffers: the `listener` worker has no rcvbuf option, so the default-buffer cases use a
listener (default SO_RCVBUF, net.core.rmem_default) and the 4 MiB cases a `server` worker with
`reply: none` and `rcvbuf: 4194304` (the kernel doubles it; net.core.rmem_max caps it). Both
emit one `received` event per datagram. Then, with the 4 MiB buffer, the sender is paced at
80% of the measured maximum, or at 200 000/s (80 % of issue 8's 250 000) where that is less,
to see whether 0 loss holds there; where 80 % of the maximum is more, it is measured too, as
headroom. Last, both the engine (the 4 MiB server) and the plain loop take a paced PACED
datagrams/s (40 000) of 64 bytes: CPU per datagram of the whole udplab process against the
plain loop's (issue 17's target: ≤ 1.1×).
`--pinning split` (issue 17): udplab's UDP threads on CPU 0, the rest of udplab on CPU 1 with
the sender and the watcher. Each worker gets one datagram before its case (its reader thread
starts on the first), not counted in the case. `--engine agent` (issue 17, bench/engine.py):
the worker runs in a `udplab agent` process on CPU 0, driven by a dashboard on CPU 1 over a
private nats-server (CPU 1), the watcher on the dashboard; CPU per datagram is agent +
dashboard, nats-server's apart. Counters are exact when received = sent - kernel drops.

  .venv/bin/python bench/ingest.py [--seconds 2] [--pinning split] [--paced 40000]
                                   [--engine agent]
"""

import argparse
import time

import httpx

import subprocess

from common import (BENCH, PINNINGS, PY, Watchers, build_c, cpu_ns, cpu_ns_of_threads,
                    load_average, machine, prime, run_pinned, save, spawn_pinned, table,
                    udp_socket, wait_for)
from engine import ENGINES, Engine, stop_on_sigterm, udplab_ns

CPU = "0"
SENDER_CPU = "1"
MIB4 = 4 * 1024 * 1024
LOSS_RATE = 200_000  # issue 8: 0 lost at 80 % of its 250 000/s, with a 4 MiB buffer


def read_received(api: httpx.Client, name: str) -> int:
    return api.get(f"/api/workers/{name}").json()["counters"]["received"]


def one_case(api, tools, watchers, *, engine, name, spec, size, seconds, rate=0,
             pinning="shared") -> dict:
    worker = api.post("/api/workers", json=engine.spec({"name": name, "host": "127.0.0.1",
                                                        "port": 0, **spec}))
    assert worker.status_code == 201, worker.text
    port = worker.json()["local"][1]
    name = worker.json()["id"]  # `<machine>:<id>` on the agent
    prime(port)  # its reader thread starts on a first datagram
    primed = wait_for(lambda: read_received(api, name), 3)
    engine.place(pinning)
    drops0 = udp_socket(port)["drops"]
    before = watchers.stats()
    parts0 = engine.cpu()
    udp_pid = engine.parts.get("agent", engine.parts.get("udplab"))
    udp0 = cpu_ns_of_threads(udp_pid)
    t0, c0 = time.perf_counter(), read_received(api, name)
    out = run_pinned(SENDER_CPU, [tools["blast"], port, size, seconds, rate],
                     timeout=seconds + 30)
    c1, t1 = read_received(api, name), time.perf_counter()
    sent, errors, elapsed = out.split()
    sent, elapsed = int(sent), float(elapsed)
    # let the worker finish what waits in its queue (bounded)
    last, deadline = -1, time.monotonic() + 5
    while time.monotonic() < deadline:
        now = read_received(api, name)
        if now == last and udp_socket(port)["rx_queue"] == 0:
            break
        last = now
        time.sleep(0.1)
    received = read_received(api, name) - primed
    drops = udp_socket(port)["drops"] - drops0
    time.sleep(0.2)
    parts1 = engine.cpu()
    udp1 = cpu_ns_of_threads(udp_pid)
    counted = max(1, received + primed - c0)
    cpu_us = (udplab_ns(parts1) - udplab_ns(parts0)) / 1e3 / counted
    parts_us = {p: (parts1[p] - parts0[p]) / 1e3 / counted for p in parts1}
    after = watchers.stats()
    api.delete(f"/api/workers/{name}")
    return {
        "worker": spec["kind"], "size": size, "rcvbuf": spec.get("rcvbuf"), "target_rate": rate,
        "sent": sent, "send_rate": sent / elapsed, "received": received,
        "rate": (c1 - c0) / (t1 - t0), "lost": sent - received, "kernel_drops": drops,
        "loss_pct": 100.0 * (sent - received) / sent if sent else 0.0, "load": load_average(),
        "cpu_us": cpu_us, "capacity": 1e6 / cpu_us, "parts_us": parts_us,
        "nats_us": parts_us.get("nats"), "exact": received == sent - drops,
        "udp_thread_us": (udp1 - udp0) / 1e3 / counted,
        "watcher_events": after["events"] - before["events"],
        "watcher_dropped": after["dropped"] - before["dropped"],
    }


def reference(tools, size: int, rcvbuf: int, seconds: float, rate: int = 0) -> dict:
    """The same flat-out send to bench/plain_receiver.py (the book's recvfrom loop, no events),
    also on CPU 0: what a plain Python socket takes in here."""
    proc = spawn_pinned(CPU, [PY, BENCH / "plain_receiver.py", rcvbuf, seconds + 5],
                        stdout=subprocess.PIPE, text=True)
    try:
        port = int(proc.stdout.readline())
        drops0 = udp_socket(port)["drops"]
        ns0 = cpu_ns(proc.pid)
        out = run_pinned(SENDER_CPU, [tools["blast"], port, size, seconds, rate],
                         timeout=seconds + 30)
        drops = udp_socket(port)["drops"] - drops0
        time.sleep(0.2)  # it drains its queue, then waits 0.5 s for more
        ns = cpu_ns(proc.pid) - ns0
        count, elapsed = proc.communicate(timeout=seconds + 15)[0].split()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    sent, _, send_s = out.split()
    sent, count = int(sent), int(count)
    return {"worker": "plain Python", "size": size, "rcvbuf": rcvbuf or None,
            "buffer": "4MiB" if rcvbuf else "default", "target_rate": rate, "sent": sent,
            "send_rate": sent / float(send_s), "received": count,
            "rate": count / float(elapsed), "lost": sent - count,
            "cpu_us": ns / 1e3 / count, "capacity": 1e9 / ns * count, "kernel_drops": drops,
            "loss_pct": 100.0 * (sent - count) / sent if sent else 0.0,
            "watcher_events": 0, "watcher_dropped": 0, "reference": True,
            "load": load_average()}


def run(seconds: float, pinning: str = "shared", paced: int = 40_000,
        engine_kind: str = "inproc") -> dict:
    tools = build_c()
    engine = Engine(engine_kind, CPU, SENDER_CPU)
    server = engine.server
    note = engine.note(pinning)
    cases = []
    try:
        api = httpx.Client(base_url=server.base, headers=server.bearer, timeout=10)
        with Watchers(server, "json", 1, cpus=SENDER_CPU, parse=True) as watchers:
            maxima = {}
            for size in (64, 1400):
                for label, spec in (("default", {"kind": "listener"}),
                                    ("4MiB", {"kind": "server", "reply": "none",
                                              "rcvbuf": MIB4})):
                    case = one_case(api, tools, watchers, engine=engine,
                                    name=f"in-{size}-{label.lower()}", spec=spec, size=size,
                                    seconds=seconds, pinning=pinning)
                    case["buffer"] = label
                    cases.append(case)
                    maxima[(size, label)] = case["rate"]
            for size in (64, 1400):
                # Issue 8's target: 0 lost at 80 % of 250 000/s. Where the worker reaches
                # more, 80 % of what it reached is measured too, as headroom (no verdict).
                reached = int(0.8 * maxima[(size, "4MiB")])
                for rate in sorted({min(reached, LOSS_RATE), reached}):
                    case = one_case(api, tools, watchers, engine=engine,
                                    name=f"in-{size}-paced-{rate // 1000}k",
                                    spec={"kind": "server", "reply": "none", "rcvbuf": MIB4},
                                    size=size, seconds=seconds, rate=rate, pinning=pinning)
                    case["buffer"] = "4MiB"
                    case["headroom"] = rate > LOSS_RATE
                    cases.append(case)
            if paced:
                case = one_case(api, tools, watchers, engine=engine, name="in-64-fixed",
                                spec={"kind": "server", "reply": "none", "rcvbuf": MIB4},
                                size=64, seconds=seconds, rate=paced, pinning=pinning)
                case["buffer"] = "4MiB"
                case["fixed"] = True
                cases.append(case)
        api.close()
    finally:
        engine.close()
    engine_cases = list(cases)
    for size in (64, 1400):
        cases.append(reference(tools, size, 0, seconds))
    fixed = {}
    if paced:
        plain = reference(tools, 64, MIB4, seconds, paced)
        plain["fixed"] = True
        cases.append(plain)
        engine = next(c for c in engine_cases if c.get("fixed"))
        fixed = {"rate": paced, "engine_cpu_us": engine["cpu_us"], "plain_cpu_us": plain["cpu_us"],
                 "udp_thread_us": engine["udp_thread_us"],
                 "ratio": engine["cpu_us"] / plain["cpu_us"], "parts_us": engine["parts_us"]}
    engine_cases = [c for c in engine_cases if not c.get("fixed")]
    best = max(c["rate"] for c in engine_cases if c["target_rate"] == 0)
    paced = [c for c in cases if c["target_rate"] and not c.get("fixed")
             and not c.get("headroom")]
    return {"machine": machine(), "engine": engine_kind, "placement": note, "pinning": pinning,
            "fixed": fixed, "load_end": load_average(),
            "counters_exact": all(c.get("exact", True) for c in engine_cases),
            "max_over_plain": best / max(c["rate"] for c in cases if c.get("reference")
                                         and not c.get("fixed")),
            "seconds": seconds, "cases": cases, "max_rate": best,
            "max_rate_64": max(c["rate"] for c in engine_cases if c["size"] == 64
                               and not c["target_rate"]),
            "plain_python": {c["size"]: c["rate"] for c in cases if c.get("reference")},
            "zero_loss_at_80pct": all(c["lost"] == 0 for c in paced),
            "rmem_default": int(open("/proc/sys/net/core/rmem_default").read()),
            "rmem_max": int(open("/proc/sys/net/core/rmem_max").read())}


def report(res: dict) -> str:
    rows = []
    for c in res["cases"]:
        rows.append([c["worker"], c["size"], c["buffer"],
                     f"{c['target_rate']:,}/s" if c["target_rate"] else "max",
                     c["send_rate"], c["rate"], c["cpu_us"],
                     c["nats_us"] if c.get("nats_us") is not None else "",
                     c["capacity"], c["sent"], c["received"], c["lost"],
                     c["kernel_drops"], f"{c['loss_pct']:.2f}%", c["watcher_events"],
                     c["watcher_dropped"]])
    text = table(f"Ingest: datagrams/s taken in, events on (1 JSON watcher), "
                 f"{res.get('placement', res.get('pinning', 'shared'))}, "
                 f"sender on CPU 1, {res['seconds']:g} s per case; load average at the end "
                 f"{res.get('load_end', '?')}",
                 ["worker", "bytes", "rcvbuf", "sender", "sent/s", "taken in/s", "CPU µs/dgram",
                  "nats µs/dgram",
                  "1 core would take/s", "sent",
                  "received", "lost", "kernel drops", "loss", "watcher events",
                  "bus dropped"], rows)
    if res.get("fixed"):
        f = res["fixed"]
        text += (f"\nat a paced {f['rate']:,}/s, 64 B: udplab {f['engine_cpu_us']:.2f} µs CPU per "
                 f"datagram (all threads; its C receive thread {f['udp_thread_us']:.2f}, the rest "
                 f"{f['engine_cpu_us'] - f['udp_thread_us']:.2f}), the plain loop "
                 f"{f['plain_cpu_us']:.2f}: {f['ratio']:.2f}x")
        if len(f.get("parts_us", {})) > 1:
            text += " (by process: " + ", ".join(f"{p} {v:.2f}" for p, v in
                                                f["parts_us"].items()) + "; nats-server not in the sum)"
    if "counters_exact" in res:
        text += (f"\ntop rate {res['max_over_plain']:.2f}x the plain loop's; counters "
                 f"(the worker's, through the dashboard's API) = sent - kernel drops in every "
                 f"case: {'yes' if res['counters_exact'] else 'NO'}")
    text += ("\n`plain Python` rows: bench/plain_receiver.py, the book's recvfrom loop without "
             "events, same sender, same CPU: the reference")
    text += (f"\nnet.core.rmem_default={res['rmem_default']:,}, rmem_max={res['rmem_max']:,}; "
             "the 4 MiB cases are a `server` worker with reply none (listeners have no rcvbuf)")
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--pinning", choices=PINNINGS, default="shared",
                        help="shared: all of udplab on CPU 0 (before issue 17); split: its UDP "
                        "threads on CPU 0, the rest on CPU 1")
    parser.add_argument("--paced", type=int, default=40_000,
                        help="the fixed paced rate for CPU per datagram against the plain loop "
                        "(0: none)")
    parser.add_argument("--engine", choices=ENGINES, default="inproc",
                        help="inproc: the worker in the udplab process (default); agent: in a "
                        "`udplab agent` process on CPU 0 behind a dashboard on CPU 1 over NATS "
                        "(--pinning does not apply)")
    args = parser.parse_args()
    stop_on_sigterm("ingest")
    res = run(args.seconds, args.pinning, args.paced, args.engine)
    where = "agent" if args.engine == "agent" else args.pinning
    save("ingest" if where == "shared" else f"ingest-{where}", res)
    print(report(res))


if __name__ == "__main__":
    main()
