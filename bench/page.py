"""Benchmark 4, page: how the dashboard in Chromium keeps up (a real udplab, Debian's Chromium driven by Playwright, a `server` worker with reply none).

* Arrival to row: bench/c/blast.c sends datagrams whose payload starts with
  `t=<unix time of sending> n=<number>`, paced at each RATE for SECONDS. A MutationObserver
  on the event log (#log-rows: a batch of rows per message) stamps each new row in the next
  animation frame (Date.now(), i.e. when it can be painted); latency = that stamp - the send
  time in the row's text (loopback: send ≈ arrival). p50/p99 over the rows that appeared; the
  page lists each worker's rows of datagrams up to 200 a second (the counters stay exact),
  so above that `rows shown` < sent.
* Counters exact: after the send, how long until the card's `received` counter equals the
  API's, and whether the API's equals sent minus the kernel's drops.
* Click latency while streaming: during the send, CLICKS clicks on a panel's <summary>
  (opening / closing a <details>) with page.mouse.click; latency = from just before the click
  to the animation frame after the `toggle` event (wall clock, ms).

A warm-up of WARMUP seconds at the first rate runs first, right after the page loads; its
figures are printed apart (a fresh page is slower for its first second while Chromium
compiles the code paths that handle rows).

  .venv/bin/python bench/page.py [--rates 1000,100000] [--seconds 3] [--warmup 1]

Needs `make test-setup` (playwright and /usr/bin/chromium). Loopback only; bounded.
"""

import argparse
import subprocess
import time

import httpx
from playwright.sync_api import sync_playwright

from common import (build_c, end, machine, open_dashboard, percentile, save, spawn_pinned,
                    start_udplab, stop_udplab, table, udp_socket)

CLICKS = 6
SUMMARY = "#listener-panel > summary"

OBSERVER = """() => {
  window.__rows = []; window.__seen = new Set(); window.__toggles = [];
  if (window.__installed) return;  // one observer and one listener, whatever the rate
  window.__installed = true;
  const pending = [];
  const log = document.querySelector('#log-rows');
  new MutationObserver(records => {
    for (const r of records) for (const node of r.addedNodes) {
      if (node.nodeType !== 1) continue;  // a batch (<tbody>) of rows, or a row
      for (const m of node.textContent.matchAll(/t=(\\d+\\.\\d+) n=(\\d+)/g)) {
        if (!window.__seen.has(m[2])) { window.__seen.add(m[2]); pending.push(+m[1]); }
      }
    }
    if (pending.length) requestAnimationFrame(() => {
      const now = Date.now() / 1000;
      while (pending.length) window.__rows.push(now - pending.shift());
    });
  }).observe(log, {childList: true});
  document.querySelector('#listener-panel').addEventListener('toggle', () => {
    requestAnimationFrame(() => window.__toggles.push(Date.now() / 1000));
  });
}"""


