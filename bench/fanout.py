"""Benchmark 3, fan-out: the udplab process's CPU time per datagram with 0, 1, 10 and 100
real WebSocket watchers, for the JSON stream (WS /api/events, Bearer) and the page's HTML
stream (WS /ws/page, session cookie + Origin, as the browser connects).

A `server` worker (reply none, rcvbuf 4 MiB: one `received` event per datagram) takes RATE
datagrams/s of 64 bytes for SECONDS from bench/c/blast.c. The watchers are tasks of one
asyncio process (bench/watchers.py) reading every message. udplab runs on CPU 0; sender and
watchers on CPU 1. CPU = the sum of /proc/<pid>/task/*/schedstat run times of the udplab
process (ns; utime+stime from /proc/<pid>/stat as a cross-check) from the start of the send
until the watchers have had their last message; ÷ datagrams the worker received.

`--pinning split` (issue 17): udplab's UDP threads on CPU 0, the rest of udplab on CPU 1 with
the sender and the watchers. Each worker gets one datagram before its case (its reader thread
starts on the first).

  .venv/bin/python bench/fanout.py [--rate 5000] [--seconds 2] [--watchers 0,1,10,100]
                                   [--pinning split]
"""

import argparse
import time

import httpx

from common import (PINNINGS, Watchers, build_c, cpu_ns, cpu_seconds, load_average, machine,
                    pinning_note, place, prime, run_pinned, save, start_udplab, stop_udplab,
                    table)

CPU = "0"
OTHER_CPU = "1"


def settle(watchers: Watchers | None, quiet: float = 0.4, limit: float = 15.0) -> dict | None:
    """Wait until the watchers have had no message for `quiet` s (at most `limit` s)."""
    if watchers is None:
        time.sleep(quiet)
        return None
    deadline = time.monotonic() + limit
    last = watchers.stats()
    while time.monotonic() < deadline:
        time.sleep(quiet)
        now = watchers.stats()
        if now["messages"] == last["messages"]:
            return now
        last = now
    return last


def one_case(server, api, tools, kind: str, n: int, rate: int, seconds: float,
             tag: str = "", deflate: bool = True, pinning: str = "shared") -> dict:
    name = f"fan-{kind}-{n}{tag}"
    worker = api.post("/api/workers", json={"kind": "server", "name": name,
                                            "host": "127.0.0.1", "port": 0, "reply": "none",
                                            "rcvbuf": 4 * 1024 * 1024})
    assert worker.status_code == 201, worker.text
    port = worker.json()["local"][1]
    prime(port)  # its reader thread starts on a first datagram
    time.sleep(0.1)
    place(server.proc.pid, pinning, CPU, OTHER_CPU)
    watchers = Watchers(server, kind, n, cpus=OTHER_CPU, deflate=deflate) if n else None
    try:
        time.sleep(0.3)
        before = watchers.stats() if watchers else None
        pid = server.proc.pid
        ns0, s0, t0 = cpu_ns(pid), cpu_seconds(pid), time.perf_counter()
        out = run_pinned(OTHER_CPU, [tools["blast"], port, 64, seconds, rate],
                         timeout=seconds + 30)
        after = settle(watchers)
        ns1, s1, t1 = cpu_ns(pid), cpu_seconds(pid), time.perf_counter()
        received = api.get(f"/api/workers/{name}").json()["counters"]["received"] - 1
    finally:
        if watchers is not None:
            watchers.close()
        api.delete(f"/api/workers/{name}")
    sent = int(out.split()[0])
    result = {"kind": kind, "watchers": n, "sent": sent, "received": received,
              "cpu_s": (ns1 - ns0) / 1e9, "cpu_ticks_s": s1 - s0, "wall_s": t1 - t0,
              "us_per_datagram": (ns1 - ns0) / 1e3 / max(1, received), "load": load_average()}
    if after is not None:
        result.update(messages=after["messages"] - before["messages"],
                      bytes=after["bytes"] - before["bytes"],
                      errors=after["errors"])
    return result


def run(rate: int, seconds: float, counts: list[int], deflate: bool = True,
        pinning: str = "shared") -> dict:
    tools = build_c()
    server = start_udplab(cpus=CPU, args=("--max-watchers", "200"))  # 100 token watchers
    cases = []
    try:
        api = httpx.Client(base_url=server.base, headers=server.bearer, timeout=30)
        one_case(server, api, tools, "json", 0, rate, seconds / 2, "-warm", pinning=pinning)  # warm-up, not counted
        for kind in ("json", "page"):
            for n in counts:
                cases.append(one_case(server, api, tools, kind, n, rate, seconds,
                                      deflate=deflate, pinning=pinning))
        api.close()
    finally:
        stop_udplab(server)
    for case in cases:
        base = next(c for c in cases if c["kind"] == case["kind"] and c["watchers"] == 0) \
            if 0 in counts else None
        case["added_pct"] = (100.0 * (case["us_per_datagram"] / base["us_per_datagram"] - 1)
                             if base else float("nan"))
    worst = max((c["added_pct"] for c in cases if c["watchers"] == max(counts)),
                default=float("nan"))
    return {"machine": machine(), "pinning": pinning, "load_end": load_average(), "rate": rate, "seconds": seconds, "cases": cases,
            "deflate": deflate,
            "added_pct_at_max": worst, "max_watchers": max(counts)}


def report(res: dict) -> str:
    rows = [[c["kind"], c["watchers"], c["sent"], c["received"], c["cpu_s"], c["wall_s"],
             c["us_per_datagram"], f"{c['added_pct']:+.0f}%", c.get("messages", 0),
             f"{c.get('bytes', 0) / 1e6:.1f}"] for c in res["cases"]]
    return table(f"Fan-out: udplab CPU per datagram, {res['rate']:,} datagrams/s x "
                 f"{res['seconds']:g} s, server reply none (1 event each); "
                 f"{pinning_note(res.get('pinning', 'shared'), CPU, OTHER_CPU)}, "
                 f"watchers and sender on CPU 1; load average at the end {res.get('load_end')}"
                 + ("" if res.get("deflate", True) else "; watchers refuse deflate"),
                 ["stream", "watchers", "sent", "received", "CPU s", "wall s", "µs/datagram",
                  "vs 0", "messages", "MB read"], rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rate", type=int, default=5000)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--watchers", default="0,1,10,100")
    parser.add_argument("--no-deflate", action="store_true",
                        help="watchers do not offer per-message deflate (browsers do)")
    parser.add_argument("--pinning", choices=PINNINGS, default="shared",
                        help="shared: all of udplab on CPU 0 (before issue 17); split: its UDP "
                        "threads on CPU 0, the rest on CPU 1")
    args = parser.parse_args()
    res = run(args.rate, args.seconds, [int(n) for n in args.watchers.split(",")],
              not args.no_deflate, args.pinning)
    name = "fanout" if not args.no_deflate else "fanout-no-deflate"
    save(name if args.pinning == "shared" else f"{name}-{args.pinning}", res)
    print(report(res))


if __name__ == "__main__":
    main()
