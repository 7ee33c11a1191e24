"""Profile the udplab process under load with py-spy (`.venv/bin/pip install py-spy`).

  .venv/bin/python bench/profile.py [--case ingest|echo|fanout-json|fanout-page|class|stream]
                                    [--seconds 6] [--engine agent]

Starts a udplab on CPU 0, applies the load of the chosen case from CPU 1 (ingest: blast flat
out to a server with reply none and 1 JSON watcher; echo: rt_client on CPU 0 to a server with
reply length and 1 JSON watcher; fanout-*: 5 000/s with 100 watchers; class: 1 000/s with
100 read-only page viewers; stream: a `stream` worker sending flat out to a plain receiver on
CPU 1, no watcher), records with
`py-spy record --format raw` (collapsed stacks, no idle frames) and prints the self and
inclusive share of the top functions. Output in bench/build/profile-<case>.txt.
`--engine agent` (issue 17): the worker runs in a `udplab agent` process on CPU 0 behind a
dashboard and nats-server on CPU 1 (bench/engine.py), and the agent is the process profiled.
py-spy is taken from the venv, else from PATH.
"""

import argparse
import collections
import re
import subprocess
import time

import httpx

from common import BUILD, Watchers, build_c, end, spawn_pinned
from engine import ENGINES, Engine
from pathlib import Path
import shutil
import sys

PYSPY = Path(sys.executable).parent / "py-spy"
if not PYSPY.exists():
    PYSPY = Path(shutil.which("py-spy") or PYSPY)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--case", default="ingest",
                        choices=("ingest", "echo", "fanout-json", "fanout-page", "class",
                                 "stream"))
    parser.add_argument("--seconds", type=float, default=6)
    parser.add_argument("--watchers", type=int, default=None,
                        help="how many watchers (default: 100 for fanout-*, else 1)")
    parser.add_argument("--engine", choices=ENGINES, default="inproc",
                        help="agent: profile the worker's `udplab agent` process")
    args = parser.parse_args()
    tools = build_c()
    engine = Engine(args.engine, "0", "1",
                    args=("--max-watchers", "200"))  # 100 token watchers
    server = engine.server
    profiled = engine.parts.get("agent", server.proc.pid)
    out = BUILD / (f"profile-{args.case}{'' if args.watchers is None else f'-{args.watchers}'}"
                   f"{'-agent' if args.engine == 'agent' else ''}.txt")
    load = spy = watchers = None
    try:
        api = httpx.Client(base_url=server.base, headers=server.bearer, timeout=10)
        reply = "length" if args.case == "echo" else "none"
        worker = api.post("/api/workers", json=engine.spec({
            "kind": "server", "name": "prof", "port": 0, "host": "127.0.0.1", "reply": reply,
            "rcvbuf": 4194304})).json()
        port = worker["local"][1]
        n, kind = (100, args.case.split("-")[1]) if args.case.startswith("fanout") else (1, "json")
        n, kind = (100, "page") if args.case == "class" else (n, kind)
        n = 0 if args.case == "stream" else n
        n = n if args.watchers is None else args.watchers
        view = re.search(r"\?view=(\S+)", server.output()).group(1) \
            if args.case == "class" else None
        watchers = Watchers(server, kind, n, cpus="1", viewer_token=view) if n else None
        life = args.seconds + 2
        if args.case == "stream":
            load = spawn_pinned("1", [sys.executable, str(BUILD.parent / "plain_receiver.py"),
                                      4194304, life + 5], stdout=subprocess.PIPE, text=True)
            target = int(load.stdout.readline())
            api.post("/api/workers", json=engine.spec({
                "kind": "stream", "name": "prof-stream", "host": "127.0.0.1", "port": target,
                "size": 64, "rate": 1_000_000, "count": 10_000_000}))
        elif args.case == "echo":
            load = spawn_pinned("0", [tools["rt_client"], port, life, 64, 200],
                                stdout=subprocess.DEVNULL)
        else:
            rate = {"ingest": 0, "class": 1000}.get(args.case, 5000)
            load = spawn_pinned("1", [tools["blast"], port, 64, life, rate],
                                stdout=subprocess.DEVNULL)
        time.sleep(0.5)
        spy = subprocess.run([PYSPY, "record", "--pid", str(profiled), "--duration",
                              str(int(args.seconds)), "--rate", "250", "--format", "raw",
                              "--output", str(out), "--nonblocking"],
                             capture_output=True, text=True, timeout=args.seconds + 30)
        print(api.get(f"/api/workers/{worker['id']}").json()["counters"])
    finally:
        try:
            if load is not None:
                end(load)
            if watchers is not None:
                watchers.close()
        finally:
            engine.close()
    own, total, samples = collections.Counter(), collections.Counter(), 0
    for line in out.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        count = int(count)
        samples += count
        frames = stack.split(";")
        own[frames[-1]] += count
        for frame in set(frames):
            total[frame] += count
    print(f"{samples} samples in {out}")
    print("self %   function")
    for frame, count in own.most_common(25):
        print(f"{100 * count / samples:6.1f}  {frame}")
    print("\ninclusive %   function")
    for frame, count in total.most_common(40):
        print(f"{100 * count / samples:6.1f}  {frame}")


if __name__ == "__main__":
    main()
