"""Fleet benchmark (issue 15): 40 `udplab agent` processes on one dashboard, through a real
nats-server on a free loopback port, each agent running a client at 10 requests/s to a server
on the dashboard's own machine.

  .venv/bin/python bench/fleet.py [--agents 40] [--seconds 8] [--page-seconds 10]
                                  [--rounds 60]

Measures, in this order:
1. each agent's idle RSS (every agent up, no worker yet);
2. the time to start a worker on a remote machine through the JSON API (the 40 clients);
3. for SECONDS, no page open: the dashboard's CPU (utime + stime of every thread) and how
   late a remote event reaches a watcher of WS /api/events (the event's own `time`, stamped by
   the agent, to its arrival in the watcher);
4. for PAGE-SECONDS, the teacher's page open in Chromium (Playwright, Debian's binary,
   1280x720, after a 2 s warm-up): the dashboard's CPU again, and page row latency: from a
   remote reply's arrival on its agent to its row on the page. The arrival time is the
   `reply` event's `time`, stamped by the agent's client as it takes the datagram from its
   socket, and shown in the row's time cell to the millisecond (truncated); a
   MutationObserver on the event log stamps each new remote `reply` row in the next
   animation frame (when it can be painted). Lag = that stamp - the time in the cell, both
   read as minutes and seconds of the hour (one machine, one clock: no skew; a whole-hour
   time-zone difference between udplab and Chromium cancels). The page lists at most 50 rows
   per 50 ms flush (counters stay exact), so only the rows shown are timed;
5. `--rounds` more servers started and removed on one remote machine (start p50/p99 counts
   these and the 40 clients), with the page still open, for at most 20 s.
A screenshot of the page at 1280x720 and the Machines panel's size are kept in
bench/build/ (does the panel of 40 machines fit a projector?).

Needs `nats-server` (`make test-setup` installs Debian's at /usr/sbin/nats-server) and
Chromium (`make test-setup`). Loopback only; every loop is bounded in count and time; every
process started is stopped, also on Ctrl+C or an error.
"""

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from common import (BUILD, PY, ROOT, cpu_ns, cpu_seconds, descendants, end, machine,
                    open_dashboard, percentile, rss_kib, run_queue_ns, save, start_udplab,
                    stop_udplab, table, wait_for)

from webapp.fleet import config

NATS_SERVER = "/usr/sbin/nats-server"
SERVER_PORT = 1099
WARMUP = 2.0  # seconds of the page before its rows are timed (a fresh page compiles its code)
MAX_WATCH = 600.0  # seconds a watcher thread may live, whatever happens
ROUNDS_MAX_S = 20.0  # the extra starts stop after this long (a loaded machine answers slowly)

# Stamps each new row of a remote worker's `reply` in the animation frame after it is added.
ROWS = """() => {
  window.__lags = []; window.__busy = 0; window.__longest = 0; window.__since = Date.now();
  if (window.__fleetRows) return;  // one set of observers, however often this runs
  window.__fleetRows = true;
  new PerformanceObserver(list => {  // tasks of 50 ms or more on the page's main thread
    for (const e of list.getEntries()) {
      window.__busy += e.duration; window.__longest = Math.max(window.__longest, e.duration);
    }
  }).observe({type: 'longtask'});
  const seen = new Set(), pending = [];
  const ofHour = s => { const m = /(\\d+):(\\d+):(\\d+)\\.(\\d+)/.exec(s);
                        return m ? +m[2] * 60 + +m[3] + +m[4] / 1000 : null; };
  new MutationObserver(records => {
    for (const r of records) for (const added of r.addedNodes) {
      if (added.nodeType !== 1) continue;  // a batch (<tbody>) of rows
      for (const node of added.querySelectorAll('tr.ev-reply')) {
        const who = node.querySelector('td.w'), at = node.querySelector('td.t');
        if (!who || !at || !who.textContent.includes(' · ')) continue;  // remote: 'm01 · …'
        const key = who.textContent + '|' + at.textContent;  // a snapshot redraws old rows
        if (seen.has(key)) continue;
        seen.add(key);
        const t = ofHour(at.textContent);
        if (t !== null) pending.push(t);
      }
    }
    if (pending.length) requestAnimationFrame(() => {
      const d = new Date();
      const now = d.getMinutes() * 60 + d.getSeconds() + d.getMilliseconds() / 1000;
      while (pending.length) window.__lags.push(((now - pending.shift()) % 3600 + 3600) % 3600);
    });
  }).observe(document.querySelector('#log-rows'), {childList: true});
}"""