def one_rate(page, api, blast, rate: int, seconds: float, name: str = "") -> dict:
    name = name or f"page-{rate}"
    worker = api.post("/api/workers", json={"kind": "server", "name": name, "port": 0,
                                            "host": "127.0.0.1", "reply": "none",
                                            "rcvbuf": 4 * 1024 * 1024})
    assert worker.status_code == 201, worker.text
    port = worker.json()["local"][1]
    page.wait_for_selector(f"#worker-{name}")
    page.evaluate(OBSERVER)
    page.locator(SUMMARY).scroll_into_view_if_needed()
    box = page.locator(SUMMARY).bounding_box()
    x, y = box["x"] + 20, box["y"] + box["height"] / 2
    drops0 = udp_socket(port)["drops"]
    sender = spawn_pinned("0-1", [blast, port, 64, seconds, rate], stdout=subprocess.PIPE,
                          text=True)
    clicks = []
    try:
        t_start = time.perf_counter()
        time.sleep(min(0.5, seconds / 4))
        for i in range(CLICKS):
            if time.perf_counter() - t_start > seconds - 0.3:
                break
            before = time.time()
            page.mouse.click(x, y)
            toggled, limit = None, time.monotonic() + 10
            while toggled is None and time.monotonic() < limit:
                toggled = page.evaluate("i => window.__toggles[i] ?? null", i)
            if toggled is None:
                break  # no toggle within 10 s: reported as fewer clicks
            clicks.append((toggled - before) * 1000)
            time.sleep(0.2)
        out, _ = sender.communicate(timeout=seconds + 30)
    finally:
        end(sender)
    sent = int(out.split()[0])
    sent_at = time.perf_counter()
    exact_ms, received, shown = None, -1, ""
    deadline = time.perf_counter() + 15
    while time.perf_counter() < deadline:
        received = api.get(f"/api/workers/{name}").json()["counters"]["received"]
        shown = page.locator(f"#worker-{name} [data-counter=received]").inner_text()
        queue = udp_socket(port)
        if shown == str(received) and queue["rx_queue"] == 0:
            exact_ms = (time.perf_counter() - sent_at) * 1000
            break
        time.sleep(0.02)
    drops = udp_socket(port)["drops"] - drops0
    latencies = [v * 1000 for v in page.evaluate("window.__rows")]
    kept = page.locator("#log-rows tr.ev").count()
    note = page.locator("#log-note").inner_text()
    if page.evaluate("document.querySelector('#listener-panel').open"):
        page.mouse.click(x, y)  # leave the panel closed for the next rate
    api.delete(f"/api/workers/{name}")
    return {"rate": rate, "sent": sent, "received": received, "page_counter": shown,
            "kernel_drops": drops, "counters_exact": shown == str(received),
            "api_equals_sent_minus_drops": received == sent - drops,
            "exact_after_ms": exact_ms, "rows_seen": len(latencies), "rows_kept": kept,
            "note": note,
            "p50_ms": percentile(latencies, 50), "p99_ms": percentile(latencies, 99),
            "max_ms": max(latencies, default=float("nan")),
            "clicks_ms": clicks, "click_p50_ms": percentile(clicks, 50),
            "click_max_ms": max(clicks, default=float("nan"))}


def run(rates: list[int], seconds: float, warmup: float = 1.0) -> dict:
    blast = build_c()["blast"]
    server = start_udplab()
    results = []
    try:
        with sync_playwright() as pw:
            browser, page, load_ms = open_dashboard(pw, server)
            api = httpx.Client(base_url=server.base, headers=server.bearer, timeout=10)
            cold = one_rate(page, api, blast, rates[0], warmup, name="page-warmup") \
                if warmup else None
            for rate in rates:
                results.append(one_rate(page, api, blast, rate, seconds))
            api.close()
            browser.close()
    finally:
        stop_udplab(server)
    return {"machine": machine(), "seconds": seconds, "load_ms": load_ms, "rates": results,
            "warmup": cold}


def report(res: dict) -> str:
    rows = []
    for r in res["rates"]:
        rows.append([r["rate"], r["sent"], r["received"], r["kernel_drops"], r["page_counter"],
                     "yes" if r["counters_exact"] else "NO",
                     f"{r['exact_after_ms']:.0f}" if r["exact_after_ms"] is not None
                     else "not in 15 s",
                     r["rows_seen"], r["p50_ms"], r["p99_ms"], r["max_ms"],
                     r["click_p50_ms"], r["click_max_ms"], len(r["clicks_ms"])])
    text = table(f"Page (Chromium): arrival to row and clicks while streaming, 64-byte "
                 f"datagrams for {res['seconds']:g} s per rate",
                 ["rate/s", "sent", "received", "kernel drops", "page counter", "exact",
                  "exact after ms", "rows seen", "row p50 ms", "row p99 ms", "row max ms",
                  "click p50 ms", "click max ms", "clicks"], rows)
    text += f"\npage load (goto to live snapshot): {res['load_ms']:.0f} ms"
    cold = res.get("warmup")
    if cold:
        text += (f"\nwarm-up first (not in the table): {cold['rate']:,}/s for "
                 f"{cold['sent'] / cold['rate']:.1f} s right after the page loaded, rows p50 "
                 f"{cold['p50_ms']:.0f} ms, p99 {cold['p99_ms']:.0f} ms (a fresh page's first "
                 "second: the browser compiles the page's code paths as they first run)")
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rates", default="1000,100000")
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--warmup", type=float, default=1.0,
                        help="seconds of traffic at the first rate before measuring, reported "
                        "apart (0: none)")
    args = parser.parse_args()
    res = run([int(r) for r in args.rates.split(",")], args.seconds, args.warmup)
    save("page", res)
    print(report(res))


if __name__ == "__main__":
    main()
