"""The benchmark suite (`make bench`): every benchmark in turn, each in its own process with a
time limit, then one summary table against the targets of issues 8, 15 and 17. `fleet` needs
Debian's nats-server (`make test-setup` installs it).

  .venv/bin/python bench/run.py [--only echo,ingest,fanout,page,memory,class,stream,fleet,
                                        echo-agent,ingest-agent]
                                [--quick]

Exits 0 whether or not the targets hold (the table says which), and also when a benchmark
failed to run (its row in the summary says FAILED, with the reason above); with --strict, a
benchmark that failed to run makes the exit code 1.
"""

import argparse
import json
import os
import signal
import subprocess
import sys
import time

from common import BENCH, RESULTS, build_c, fmt, machine, table

# echo and ingest as issue 17 asks (a JSON watcher and the page open) and with its design (the
# C receive threads `udp:*` on CPU 0, the rest of udplab on CPU 1: `--pinning split`)
SUITE = {  # name: (arguments, time limit in seconds)
    "echo": (["--page", "--pinning", "split", "--rounds", "5", "--seconds", "2"], 90),
    "ingest": (["--pinning", "split", "--seconds", "2"], 90),
    "fanout": (["--rate", "5000", "--seconds", "2"], 150),
    "page": (["--rates", "1000,100000", "--seconds", "3"], 90),
    "memory": (["--workers", "1000"], 90),
    "class": (["--rate", "1000", "--seconds", "3", "--viewers", "100"], 150),
    "stream": (["--seconds", "2", "--rounds", "2"], 120),
    "fleet": (["--agents", "40", "--seconds", "8", "--page-seconds", "10", "--rounds", "60"],
              180),
    # issue 17's own-process design: the worker in a `udplab agent` behind a dashboard
    "echo-agent": (["--engine", "agent", "--rounds", "5", "--seconds", "2"], 90),
    "ingest-agent": (["--engine", "agent", "--seconds", "2"], 90),
}
SCRIPT = {"echo-agent": "echo", "ingest-agent": "ingest"}  # name: its script, if not the name
RESULT = {"echo": "echo-split-page", "ingest": "ingest-split"}  # name: what its script saves
QUICK = {
    "echo": ["--page", "--pinning", "split", "--rounds", "2", "--seconds", "1"],
    "ingest": ["--pinning", "split", "--seconds", "1"],
    "fanout": ["--rate", "2000", "--seconds", "1", "--watchers", "0,1,10"],
    "page": ["--rates", "1000,100000", "--seconds", "2"],
    "memory": ["--workers", "200"],
    "class": ["--rate", "1000", "--seconds", "2", "--viewers", "100"],
    "stream": ["--seconds", "1", "--rounds", "1"],
    "fleet": ["--agents", "40", "--seconds", "3", "--page-seconds", "4", "--rounds", "20"],
    "echo-agent": ["--engine", "agent", "--rounds", "2", "--seconds", "1"],
    "ingest-agent": ["--engine", "agent", "--seconds", "1"],
}


def load() -> str:
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def verdict(ok: bool | None) -> str:
    return "n/a" if ok is None else ("holds" if ok else "MISSED")


