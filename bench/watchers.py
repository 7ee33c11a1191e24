"""N real WebSocket watchers of one udplab, each a task in this one asyncio process.

  python bench/watchers.py --port P --token T --kind json|page --n N [--parse]

`json` watches WS /api/events with the Bearer token, as a script would; `page` watches the
page's HTML stream WS /ws/page with the session cookie `udplab_<port>=<token>` and the
dashboard's own Origin, as the browser does. Both use websockets' defaults (per-message
deflate offered, as browsers do). Every watcher reads every message; with --parse the JSON
ones also decode it and count events and `dropped`.

Prints `ready` once every watcher has its first message, then answers `stats` on stdin with
a JSON line of totals; `quit` (or EOF, or --max-seconds) prints them and exits.
Connects only to 127.0.0.1.
"""

import argparse
import asyncio
import json
import sys
import time

from websockets.asyncio.client import connect

try:
    import uvloop
except ImportError:  # pragma: no cover
    uvloop = None


class Totals:
    def __init__(self):
        self.messages = 0
        self.bytes = 0
        self.events = 0
        self.dropped = 0
        self.errors: list[str] = []
        self.last_message = 0.0

    def to_dict(self, n: int) -> dict:
        return {"watchers": n, "messages": self.messages, "bytes": self.bytes,
                "events": self.events, "dropped": self.dropped,
                "last_message": self.last_message, "errors": self.errors[:5]}


async def watch(args, totals: Totals, first: asyncio.Future | None, barrier: list) -> None:
    host = f"127.0.0.1:{args.port}"
    if args.kind == "json":
        url, headers, origin = f"ws://{host}/api/events", {
            "Authorization": f"Bearer {args.token}"}, None
    else:
        url, headers, origin = f"ws://{host}/ws/page", {
            "Cookie": f"udplab_{args.port}={args.token}"}, f"http://{host}"
    got_first = False
    try:
        async with connect(url, additional_headers=headers, origin=origin, max_size=None,
                           open_timeout=20, ping_interval=None, proxy=None,
                           compression=None if args.no_deflate else "deflate") as ws:
            async for message in ws:
                totals.messages += 1
                totals.bytes += len(message)
                totals.last_message = time.time()
                if args.parse and args.kind == "json":
                    body = json.loads(message)
                    totals.events += len(body.get("events", ()))
                    totals.dropped += body.get("dropped", 0)
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
        tasks.append(asyncio.create_task(watch(args, totals, first, barrier)))
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
