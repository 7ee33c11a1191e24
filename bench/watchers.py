"""N real WebSocket watchers of one udplab, each a task in this one asyncio process.

  python bench/watchers.py --port P --token T --kind json|page --n N [--parse] [--view] [--lag]

`json` watches WS /api/events with the Bearer token, as a script would; `page` watches the
page's HTML stream WS /ws/page with the session cookie `udplab_<port>=<token>` and the
dashboard's own Origin, as the browser does; with --view the token is the read-only viewer's
and goes in the viewer cookie `udplab_view_<port>`. Both use websockets' defaults (per-message
deflate offered, as browsers do). Every watcher reads every message; with --parse the JSON
ones also decode it and count events and `dropped`.

Each watcher connects from its own loopback source address, PER_ADDRESS to one address
(127.0.0.2, 127.0.0.3, …), as a class of laptops would, so udplab's per-address cap
(--max-watchers-per-address, default 8) is not what a benchmark measures. With --lag (page
stream) each watcher times every row it sees first whose payload starts `t=<send time> n=<n>`
(bench/c/blast.c): lag = arrival of the message - send time; `reset` forgets rows sent
before it. Stats then add each watcher's lag p99 and the last `received` counter it was shown.

Prints `ready` once every watcher has its first message, then answers `stats` on stdin with
a JSON line of totals; `quit` (or EOF, or --max-seconds) prints them and exits.
Connects only to 127.0.0.1.
"""

import argparse
import asyncio
import json
import re
import sys
import time

from websockets.asyncio.client import connect

try:
    import uvloop
except ImportError:  # pragma: no cover
    uvloop = None

PER_ADDRESS = 8
ROW = re.compile(r"t=(\d+\.\d+) n=(\d+)")
RECEIVED = re.compile(r'data-counter="received">(\d+)<')


class Totals:
    def __init__(self):
        self.messages = 0
        self.bytes = 0
        self.events = 0
        self.dropped = 0
        self.errors: list[str] = []
        self.last_message = 0.0
        self.since = 0.0  # rows sent before this are not timed (`reset`)
        self.lags: dict[int, list[float]] = {}  # watcher -> lag of each row it saw first
        self.counter: dict[int, int] = {}  # watcher -> last `received` counter shown

    def to_dict(self, n: int) -> dict:
        out = {"watchers": n, "messages": self.messages, "bytes": self.bytes,
               "events": self.events, "dropped": self.dropped,
               "last_message": self.last_message, "errors": self.errors[:5],
               "cpu_s": time.process_time()}  # this process's own CPU: is the client the limit?
        if self.lags or self.counter:
            out["lag_p99_ms"] = [p99(self.lags.get(i, [])) for i in range(n)]
            out["rows_seen"] = [len(self.lags.get(i, [])) for i in range(n)]
            out["counter"] = [self.counter.get(i) for i in range(n)]
        return out


def p99(values: list[float]) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000


def note_rows(totals: Totals, i: int, message: str, seen: set, first: bool) -> None:
    """Time the rows of `message` this watcher sees for the first time; keep the counter."""
    now = time.time()
    for match in ROW.finditer(message):
        key = match.group(0)
        if key in seen:
            continue
        seen.add(key)
        sent = float(match.group(1))
        if not first and sent >= totals.since:
            totals.lags.setdefault(i, []).append(now - sent)
    counters = RECEIVED.findall(message)
    if counters:
        totals.counter[i] = int(counters[-1])


async def watch(args, i: int, totals: Totals, first: asyncio.Future | None,
                barrier: list) -> None:
    host = f"127.0.0.1:{args.port}"
    cookie = f"udplab_view_{args.port}" if args.view else f"udplab_{args.port}"
    if args.kind == "json" and not args.view:
        url, headers, origin = f"ws://{host}/api/events", {
            "Authorization": f"Bearer {args.token}"}, None
    else:
        path = "/api/events" if args.kind == "json" else "/ws/page"
        url, headers, origin = f"ws://{host}{path}", {
            "Cookie": f"{cookie}={args.token}"}, f"http://{host}"
    source = f"127.0.0.{2 + i // PER_ADDRESS}"
    got_first, seen = False, set()
    try:
        async with connect(url, additional_headers=headers, origin=origin, max_size=None,
                           open_timeout=20, ping_interval=None, proxy=None,
                           local_addr=(source, 0),
                           compression=None if args.no_deflate else "deflate") as ws:
            async for message in ws:
                totals.messages += 1
                totals.bytes += len(message)
                totals.last_message = time.time()
                if args.parse and args.kind == "json":
                    body = json.loads(message)
                    totals.events += len(body.get("events", ()))
                    totals.dropped += body.get("dropped", 0)
                if args.lag:
                    note_rows(totals, i, message, seen, not got_first)
                if not got_first:
                    got_first = True
                    barrier[0] -= 1
                    if barrier[0] == 0 and not first.done():
                        first.set_result(None)
    except Exception as exc:  # counted, and the process goes on with the others
        totals.errors.append(repr(exc)[:200])
        if not got_first:
            barrier[0] -= 1
            if barrier[0] == 0 and not first.done():
                first.set_result(None)


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--token", required=True)
    parser.add_argument("--kind", choices=("json", "page"), default="json")
    parser.add_argument("--n", type=int, default=1)
    parser.add_argument("--parse", action="store_true")
    parser.add_argument("--view", action="store_true",
                        help="--token is the read-only viewer token")
    parser.add_argument("--lag", action="store_true",
                        help="time each row's arrival (page stream, payloads from blast)")
    parser.add_argument("--no-deflate", action="store_true",
                        help="do not offer per-message deflate (browsers always offer it)")
    parser.add_argument("--max-seconds", type=float, default=120.0)
    args = parser.parse_args()
    loop = asyncio.get_running_loop()
    totals = Totals()
    first = loop.create_future()
    barrier = [args.n]
    tasks = []
    for i in range(args.n):
        tasks.append(asyncio.create_task(watch(args, i, totals, first, barrier)))
        if i % 20 == 19:
            await asyncio.sleep(0.05)  # do not open 100 connections in one burst
    if args.n:
        await asyncio.wait_for(first, timeout=60)
    print("ready", flush=True)

    commands: asyncio.Queue[str] = asyncio.Queue()

    def on_stdin() -> None:
        line = sys.stdin.readline()
        commands.put_nowait(line.strip() if line else "quit")

    loop.add_reader(sys.stdin.fileno(), on_stdin)
    deadline = loop.time() + args.max_seconds
    while True:
        try:
            command = await asyncio.wait_for(commands.get(), max(0.1, deadline - loop.time()))
        except asyncio.TimeoutError:
            command = "quit"
        if command == "reset":
            totals.since, totals.lags = time.time(), {}
        print(json.dumps(totals.to_dict(args.n)), flush=True)
        if command == "quit":
            break
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


if __name__ == "__main__":
    if uvloop is not None:
        uvloop.run(main())
    else:
        asyncio.run(main())