def summary(results: dict) -> list[list]:
    rows = []
    echo = results.get("echo")
    if echo:
        r = echo["engine_over_python"]
        rows.append(["echo", "engine / book's Python server", f"{r:.2f}x", ">= 1.0x",
                     verdict(r >= 1.0)])
        r = echo["engine_over_c"]
        rows.append(["echo", "engine / C server", f"{r:.2f}x", ">= 0.85x", verdict(r >= 0.85)])
        if "loop_over_python" in echo:
            rows.append(["echo", "bare uvloop server (the floor) / book's Python server",
                         f"{echo['loop_over_python']:.2f}x", "", ""])
        rows.append(["echo", "round trips/s engine | python | C",
                     " | ".join(fmt(echo["median"][k]) for k in ("engine", "python", "C")),
                     "", ""])
        rows.append(["echo", "server CPU µs per round trip engine | python | C",
                     " | ".join(f"{echo['cpu_us'][k]:.1f}" for k in ("engine", "python", "C")),
                     "", ""])
    ingest = results.get("ingest")
    if ingest:
        rows.append(["ingest", "datagrams/s taken in, events on (best case)",
                     fmt(ingest["max_rate"]), ">= 250,000", verdict(ingest["max_rate"] >= 250e3)])
        for c in ingest["cases"]:
            if c["target_rate"] == 0:
                rows.append(["ingest", f"{c['worker']} {c['size']} B, {c['buffer']} buffer",
                             f"{fmt(c['rate'])}/s, {c['loss_pct']:.1f}% lost, "
                             f"{c['cpu_us']:.1f} µs CPU/datagram", "", ""])
        paced = [c for c in ingest["cases"] if c["target_rate"] and not c.get("fixed")]
        for c in paced:
            lost = f"{c['lost']:,} lost ({c['kernel_drops']:,} kernel drops)"
            if c.get("headroom"):  # 80 % of the maximum, above the target's rate: no verdict
                rows.append(["ingest", f"loss at 80% of measured max ({c['target_rate']:,}/s, "
                             f"{c['size']} B, 4 MiB)", lost, "", ""])
                continue
            rows.append(["ingest", f"loss at {c['target_rate']:,}/s ({c['size']} B, 4 MiB; "
                         "80% of 250,000 or of the max)", lost,
                         "0 lost at >= 200,000/s", verdict(c["lost"] == 0 and
                                                            c["target_rate"] >= 200e3)])
        fixed = ingest.get("fixed")
        if fixed:
            rows.append(["ingest", f"CPU per datagram at a paced {fixed['rate']:,}/s: udplab / "
                         "plain loop", f"{fixed['ratio']:.2f}x ({fixed['engine_cpu_us']:.2f} vs "
                         f"{fixed['plain_cpu_us']:.2f} µs)", "<= 1.1x",
                         verdict(fixed["ratio"] <= 1.1)])
    echo = results.get("echo-agent")
    if echo:
        for key, label, target in (("engine_over_python", "book's Python server", 1.0),
                                   ("engine_over_c", "C server", 0.85)):
            rows.append(["echo-agent", f"engine in its own process / {label}",
                         f"{echo[key]:.2f}x", f">= {target}x", verdict(echo[key] >= target)])
        parts = echo["engine_parts_us"]
        rows.append(["echo-agent", "CPU µs per round trip agent | dashboard | nats-server",
                     " | ".join(f"{parts[k]:.1f}" for k in ("agent", "dashboard", "nats")),
                     "", ""])
        rows.append(["echo-agent", "the agent's counters through the dashboard's API",
                     "exact" if echo["counters_exact"] else "NOT EXACT", "exact",
                     verdict(echo["counters_exact"])])
    ingest = results.get("ingest-agent")
    if ingest:
        r = ingest["max_over_plain"]
        rows.append(["ingest-agent", "top rate / the plain loop's", f"{r:.2f}x "
                     f"({fmt(ingest['max_rate'])}/s)", ">= 1.0x", verdict(r >= 1.0)])
        fixed = ingest.get("fixed")
        if fixed:
            parts = fixed["parts_us"]
            rows.append(["ingest-agent", f"CPU per datagram at a paced {fixed['rate']:,}/s: "
                         "agent + dashboard / plain loop", f"{fixed['ratio']:.2f}x "
                         f"({parts['agent']:.2f} + {parts['dashboard']:.2f} vs "
                         f"{fixed['plain_cpu_us']:.2f} µs; nats-server {parts['nats']:.2f})",
                         "<= 1.1x", verdict(fixed["ratio"] <= 1.1)])
        rows.append(["ingest-agent", "the agent's counters = sent - kernel drops",
                     "yes" if ingest["counters_exact"] else "NO", "exact",
                     verdict(ingest["counters_exact"])])
    fanout = results.get("fanout")
    if fanout:
        for c in fanout["cases"]:
            if c["watchers"] == fanout["max_watchers"] or c["watchers"] == 0:
                ok = c["added_pct"] <= 5 if c["watchers"] else None
                rows.append(["fan-out", f"{c['kind']} stream, {c['watchers']} watchers",
                             f"{c['us_per_datagram']:.1f} µs/datagram ({c['added_pct']:+.0f}%)",
                             "<= +5% with 100" if c["watchers"] else "", verdict(ok)
                             if c["watchers"] else ""])
    page = results.get("page")
    if page:
        for r in page["rates"]:
            if r["rate"] <= 1000:
                rows.append(["page", f"arrival to row p50/p99 at {r['rate']:,}/s",
                             f"{r['p50_ms']:.0f} / {r['p99_ms']:.0f} ms", "p99 <= 100 ms",
                             verdict(r["p99_ms"] <= 100)])
            else:
                exact = r["counters_exact"]
                rows.append(["page", f"counters exact at {r['rate']:,}/s",
                             f"{'yes' if exact else 'no'} (card {r['page_counter']} = API "
                             f"{r['received']:,}; sent {r['sent']:,}, kernel drops "
                             f"{r['kernel_drops']:,})", "exact", verdict(exact)])
                rows.append(["page", f"rows at {r['rate']:,}/s", f"sampled: {r['rows_seen']:,} "
                             f"rows of {r['received']:,} received, p99 {r['p99_ms']:.0f} ms",
                             "sampled", verdict(r["rows_seen"] < r["received"])])
                ok = bool(r["clicks_ms"]) and r["click_max_ms"] <= 100
                rows.append(["page", f"click latency while streaming {r['rate']:,}/s",
                             f"p50 {r['click_p50_ms']:.0f} ms, max {r['click_max_ms']:.0f} ms "
                             f"({len(r['clicks_ms'])} clicks)", "<= 100 ms", verdict(ok)])
    memory = results.get("memory")
    if memory:
        idle = memory["idle_kib"] / 1024
        rows.append(["memory", "idle app RSS", f"{idle:.1f} MiB", "<= 60 MiB",
                     verdict(idle <= 60)])
        per = memory["per_worker_kib"]
        text = f"{per:.1f} KiB ({memory['started']} workers)"
        if memory["refusal"]:
            text += f"; HTTP {memory['refusal']['status']} at #{memory['refusal']['at']}"
        rows.append(["memory", "RSS per idle listener worker", text, "<= 8 KiB",
                     verdict(per <= 8 and memory["started"] >= 1000)])
    class_ = results.get("class")
    if class_:
        r = class_["class"]
        rows.append(["class", f"teacher's row p99 with {class_['viewers']} viewers at "
                     f"{class_['rate']:,}/s", f"{r['p99_ms']:.0f} ms (alone "
                     f"{class_['alone']['p99_ms']:.0f} ms)", "<= 70 ms",
                     verdict(r["p99_ms"] <= 70)])
        worst = class_["worst_viewer_p99_ms"]
        timed = class_["viewers_timed"] == class_["viewers"]
        rows.append(["class", "every viewer's update lag p99 (worst | median)",
                     f"{worst:.0f} | {class_['median_viewer_p99_ms']:.0f} ms "
                     f"({class_['viewers_timed']} of {class_['viewers']} timed)", "<= 250 ms",
                     verdict(timed and worst <= 250)])
        exact = r["counters_exact"] and class_["viewer_counters_exact"] and \
            r["api_equals_sent_minus_drops"]
        rows.append(["class", "counters exact at the end (API, card, every viewer)",
                     f"{'yes' if exact else 'no'} (API {r['received']:,} of {r['sent']:,} "
                     f"sent, kernel drops {r['kernel_drops']:,})", "exact", verdict(exact)])
        pct = class_["watchers_cpu_pct"]
        rows.append(["class", f"all {class_['viewers']} viewers' CPU in udplab",
                     f"{pct:.1f} % of one core", "<= 10 %", verdict(pct <= 10)])
    stream = results.get("stream")
    if stream:
        for c in stream["cases"]:
            rows.append(["stream", f"sender / iperf3 -u, {c['size']} B (datagrams/s; per "
                         "CPU-second)", f"{c['ratio']:.2f}x ({fmt(c['udplab_rate'])} vs "
                         f"{fmt(c['iperf3_rate'])}); {c['core_ratio']:.2f}x "
                         f"({fmt(c['udplab_per_core'])} vs {fmt(c['iperf3_per_core'])})",
                         ">= 0.8x", verdict(c["ratio"] >= 0.8 and c["core_ratio"] >= 0.8)])
    fleet = results.get("fleet")
    if fleet:
        a, b = fleet["no_page"], fleet["with_page"]
        n = fleet["agents"]
        row = b["row"]
        rows.append(["fleet", f"page row p50/p99: remote reply on its agent to its row, {n} "
                     "agents x 10/s",
                     f"{row['p50_ms']:.0f} / {row['p99_ms']:.0f} ms ({row['n']:,} rows)",
                     "p99 <= 100 ms", verdict(row["n"] > 0 and row["p99_ms"] <= 100)])
        rows.append(["fleet", "start a worker on a remote machine p50/p99 (API)",
                     f"{fleet['start_p50_ms']:.1f} / {fleet['start_p99_ms']:.0f} ms "
                     f"({fleet['starts']} starts)", "", ""])
        rows.append(["fleet", "dashboard CPU, no page | teacher's page open",
                     f"{a['cpu_pct']:.0f} | {b['cpu_pct']:.0f} % of one core "
                     f"({a['requests_per_s']:.0f} | {b['requests_per_s']:.0f} requests/s)",
                     "", ""])
        rows.append(["fleet", "remote event to /api/events p50/p99, no page | page open",
                     f"{a['event_lag']['p50_ms']:.0f}/{a['event_lag']['p99_ms']:.0f} | "
                     f"{b['event_lag']['p50_ms']:.0f}/{b['event_lag']['p99_ms']:.0f} ms",
                     "", ""])
        idle = fleet["agent_idle_rss_mib"]
        rows.append(["fleet", "agent idle RSS (median of the agents)",
                     f"{idle:.1f} MiB (max {fleet['agent_idle_rss_max_mib']:.1f})",
                     "<= 60 MiB", verdict(idle <= 60)])
    return rows