# The Machines panel against the projector's 1280x720: its box and its content's size, and the
# height of every panel of the right-hand column (the stage and those below it).
PANEL = """() => {
  const p = document.querySelector('#machines-panel');
  if (!p) return null;
  const box = p.getBoundingClientRect();
  return {x: box.x, y: box.y, width: box.width, height: box.height,
          scroll_width: p.scrollWidth, client_width: p.clientWidth,
          scroll_height: p.scrollHeight, client_height: p.clientHeight,
          rows: p.querySelectorAll('tbody tr').length,
          page_width: document.documentElement.scrollWidth,
          page_height: document.documentElement.scrollHeight,
          right: [...document.querySelectorAll('.right > *')].map(e => [
            e.getAttribute('aria-label') || e.className,
            Math.round(e.getBoundingClientRect().height), e.scrollHeight])};
}"""


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def progress(text: str) -> None:
    """A line on stderr saying where the benchmark is (a run past its time limit shows
    where it was)."""
    print(f"fleet: {text} (load {load()})", file=sys.stderr, flush=True)


def load() -> str:
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


class EventWatcher(threading.Thread):
    """One JSON watcher of WS /api/events: for each remote event, now minus its time, in
    `lags` (swap the list to start a new window)."""

    def __init__(self, live):
        super().__init__(daemon=True)  # never keeps the benchmark alive after an error
        self.live = live
        self.stop = threading.Event()
        self.lags: list[float] = []

    def run(self) -> None:
        from websockets.sync.client import connect

        deadline = time.monotonic() + MAX_WATCH
        with connect(f"{self.live.ws_base}/api/events",
                     additional_headers={**self.live.bearer, "Origin": self.live.origin},
                     max_size=None) as ws:
            while not self.stop.is_set() and time.monotonic() < deadline:
                try:
                    message = json.loads(ws.recv(timeout=1))
                except TimeoutError:
                    continue
                now = time.time()
                self.lags.extend(now - e["time"] for e in message.get("events", ())
                                 if e.get("machine") not in (None, "local"))

    def window(self) -> list[float]:
        """The lags since the last call, and a fresh list for the next window."""
        lags, self.lags = self.lags, []
        return lags


def chromium() -> list[int]:
    """The browser's processes (Playwright's driver starts them below this process)."""
    out = []
    for pid in descendants(os.getpid()):
        try:
            with open(f"/proc/{pid}/comm") as f:
                if f.read().startswith("chrom"):
                    out.append(pid)
        except (FileNotFoundError, ProcessLookupError):
            pass
    return out


def scheduled(pids: list[int]) -> tuple[int, int]:
    """Nanoseconds on a CPU and waiting for one (runnable), summed over `pids`' threads."""
    ran = waited = 0
    for pid in pids:
        try:
            ran += cpu_ns(pid)
            waited += run_queue_ns(pid)
        except (FileNotFoundError, ProcessLookupError):
            pass  # a helper process that ended
    return ran, waited


