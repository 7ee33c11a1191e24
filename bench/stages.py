"""Where the teacher's row latency goes (issue 17): bench/class.py's case, split by stage in
Chromium.

The teacher's page as bench/page.py measures it (a `server` worker, reply none, takes
bench/c/blast.c's datagrams at RATE for SECONDS; a MutationObserver stamps each new row in the
next animation frame), plus, for every WebSocket message (a listener added before htmx's):
its arrival on the page's main thread, and the end of the task that handled it (a
`setTimeout(0)` queued on arrival). Per row: send -> arrival of its message; arrival -> row in
the DOM (htmx's swap); row in the DOM -> the next animation frame. Per message: arrival minus
the send time of its newest and of its oldest row (the hub's wait and the server's work plus
the trip). First the teacher alone, then with VIEWERS read-only viewers (bench/watchers.py on
CPU 1, as bench/class.py). Also the Chromium renderer process's CPU over each case.

  .venv/bin/python bench/stages.py [--rate 1000] [--seconds 3] [--viewers 100]

Needs `make test-setup`. Loopback only; bounded.
"""

import os
import re
import time

import httpx
from playwright.sync_api import sync_playwright

from common import (CLK_TCK, Watchers, build_c, class_arguments, descendants, load_average,
                    percentile,
                    start_udplab, stop_udplab, table)
import page as page_bench

ARRIVALS = """
(() => {
  window.__ws = [];
  const Native = window.WebSocket;
  window.WebSocket = function (url, protocols) {
    const ws = protocols === undefined ? new Native(url) : new Native(url, protocols);
    ws.addEventListener('message', ev => {
      const text = String(ev.data);
      const record = {t: Date.now() / 1000,
                      sends: [...text.matchAll(/t=(\\d+\\.\\d+) n=(\\d+)/g)].map(m => +m[1])};
      window.__ws.push(record);
      setTimeout(() => { record.done = Date.now() / 1000; }, 0);
    });
    return ws;
  };
  window.WebSocket.prototype = Native.prototype;
  Object.assign(window.WebSocket, {CONNECTING: 0, OPEN: 1, CLOSING: 2, CLOSED: 3});
})();
"""
MUTATIONS = """() => {
  window.__mut = [];
  new MutationObserver(records => {
    const now = Date.now() / 1000, sends = [];
    for (const r of records) for (const node of r.addedNodes) {
      if (node.nodeType !== 1) continue;
      for (const m of node.textContent.matchAll(/t=(\\d+\\.\\d+) n=(\\d+)/g)) sends.push(+m[1]);
    }
    if (sends.length) {
      const record = {t: now, sends};
      window.__mut.push(record);
      requestAnimationFrame(() => { record.frame = Date.now() / 1000; });
    }
  }).observe(document.querySelector('#log-rows'), {childList: true});
}"""


def renderer_main_cpu() -> float:
    """CPU seconds of this process's Chromium renderers (every thread)."""
    total = 0.0
    for pid in descendants(os.getpid()):
        try:
            with open(f"/proc/{pid}/cmdline") as f:
                if "--type=renderer" not in f.read():
                    continue
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / CLK_TCK
        except (FileNotFoundError, ProcessLookupError):
            pass
    return total


def stages(page, since: float) -> dict:
    """Per-stage p50/p99 (ms) of the rows and messages after `since`."""
    messages = [r for r in page.evaluate("window.__ws") if r["t"] > since]
    mutations = [r for r in page.evaluate("window.__mut") if r["t"] > since]
    arrival = {}
    for message in messages:
        for sent in message["sends"]:
            arrival.setdefault(sent, message)
    out = {"send -> message arrival": [], "arrival -> row in the DOM": [],
           "row in the DOM -> next frame": [], "send -> next frame (total)": [],
           "message: arrival - newest row's send": [],
           "message: arrival - oldest row's send": [], "message: its task": []}
    for message in messages:
        if message["sends"]:
            arrived, sends = message["t"], message["sends"]
            out["message: arrival - newest row's send"].append(arrived - max(sends))
            out["message: arrival - oldest row's send"].append(arrived - min(sends))
            if "done" in message:
                out["message: its task"].append(message["done"] - message["t"])
    for mutation in mutations:
        for sent in mutation["sends"]:
            if sent not in arrival or "frame" not in mutation:
                continue
            out["send -> message arrival"].append(arrival[sent]["t"] - sent)
            out["arrival -> row in the DOM"].append(mutation["t"] - arrival[sent]["t"])
            out["row in the DOM -> next frame"].append(mutation["frame"] - mutation["t"])
            out["send -> next frame (total)"].append(mutation["frame"] - sent)
    return {k: (percentile([v * 1000 for v in vals], 50),
                percentile([v * 1000 for v in vals], 99), len(vals)) for k, vals in out.items()}


def one_case(page, api, blast, rate: float, seconds: float, name: str) -> dict:
    since, cpu0, t0 = time.time(), renderer_main_cpu(), time.perf_counter()
    page_bench.one_rate(page, api, blast, rate, seconds, name=name)
    cpu = (renderer_main_cpu() - cpu0) / (time.perf_counter() - t0) * 100
    return {"stages": stages(page, since), "renderer_cpu_pct": cpu}


def run(rate: int, seconds: float, viewers: int) -> dict:
    blast = build_c()["blast"]
    server = start_udplab(cpus="0")
    view = re.search(r"\?view=(\S+)", server.output()).group(1)
    from tests.browser.conftest import CHROMIUM, CHROMIUM_ARGS
    results = {"load_start": load_average()}
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            context = browser.new_context(viewport={"width": 1280, "height": 900})
            context.add_init_script(ARRIVALS)
            page = context.new_page()
            page.goto(f"{server.base}/?token={server.token}")
            page.wait_for_selector("#conn-status.live")
            page.evaluate(MUTATIONS)
            api = httpx.Client(base_url=server.base, headers=server.bearer, timeout=10)
            page_bench.one_rate(page, api, blast, rate, 1.0, name="stages-warmup")
            results["alone"] = one_case(page, api, blast, rate, seconds, "stages-alone")
            if viewers:
                with Watchers(server, "page", viewers, cpus="1", viewer_token=view,
                              max_seconds=120):
                    time.sleep(0.5)
                    results["class"] = one_case(page, api, blast, rate, seconds,
                                                "stages-class")
            api.close()
            browser.close()
    finally:
        stop_udplab(server)
    results["load_end"] = load_average()
    return results


def main() -> None:
    args = class_arguments(__doc__.split("\n")[0])
    res = run(args.rate, args.seconds, args.viewers)
    cases = [c for c in ("alone", "class") if c in res]
    rows = [[stage] + [f"{res[c]['stages'][stage][0]:.0f} / {res[c]['stages'][stage][1]:.0f}"
                       for c in cases] for stage in res["alone"]["stages"]]
    rows.append(["Chromium renderer process, % of a core"] +
                [f"{res[c]['renderer_cpu_pct']:.0f}" for c in cases])
    print(table(f"The teacher's rows by stage at {args.rate:,}/s, p50 / p99 ms (load average "
                f"{res['load_start']} at the start, {res['load_end']} at the end)",
                ["stage"] + [c if c == "alone" else f"with {args.viewers} viewers"
                             for c in cases], rows))


if __name__ == "__main__":
    main()