def run_one(argv: list[str], limit: float) -> None:
    """Run one benchmark in its own process. Past `limit` seconds it gets SIGTERM and 30 s to
    stop what it started (SIGKILL would leave its udplab, agents or browser running); on
    Ctrl+C (which it gets too) it has 30 s before that SIGTERM."""
    with subprocess.Popen(argv, cwd=BENCH.parent) as proc:
        try:
            code = proc.wait(timeout=limit)
        except KeyboardInterrupt:
            stop(proc, grace=30)
            raise
        except subprocess.TimeoutExpired:
            stop(proc, grace=0)
            raise
        if code:
            raise subprocess.CalledProcessError(code, argv)


def stop(proc: subprocess.Popen, grace: float) -> None:
    """Wait `grace` seconds, then SIGTERM and 30 s more, then SIGKILL."""
    for sig, wait in ((None, grace), (signal.SIGTERM, 30)):
        if sig is not None and proc.poll() is None:
            proc.send_signal(sig)
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            pass
    proc.kill()
    proc.wait()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", default=",".join(SUITE))
    parser.add_argument("--quick", action="store_true", help="shorter runs, for a smoke test")
    parser.add_argument("--strict", action="store_true",
                        help="exit 1 if a benchmark failed to run")
    args = parser.parse_args()
    names = [n.strip() for n in args.only.split(",") if n.strip()]
    print(f"UDP Lab benchmarks on {machine()}; load average at start {load()}", flush=True)
    build_c()
    results, failed = {}, []
    started = time.monotonic()
    for name in names:
        argv, limit = SUITE[name]
        if args.quick:
            argv = QUICK[name]
        path = RESULTS / f"{RESULT.get(name, name)}.json"
        path.unlink(missing_ok=True)
        print(f"\n== {name} (load {load()}) ==", flush=True)
        t0 = time.monotonic()
        try:
            run_one([sys.executable, str(BENCH / f"{SCRIPT.get(name, name)}.py"), *argv], limit)
            results[name] = json.loads(path.read_text())
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError,
                ValueError) as exc:
            print(f"{name}: FAILED: {exc}", flush=True)
            failed.append(name)
        print(f"({name}: {time.monotonic() - t0:.0f} s)", flush=True)
    print()
    rows = summary(results) + [[name, "(did not run to the end: see its output above)", "",
                                "", "FAILED"] for name in failed]
    print(table(f"Summary (issue 8, 15 and 17 targets) — {machine()}; load average at end "
                f"{load()}; suite {time.monotonic() - started:.0f} s",
                ["benchmark", "measure", "measured", "target", "verdict"], rows))
    if failed:
        print(f"\nfailed to run: {', '.join(failed)}")
    return 1 if failed and args.strict else 0


if __name__ == "__main__":
    os.chdir(BENCH.parent)
    raise SystemExit(main())