def cpu_window(live, http, server_id: str, seconds: float, browser: list[int] = ()) -> dict:
    """Over `seconds`: the dashboard's CPU, the requests its server answered, and the share
    of the time the dashboard and the `browser`'s processes ran and waited for a CPU (as % of
    one core: on a shared machine, how much of a latency is the scheduler's)."""
    received0 = http.get(f"/api/workers/{server_id}").json()["counters"]["received"]
    cpu0, t0 = cpu_seconds(live.proc.pid), time.monotonic()
    dash0, browser0 = scheduled([live.proc.pid]), scheduled(browser)
    time.sleep(seconds)
    cpu1, t1 = cpu_seconds(live.proc.pid), time.monotonic()
    dash1, browser1 = scheduled([live.proc.pid]), scheduled(browser)
    received1 = http.get(f"/api/workers/{server_id}").json()["counters"]["received"]
    pct = lambda a, b, i: 100 * (b[i] - a[i]) / 1e9 / (t1 - t0)  # noqa: E731
    return {"cpu_pct": 100 * (cpu1 - cpu0) / (t1 - t0),
            "requests_per_s": (received1 - received0) / (t1 - t0),
            "dashboard_wait_pct": pct(dash0, dash1, 1),
            "browser_cpu_pct": pct(browser0, browser1, 0) if browser else None,
            "browser_wait_pct": pct(browser0, browser1, 1) if browser else None}


def stats(values: list[float]) -> dict:
    ms = [v * 1000 for v in values]
    return {"p50_ms": percentile(ms, 50), "p99_ms": percentile(ms, 99),
            "max_ms": max(ms, default=float("nan")), "n": len(ms)}


def stop_all(agents: list[subprocess.Popen]) -> None:
    """SIGTERM every agent at once, then wait for each (SIGKILL if it lingers)."""
    for agent in agents:
        if agent.poll() is None:
            agent.send_signal(signal.SIGTERM)
    for agent in agents:
        end(agent, timeout=10)


