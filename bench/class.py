"""Benchmark 6, class: the teacher's page in Chromium plus 100 read-only viewers (issue 17).

A real udplab with its default caps (they must fit a class); the teacher's dashboard in
Chromium (Playwright, Debian's binary), measured as bench/page.py does: a `server` worker
(reply none) takes datagrams from bench/c/blast.c paced at RATE for SECONDS, a
MutationObserver stamps each new row, row latency = stamp - send time in the row's text.

1. Alone: the teacher's page only (after a discarded warm-up).
2. Class: the same plus VIEWERS read-only viewers — real WebSocket clients of `/ws/page`
   with the viewer cookie and Origin, as a viewer's browser connects, each from its own
   loopback source address (8 to an address, as laptops would), all tasks of one
   bench/watchers.py process on CPU 1. Each viewer times every row it sees (message arrival
   - send time) and keeps the last `received` counter it was shown.

Reported: the teacher's row p99 with the class (over the rows the page lists: a worker's
rows of datagrams are listed up to 200 a second, the newest of each flush, so at 1 000/s
about a fifth of them); every viewer's lag p99 (the worst and the median of them); whether
the counters are exact at the end (the API's `received` = sent - kernel drops, the teacher's
card and every viewer's last counter = the API's); the CPU of all the watchers together: the
udplab process's CPU (every thread, schedstat) per second of the case with the class minus
without, as % of one core. udplab is pinned to CPU 0.

  .venv/bin/python bench/class.py [--rate 1000] [--seconds 3] [--viewers 100]

Needs `make test-setup` (playwright and /usr/bin/chromium). Loopback only; bounded.
"""

import re
import statistics
import time

import httpx
from playwright.sync_api import sync_playwright

from common import (Watchers, build_c, class_arguments, cpu_ns, machine, open_dashboard,
                    run_queue_ns, save,
                    start_udplab, stop_udplab, table)
from page import one_rate

CPU = "0"
VIEWER_CPU = "1"


def measured(server, page, api, blast, rate: int, seconds: float, name: str) -> dict:
    """One page.py case, with the udplab process's CPU share over it."""
    pid = server.proc.pid
    ns0, wait0, t0 = cpu_ns(pid), run_queue_ns(pid), time.perf_counter()
    result = one_rate(page, api, blast, rate, seconds, name=name)
    ns1, wait1, t1 = cpu_ns(pid), run_queue_ns(pid), time.perf_counter()
    result["cpu_pct"] = (ns1 - ns0) / 1e9 / (t1 - t0) * 100
    result["run_queue_pct"] = (wait1 - wait0) / 1e9 / (t1 - t0) * 100
    result["wall_s"] = t1 - t0
    return result


def run(rate: int, seconds: float, viewers: int) -> dict:
    blast = build_c()["blast"]
    server = start_udplab(cpus=CPU)
    view = re.search(r"\?view=(\S+)", server.output()).group(1)
    try:
        with sync_playwright() as pw:
            browser, page, _ = open_dashboard(pw, server)
            api = httpx.Client(base_url=server.base, headers=server.bearer, timeout=10)
            one_rate(page, api, blast, rate, 1.0, name="class-warmup")
            alone = measured(server, page, api, blast, rate, seconds, "class-alone")
            with Watchers(server, "page", viewers, cpus=VIEWER_CPU, viewer_token=view,
                          lag=True, max_seconds=120) as class_:
                connected = api.get("/api/stats").json()
                time.sleep(0.5)
                reset = class_.stats("reset")
                t_class = time.perf_counter()
                with_class = measured(server, page, api, blast, rate, seconds, "class-100")
                # Each viewer's last counter: wait (bounded) until all show the API's.
                deadline = time.monotonic() + 10
                while True:
                    seen = class_.stats()
                    if all(c == with_class["received"] for c in seen["counter"]) or \
                            time.monotonic() > deadline:
                        break
                    time.sleep(0.2)
                viewers_cpu = (seen["cpu_s"] - reset["cpu_s"]) / (time.perf_counter() - t_class)
            api.close()
            browser.close()
    finally:
        stop_udplab(server)
    lags = [v for v in seen["lag_p99_ms"] if v is not None]
    return {"machine": machine(), "rate": rate, "seconds": seconds, "viewers": viewers,
            "connected": {"watchers": connected.get("watchers"),
                          "viewers": connected.get("viewers")},
            "alone": alone, "class": with_class,
            "viewer_lag_p99_ms": seen["lag_p99_ms"], "viewer_rows": seen["rows_seen"],
            "viewer_counters": seen["counter"], "viewer_errors": seen["errors"],
            "viewers_timed": len(lags),
            "worst_viewer_p99_ms": max(lags, default=float("nan")),
            "median_viewer_p99_ms": statistics.median(lags) if lags else float("nan"),
            "viewer_counters_exact": all(c == with_class["received"]
                                         for c in seen["counter"]),
            "watchers_cpu_pct": with_class["cpu_pct"] - alone["cpu_pct"],
            "viewer_process_cpu_pct": viewers_cpu * 100}


def report(res: dict) -> str:
    rows = []
    for label, r in (("teacher alone", res["alone"]),
                     (f"teacher + {res['viewers']} viewers", res["class"])):
        rows.append([label, r["sent"], r["received"], r["kernel_drops"],
                     "yes" if r["counters_exact"] else "NO", r["rows_seen"], r["p50_ms"],
                     r["p99_ms"],
                     r["click_max_ms"], f"{r['cpu_pct']:.1f}", f"{r['run_queue_pct']:.0f}"])
    text = table(f"Class: the teacher's page (Chromium) and {res['viewers']} read-only viewers "
                 f"at {res['rate']:,} datagrams/s for {res['seconds']:g} s",
                 ["case", "sent", "received", "kernel drops", "card exact", "rows listed",
                  "row p50 ms",
                  "row p99 ms", "click max ms", "udplab CPU %", "udplab run-queue wait %"],
                 rows)
    rows_seen = res["viewer_rows"]
    text += (f"\nviewers connected {res['connected']['viewers']} (watchers in all "
             f"{res['connected']['watchers']}); viewers timed {res['viewers_timed']}; "
             f"viewer lag p99: worst {res['worst_viewer_p99_ms']:.0f} ms, median "
             f"{res['median_viewer_p99_ms']:.0f} ms; rows seen per viewer "
             f"{min(rows_seen, default=0):,}–{max(rows_seen, default=0):,}; every viewer's "
             f"last counter = API: {'yes' if res['viewer_counters_exact'] else 'NO'}; "
             f"errors {res['viewer_errors'] or 'none'}"
             f"\nall the watchers together: {res['watchers_cpu_pct']:+.1f} % of one core "
             f"(udplab CPU with the class minus without); the viewers' own process (100 "
             f"clients, CPU {VIEWER_CPU}) used {res['viewer_process_cpu_pct']:.0f} % of a core")
    return text


def main() -> None:
    args = class_arguments(__doc__.split("\n")[0])
    res = run(args.rate, args.seconds, args.viewers)
    save("class", res)
    print(report(res))


if __name__ == "__main__":
    main()
