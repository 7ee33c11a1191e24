"""Benchmark 1, echo: round trips/s of the engine's `server` worker against the book's plain
blocking Python server and a small C server, with the same C client.

The engine's server runs inside a real udplab process (started as tests/live.py does; its
requests are read, counted and answered by its C receive thread `udp:<worker>`,
webapp/engine/fastpath.c) with a live JSON event watcher attached (WS /api/events, parsing every message); it answers with the
book's reply ('Your data was N bytes long') and emits 2 events per request it shows (at most
1 000 requests a second, udplab's default `--events-per-second`; the rest are counted, and a
`sampled` event a second says how many). The book's blocking Python server, a bare uvloop
`add_reader` server (bench/loop_server.py: the floor of any event-loop server) and the C
server answer the same way. The client (bench/c/rt_client.c) does blocking request/reply
round trips on 127.0.0.1 with a 200 ms timeout. Client and every server are pinned to CPU 0
(`taskset -c 0`; the udplab process with `taskset -a`, all threads); the watcher runs on CPU 1.
Servers are alternated (rotated order) over ROUNDS rounds of SECONDS each; medians are shown.
`--pinning split` (issue 17) puts udplab's UDP threads on CPU 0 with the other servers and
the rest of udplab on CPU 1 with the watcher; `--page` adds a watcher of the page's HTML
stream (WS /ws/page, as an open dashboard reads it) beside the JSON one. `--engine agent`
(issue 17, bench/engine.py) runs the server worker in a `udplab agent` process on CPU 0,
driven by a dashboard on CPU 1 over a private nats-server (CPU 1); the watchers stay on the
dashboard. Its CPU per round trip is given per process (agent, dashboard, nats-server).

  .venv/bin/python bench/echo.py [--rounds 5] [--seconds 2] [--size 64] [--pinning split]
                                 [--engine agent]
"""

import argparse
import subprocess
import time

import httpx

from common import (PY, BENCH, PINNINGS, Watchers, build_c, cpu_ns, end, load_average, machine,
                    median, run_pinned, save, spawn_pinned, table)
from engine import ENGINES, Engine, stop_on_sigterm, udplab_ns


CPU = "0"
WATCHER_CPU = "1"


def run(rounds: int, seconds: float, size: int, watch: int = 1, deflate: bool = True,
        pinning: str = "shared", page: bool = False, engine_kind: str = "inproc") -> dict:
    tools = build_c()
    life = int(rounds * seconds * 3 + 60)
    engine = Engine(engine_kind, CPU, WATCHER_CPU)
    server = engine.server
    procs: list[subprocess.Popen] = []
    watchers = page_watcher = None
    try:
        api = httpx.Client(base_url=server.base, headers=server.bearer, timeout=10)
        response = api.post("/api/workers", json=engine.spec({
            "kind": "server", "name": "echo", "host": "127.0.0.1", "port": 0,
            "reply": "length"}))
        assert response.status_code == 201, response.text
        worker = response.json()
        ports = {"engine": worker["local"][1]}
        if watch:
            watchers = Watchers(server, "json", watch, cpus=WATCHER_CPU, parse=True,
                                deflate=deflate)
        if page:
            page_watcher = Watchers(server, "page", 1, cpus=WATCHER_CPU, deflate=deflate)
        for name, argv in (("python", [PY, BENCH / "book_server.py", 0, life]),
                           ("loop", [PY, BENCH / "loop_server.py", 0, life]),
                           ("C", [tools["echo_server"], 0, life])):
            proc = spawn_pinned(CPU, argv, stdout=subprocess.PIPE, text=True)
            procs.append(proc)
            ports[name] = int(proc.stdout.readline())
        pids = {"engine": server.proc.pid, "python": procs[0].pid, "loop": procs[1].pid,
                "C": procs[2].pid}
        names = ["engine", "python", "loop", "C"]
        asked = answered = 0  # the engine's requests sent and answered, for its counters
        for name in names:  # warm up each (first calls, caches)
            out = run_pinned(CPU, [tools["rt_client"], ports[name], 0.3, size, 200], timeout=30)
            if name == "engine":
                asked += int(out.split()[0]) + int(out.split()[1])
                answered += int(out.split()[0])
        engine.place(pinning)  # its reader thread has started
        load = load_average()
        rates: dict[str, list[float]] = {n: [] for n in names}
        timeouts = dict.fromkeys(names, 0)
        cpu_us: dict[str, list[float]] = {n: [] for n in names}
        parts_us: dict[str, list[float]] = {p: [] for p in engine.parts}  # the engine's
        zero = {"events": 0, "dropped": 0, "messages": 0}
        events_before = watchers.stats() if watchers else zero
        for r in range(rounds):
            order = names[r % len(names):] + names[:r % len(names)]  # alternate who goes first
            for name in order:
                ns0, parts0 = cpu_ns(pids[name]), engine.cpu()
                out = run_pinned(CPU, [tools["rt_client"], ports[name], seconds, size, 200],
                                 timeout=seconds + 30)
                done, lost, elapsed = out.split()
                n = max(1, int(done))
                if name == "engine":
                    parts1 = engine.cpu()
                    for p in parts_us:
                        parts_us[p].append((parts1[p] - parts0[p]) / 1e3 / n)
                    cpu_us[name].append((udplab_ns(parts1) - udplab_ns(parts0)) / 1e3 / n)
                    asked += int(done) + int(lost)
                    answered += int(done)
                else:
                    cpu_us[name].append((cpu_ns(pids[name]) - ns0) / 1e3 / n)
                rates[name].append(int(done) / float(elapsed))
                timeouts[name] += int(lost)
        time.sleep(0.3)  # the last batch of events reaches the watcher
        events_after = watchers.stats() if watchers else zero
        counters = api.get(f"/api/workers/{worker['id']}").json()["counters"]
        api.close()
        note = engine.note(pinning)
    finally:
        try:
            for w in (watchers, page_watcher):
                if w is not None:
                    w.close()
            for proc in procs:
                end(proc)
        finally:
            engine.close()
    med = {n: median(v) for n, v in rates.items()}
    result = {
        "machine": machine(), "engine": engine_kind, "placement": note,
        "pinning": pinning, "page": page, "load": load,
        "load_end": load_average(), "watchers": watch, "deflate": deflate, "rounds": rounds, "seconds": seconds, "size": size,
        "rates": rates, "median": med, "cpu_us": {n: median(v) for n, v in cpu_us.items()}, "timeouts": timeouts,
        "engine_over_python": med["engine"] / med["python"],
        "engine_over_c": med["engine"] / med["C"],
        "engine_over_loop": med["engine"] / med["loop"],
        "loop_over_python": med["loop"] / med["python"],
        "python_over_c": med["python"] / med["C"],
        "engine_requests": counters["received"],
        # Exact counters: what the client sent and had answered (warm-up included) against
        # the worker's own counters read through the dashboard's API (the agent's, remote).
        "engine_asked": asked, "engine_answered": answered,
        "engine_replied": counters["replied"],
        "counters_exact": counters["received"] == asked and counters["replied"] >= answered
        and counters["replied"] == counters["received"],
        "engine_parts_us": {p: median(v) for p, v in parts_us.items()},
        "watcher_events": events_after["events"] - events_before["events"],
        "watcher_dropped": events_after["dropped"] - events_before["dropped"],
        "watcher_messages": events_after["messages"] - events_before["messages"],
    }
    return result


