"""Benchmark 5, memory: RSS of the idle app and per idle worker.

Starts a fresh udplab (as tests/live.py does), waits until it is idle and reads VmRSS from
/proc/<pid>/status. Then starts up to WORKERS `listener` workers on 127.0.0.1 port 0 through
POST /api/workers, one after another, and stops at the first refusal (the app caps live
workers: a 429 is reported with its message). Per worker = (RSS after the last one - RSS
after the first BASE ones) / (workers - BASE), so one-time costs (imports, first allocations)
are not counted. udplab gets `--max-workers WORKERS+10` when it accepts that option.

  .venv/bin/python bench/memory.py [--workers 1000]
"""

import argparse
import time

import httpx

from common import machine, rss_kib, save, start_udplab, stop_udplab, table, udplab_accepts

BASE = 10


def run(workers: int) -> dict:
    args = ("--max-workers", str(workers + 10)) if udplab_accepts("--max-workers") else ()
    server = start_udplab(args=args)
    pid = server.proc.pid
    try:
        time.sleep(1.0)
        idle = rss_kib(pid)
        api = httpx.Client(base_url=server.base, headers=server.bearer, timeout=10)
        api.get("/api/workers")
        time.sleep(0.2)
        after_api = rss_kib(pid)
        started, refusal, base_rss = 0, None, None
        deadline = time.monotonic() + 45
        while started < workers and time.monotonic() < deadline:
            r = api.post("/api/workers", json={"kind": "listener", "host": "127.0.0.1",
                                                "port": 0})
            if r.status_code != 201:
                refusal = {"status": r.status_code, "body": r.text[:300], "at": started + 1}
                break
            started += 1
            if started == BASE:
                time.sleep(0.2)
                base_rss = rss_kib(pid)
        time.sleep(0.5)
        full = rss_kib(pid)
        listed = len(api.get("/api/workers").json()) if started else 0
        api.close()
    finally:
        stop_udplab(server)
    per = ((full - base_rss) / (started - BASE)) if base_rss and started > BASE else float("nan")
    return {"machine": machine(), "idle_kib": idle, "after_first_api_kib": after_api,
            "asked": workers, "started": started, "refusal": refusal, "rss_base_kib": base_rss,
            "rss_full_kib": full, "per_worker_kib": per, "listed": listed,
            "max_workers_option": bool(args)}


def report(res: dict) -> str:
    rows = [["idle app (after start-up)", res["idle_kib"] / 1024, ""],
            ["after the first API call", res["after_first_api_kib"] / 1024, ""],
            [f"with {res['started']} idle listeners", res["rss_full_kib"] / 1024, ""],
            [f"per idle worker (over {max(0, res['started'] - BASE)})", "",
             res["per_worker_kib"]]]
    text = table("Memory: VmRSS of the udplab process", ["state", "RSS MiB", "KiB/worker"],
                 rows)
    if res["max_workers_option"]:
        text += (f"\nudplab was started with --max-workers {res['asked'] + 10} (its default cap "
                 "is lower)")
    else:
        text += "\nudplab has no --max-workers option: started with its default cap"
    if res["refusal"]:
        ref = res["refusal"]
        text += (f"\nasked for {res['asked']} workers: refused at #{ref['at']} with HTTP "
                 f"{ref['status']}: {ref['body']}")
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workers", type=int, default=1000)
    args = parser.parse_args()
    res = run(args.workers)
    save("memory", res)
    print(report(res))


if __name__ == "__main__":
    main()