def run(args) -> dict:
    if not os.access(NATS_SERVER, os.X_OK):
        raise SystemExit(f"fleet: {NATS_SERVER} not found: run `make test-setup` (it installs "
                         "Debian's nats-server package)")
    names = [f"m{i:02d}" for i in range(1, args.agents + 1)]
    directory = Path(tempfile.mkdtemp(prefix="udplab-fleet-bench-"))
    nats = live = None
    agents: list[subprocess.Popen] = []
    try:
        port = free_port()
        config.init(directory, names, listen=f"127.0.0.1:{port}")
        url = f"nats://127.0.0.1:{port}"
        nats = subprocess.Popen([NATS_SERVER, "-c", str(directory / "nats-server.conf")],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        live = start_udplab(args=("--max-token-failures", "0", "--nats", url, "--creds",
                                  str(directory / "dashboard.creds")))
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        for name in names:
            with open(directory / f"{name}.log", "wb") as log:
                agents.append(subprocess.Popen(
                    [PY, "-m", "webapp", "agent", "--nats", url, "--name", name, "--creds",
                     str(directory / f"{name}.creds")], cwd=ROOT, env=env,
                    stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT))
        with live.client() as http:
            http.timeout = 30.0  # a shared, loaded machine: an answer may take more than 10 s
            return measure(args, live, http, names, agents, directory)
    finally:
        # Nothing interrupts the clean-up: the suite's SIGTERM may follow a Ctrl+C.
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        t_stop = time.monotonic()
        stop_all(agents)
        if live is not None:
            stop_udplab(live)
        if nats is not None:
            end(nats)
        shutil.rmtree(directory, ignore_errors=True)
        print(f"fleet: stopped {len(agents)} agents, the dashboard and nats-server in "
              f"{time.monotonic() - t_stop:.1f} s", flush=True)


def measure(args, live, http, names, agents, directory) -> dict:
    from playwright.sync_api import sync_playwright

    t_up = time.monotonic()

    def all_up():
        machines = http.get("/api/machines").json()["machines"]
        return sum(1 for m in machines if m["state"] == "up" and not m["local"]) == len(names)

    if not wait_for(all_up, timeout=90, step=0.5):
        dead = [(n, a.returncode) for n, a in zip(names, agents) if a.poll() is not None]
        first = (directory / f"{dead[0][0]}.log").read_text(errors="replace")[-400:] \
            if dead else ""
        raise SystemExit(f"fleet: not every agent said hello within 90 s (ended: {dead}) "
                         f"{first}")
    up_s = time.monotonic() - t_up
    progress(f"{len(names)} agents up in {up_s:.1f} s")
    time.sleep(3)  # settle: imports done, first hellos sent
    idle = [rss_kib(a.pid) / 1024 for a in agents]
    server = http.post("/api/workers", json={"kind": "server", "host": "127.0.0.1",
                                             "port": SERVER_PORT})
    assert server.status_code == 201, server.text
    server_id = server.json()["id"]
    starts = []
    for name in names:
        t = time.perf_counter()
        response = http.post("/api/workers", json={
            "machine": name, "kind": "client", "host": "127.0.0.1",
            "port": SERVER_PORT, "count": 1_000_000, "interval": 0.1})
        starts.append(time.perf_counter() - t)
        assert response.status_code == 201, response.text
    time.sleep(2)
    watcher = EventWatcher(live)
    watcher.start()
    try:
        time.sleep(0.5)
        watcher.window()
        progress(f"{len(names)} clients started; {args.seconds:g} s without the page")
        no_page = cpu_window(live, http, server_id, args.seconds)
        progress("opening the page in Chromium")
        no_page.update(event_lag=stats(watcher.window()))
        BUILD.mkdir(parents=True, exist_ok=True)
        with sync_playwright() as pw:
            browser, page, load_ms = open_dashboard(pw, live, 1280, 720)
            try:
                page.evaluate(ROWS)
                time.sleep(WARMUP)
                page.evaluate(ROWS)  # forget the warm-up's rows
                watcher.window()
                progress(f"page live after {load_ms / 1000:.1f} s; {args.page_seconds:g} s with it")
                with_page = cpu_window(live, http, server_id, args.page_seconds, chromium())
                busy = page.evaluate("[window.__busy, window.__longest, "
                                     "(Date.now() - window.__since)]")
                lags = page.evaluate("window.__lags")  # in the order they were painted
                half = len(lags) // 2
                with_page.update(event_lag=stats(watcher.window()), row=stats(lags),
                                 row_halves_p50_ms=[stats(lags[:half])["p50_ms"],
                                                    stats(lags[half:])["p50_ms"]],
                                 long_tasks_pct=100 * busy[0] / busy[2],
                                 longest_task_ms=busy[1],
                                 rows_kept=page.locator("#log-rows tr.ev").count(),
                                 load_ms=load_ms)
                page.screenshot(path=str(BUILD / "fleet-page.png"))
                panel = page.evaluate(PANEL)
                if panel:
                    page.locator("#machines-panel").scroll_into_view_if_needed()
                    page.screenshot(path=str(BUILD / "fleet-machines.png"))
                progress("page window measured; starting and removing servers on "
                         f"{names[-1]}")
                rounds_until = time.monotonic() + ROUNDS_MAX_S
                for _ in range(args.rounds):
                    if time.monotonic() > rounds_until:
                        break
                    t = time.perf_counter()
                    started = http.post("/api/workers", json={"machine": names[-1],
                                                              "kind": "server", "port": 0})
                    starts.append(time.perf_counter() - t)
                    assert started.status_code == 201, started.text
                    http.delete(f"/api/workers/{started.json()['id']}")
            finally:
                browser.close()
    finally:
        watcher.stop.set()
        watcher.join(timeout=5)
    busy_rss = [rss_kib(a.pid) / 1024 for a in agents]
    ms = [s * 1000 for s in starts]
    return {
        "machine": machine(), "load": load(), "agents": len(names), "up_s": up_s,
        "seconds": args.seconds, "page_seconds": args.page_seconds,
        "no_page": no_page, "with_page": with_page,
        "dashboard_rss_mib": rss_kib(live.proc.pid) / 1024,
        "start_p50_ms": percentile(ms, 50), "start_p99_ms": percentile(ms, 99),
        "start_max_ms": max(ms), "starts": len(starts),
        "agent_idle_rss_mib": percentile(idle, 50), "agent_idle_rss_max_mib": max(idle),
        "agent_busy_rss_mib": percentile(busy_rss, 50),
        "machines_panel": panel,
        "screenshot": str(BUILD / "fleet-page.png"),
    }


def report(res: dict) -> str:
    a, b = res["no_page"], res["with_page"]
    lag = lambda s: f"p50 {s['p50_ms']:.0f} ms, p99 {s['p99_ms']:.0f} ms ({s['n']:,})"  # noqa: E731
    rows = [
        ["requests served (nominal 10/s per agent)", f"{a['requests_per_s']:.0f}/s",
         f"{b['requests_per_s']:.0f}/s"],
        ["dashboard CPU, % of one core", f"{a['cpu_pct']:.1f}", f"{b['cpu_pct']:.1f}"],
        ["dashboard waiting for a CPU, % of the time", f"{a['dashboard_wait_pct']:.0f}",
         f"{b['dashboard_wait_pct']:.0f}"],
        ["Chromium (all its processes): CPU | waiting for a CPU, % of one core", "",
         f"{b['browser_cpu_pct']:.0f} | {b['browser_wait_pct']:.0f}"],
        ["remote event → /api/events watcher", lag(a["event_lag"]), lag(b["event_lag"])],
        ["remote reply's arrival on its agent → row on the page", "",
         lag(b["row"]) + f", max {b['row']['max_ms']:.0f} ms"],
        ["  the same, p50 of the window's first | second half", "",
         " | ".join(f"{v:.0f} ms" for v in b["row_halves_p50_ms"])],
    ]
    text = table(f"fleet: {res['agents']} agents on loopback, each a client at 10 requests/s "
                 f"(load average {res['load']})",
                 ["measure", f"no page ({res['seconds']:g} s)",
                  f"teacher's page open ({res['page_seconds']:g} s)"], rows)
    text += (f"\nstart a worker on a remote machine: p50 {res['start_p50_ms']:.1f} ms, p99 "
             f"{res['start_p99_ms']:.1f} ms, max {res['start_max_ms']:.0f} ms "
             f"({res['starts']} starts)"
             f"\nagent RSS: idle {res['agent_idle_rss_mib']:.1f} MiB (median; max "
             f"{res['agent_idle_rss_max_mib']:.1f}), running a client "
             f"{res['agent_busy_rss_mib']:.1f} MiB; dashboard RSS "
             f"{res['dashboard_rss_mib']:.1f} MiB; all agents up in {res['up_s']:.1f} s; "
             f"page load {b['load_ms']:.0f} ms; the page's main thread in tasks of 50 ms or "
             f"more {b['long_tasks_pct']:.0f} % of the window (longest "
             f"{b['longest_task_ms']:.0f} ms)")
    panel = res["machines_panel"]
    if panel:
        text += (f"\nMachines panel at 1280x720: {panel['rows']} rows, {panel['width']:.0f}x"
                 f"{panel['height']:.0f} px at y={panel['y']:.0f} (content "
                 f"{panel['scroll_width']}x{panel['scroll_height']} in "
                 f"{panel['client_width']}x{panel['client_height']}); page "
                 f"{panel['page_width']}x{panel['page_height']}; right-hand column "
                 f"(label, height, content height): {panel['right']}; screenshots "
                 f"{res['screenshot']}, {BUILD / 'fleet-machines.png'}")
    return text


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--agents", type=int, default=40)
    parser.add_argument("--seconds", type=float, default=8.0,
                        help="window without the page (dashboard CPU, /api/events lag)")
    parser.add_argument("--page-seconds", type=float, default=10.0,
                        help="window with the page open (row latency, dashboard CPU)")
    parser.add_argument("--rounds", type=int, default=60,
                        help="servers started and removed on a remote machine")
    args = parser.parse_args()
    # The suite stops a benchmark past its time limit with SIGTERM: end as on Ctrl+C, through
    # the `finally` that stops the agents, the dashboard, nats-server and Chromium.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit("fleet: stopped by SIGTERM"))
    res = run(args)
    save("fleet", res)
    print(report(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