def report(res: dict) -> str:
    rows = []
    watching = (f"{res['watchers']} JSON watcher" + ("" if res["deflate"] else ", no deflate")
                if res["watchers"] else "no watcher")
    if res.get("page"):
        watching += " + the page stream"
    where = ("in its own agent process" if res.get("engine") == "agent"
             else "its C receive thread")
    for name, label in (("engine", f"udplab server worker ({where}, {watching})"),
                        ("python", "book's blocking Python server"),
                        ("loop", "bare uvloop add_reader server (the floor)"),
                        ("C", "C server (recvfrom/sendto)")):
        v = res["rates"][name]
        rows.append([label, res["median"][name], min(v), max(v), res["timeouts"][name],
                     res["median"][name] / res["median"]["python"],
                     res["median"][name] / res["median"]["C"], res["cpu_us"][name]])
    text = table(f"Echo: round trips/s, {res['size']}-byte requests, client+server on CPU 0, "
                 f"{res.get('placement', res.get('pinning', 'shared'))}, "
                 f"median of {res['rounds']} x {res['seconds']:g} s, alternated; load average "
                 f"{res.get('load', '?')} at the start, {res.get('load_end', '?')} at the end",
                 ["server", "median rt/s", "min", "max", "timeouts", "/python", "/C",
                  "server CPU µs/rt"], rows)
    text += (f"\nwatcher: {res['watcher_events']:,} events in {res['watcher_messages']:,} "
             f"messages during the rounds, {res['watcher_dropped']:,} dropped by the bus "
             f"(2 per request shown, at most 1,000 requests shown a second, + 1 `sampled` a second)")
    parts = res.get("engine_parts_us", {})
    if len(parts) > 1:
        text += ("\nudplab CPU µs per round trip by process: " + ", ".join(
            f"{p} {v:.1f}" for p, v in parts.items())
            + f"; agent + dashboard {res['cpu_us']['engine']:.1f}, with nats-server "
            f"{sum(parts.values()):.1f}")
    if "counters_exact" in res:
        text += (f"\ncounters (the worker's, through the dashboard's API): received "
                 f"{res['engine_requests']:,} / sent by the client {res['engine_asked']:,}, "
                 f"replied {res['engine_replied']:,} / answers the client got "
                 f"{res['engine_answered']:,}: {'exact' if res['counters_exact'] else 'NOT EXACT'}")
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--watchers", type=int, default=1, help="JSON watchers (default 1)")
    parser.add_argument("--no-deflate", action="store_true",
                        help="the watcher does not offer per-message deflate")
    parser.add_argument("--pinning", choices=PINNINGS, default="shared",
                        help="shared: all of udplab on CPU 0 (before issue 17); split: its UDP "
                        "threads on CPU 0, the rest on CPU 1")
    parser.add_argument("--page", action="store_true",
                        help="also a watcher of the page's HTML stream (the page open)")
    parser.add_argument("--engine", choices=ENGINES, default="inproc",
                        help="inproc: the worker in the udplab process (default); agent: in a "
                        "`udplab agent` process on CPU 0 behind a dashboard on CPU 1 over NATS "
                        "(--pinning does not apply)")
    args = parser.parse_args()
    stop_on_sigterm("echo")
    res = run(args.rounds, args.seconds, args.size, args.watchers, not args.no_deflate,
              args.pinning, args.page, args.engine)
    plain = args.watchers == 1 and not args.no_deflate and args.pinning == "shared" \
        and not args.page and args.engine == "inproc"
    where = "agent" if args.engine == "agent" else args.pinning
    save("echo" if plain else f"echo-{where}{'-page' if args.page else ''}", res)
    print(report(res))


if __name__ == "__main__":
    main()
