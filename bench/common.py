"""Shared helpers for the benchmarks: a real udplab process, /proc readings, the C tools,
the watcher process, small statistics and table printing.

Traffic: loopback only (127.0.0.1). Every loop here is bounded in count and time.
"""

import argparse
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
BUILD = BENCH / "build"  # git-ignored by the top-level `build/` pattern
RESULTS = BUILD / "results"
PY = sys.executable
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from live import LiveServer, start_server  # noqa: E402

CLK_TCK = os.sysconf("SC_CLK_TCK")
C_TOOLS = ("echo_server", "rt_client", "blast")


# --- C tools ----------------------------------------------------------------------------------

def build_c() -> dict[str, Path]:
    """Compile bench/c/*.c with the system compiler into bench/build/ (when out of date)."""
    BUILD.mkdir(parents=True, exist_ok=True)
    cc = os.environ.get("CC", "cc")
    out = {}
    for name in C_TOOLS:
        src, exe = BENCH / "c" / f"{name}.c", BUILD / name
        if not exe.exists() or exe.stat().st_mtime < src.stat().st_mtime:
            subprocess.run([cc, "-O2", "-Wall", "-o", str(exe), str(src)], check=True,
                           timeout=60)
        out[name] = exe
    return out


# --- the udplab process -----------------------------------------------------------------------

def start_udplab(cpus: str | None = None, args: tuple[str, ...] = ()) -> LiveServer:
    """A real `python -m webapp --port 0` (as tests/live.py starts it), pinned to `cpus`."""
    server = start_server(Path(tempfile.mkdtemp(prefix="udplab-bench-")), args=args)
    if cpus is not None:
        pin(server.proc.pid, cpus)
    return server


def stop_udplab(server: LiveServer) -> int | None:
    """SIGTERM and wait (killed if it does not end in time), then remove its work directory
    (logs and the history database that tests/live.py points XDG_DATA_HOME at)."""
    code = server.terminate()
    workdir = server.stdout_path.parent
    if workdir.name.startswith("udplab-bench-"):
        shutil.rmtree(workdir, ignore_errors=True)
    return code


def pin(pid: int, cpus: str) -> None:
    """Pin every thread of `pid` to `cpus` (taskset -a)."""
    subprocess.run(["taskset", "-a", "-p", "-c", cpus, str(pid)], check=True,
                   stdout=subprocess.DEVNULL, timeout=10)


# How udplab is placed on the two CPUs (issue 17), printed in every table that uses it:
# - `shared`: the whole process (every thread) on the CPU of the book's server / the UDP
#   load, as before issue 17: the UDP path and the web work share one core;
# - `split`: the threads that read UDP sockets (named `udp:<worker>`, see
#   webapp/engine/workers/reader.py) on that CPU, the rest of udplab (the event loop: web,
#   events, pages) on the other one: "the UDP path on its own core".
PINNINGS = ("shared", "split")
UDP_THREAD = "udp:"


def threads(pid: int) -> dict[int, str]:
    """Thread id -> name (comm) of every thread of `pid`."""
    out = {}
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{task}/comm") as f:
                out[int(task)] = f.read().strip()
        except (FileNotFoundError, ProcessLookupError):
            pass
    return out


def place(pid: int, pinning: str, udp_cpu: str, rest_cpu: str, wait: float = 3.0) -> int:
    """Apply `pinning` to a running udplab: for `split`, wait (bounded) for its UDP threads
    (a worker's thread starts on its first datagram) and pin them to `udp_cpu`, every other
    thread to `rest_cpu`. `shared` leaves the start-up pinning (all on `udp_cpu`). The number
    of UDP threads found."""
    if pinning == "shared":
        return 0
    found = wait_for(lambda: [t for t, n in threads(pid).items() if n.startswith(UDP_THREAD)],
                     wait)
    if not found:
        raise RuntimeError("split pinning: udplab has no udp:* thread (a udplab without "
                           "issue 17's reader threads cannot be split; use --pinning shared)")
    for tid, name in threads(pid).items():
        cpus = udp_cpu if name.startswith(UDP_THREAD) else rest_cpu
        subprocess.run(["taskset", "-p", "-c", cpus, str(tid)], check=False,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=10)
    return len(found)


def prime(port: int) -> None:
    """One datagram to a worker on 127.0.0.1:`port`, so its reader thread starts."""
    import socket
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.sendto(b"prime", ("127.0.0.1", port))


def pinning_note(pinning: str, udp_cpu: str, rest_cpu: str) -> str:
    """The placement, in words, for a table's title."""
    if pinning == "split":
        return f"udplab's UDP threads on CPU {udp_cpu}, the rest of udplab on CPU {rest_cpu}"
    return f"udplab (all threads) on CPU {udp_cpu}"


def load_average() -> str:
    """The 1, 5 and 15 minute load averages (the machine may be shared)."""
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def udplab_accepts(option: str) -> bool:
    """Whether `python -m webapp --help` lists `option` (for options other sessions add)."""
    out = subprocess.run([PY, "-m", "webapp", "--help"], cwd=ROOT, capture_output=True,
                         text=True, timeout=30, env={**os.environ, "PYTHONPATH": str(ROOT)})
    return option in out.stdout


# --- the page in Chromium ---------------------------------------------------------------------

def open_dashboard(pw, server: LiveServer, width: int = 1280, height: int = 900):
    """Debian's Chromium (Playwright `pw`) on udplab's page, logged in by the token URL, once
    its live stream is up: (browser, page, milliseconds from goto to live). Close the browser."""
    from tests.browser.conftest import CHROMIUM, CHROMIUM_ARGS

    browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
    try:
        page = browser.new_page(viewport={"width": width, "height": height})
        started = time.perf_counter()
        page.goto(f"{server.base}/?token={server.token}")
        page.wait_for_selector("#conn-status.live")
    except BaseException:
        browser.close()
        raise
    return browser, page, (time.perf_counter() - started) * 1000


# --- /proc ------------------------------------------------------------------------------------

def cpu_seconds(pid: int) -> float:
    """utime + stime of the whole process (all threads), in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def cpu_ns(pid: int) -> int:
    """Time on CPU of every thread of `pid`, in nanoseconds (sum of /proc/<pid>/task/*/schedstat);
    finer than utime+stime (clock ticks of 10 ms), which `cpu_seconds` reads."""
    total = 0
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{task}/schedstat") as f:
                total += int(f.read().split()[0])
        except (FileNotFoundError, ProcessLookupError):
            pass  # a thread that just ended
    return total


def cpu_ns_of_threads(pid: int, prefix: str = UDP_THREAD) -> int:
    """Time on CPU of the threads of `pid` whose name starts with `prefix` (udplab's C receive
    threads, `udp:<worker>`), in nanoseconds."""
    total = 0
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{task}/comm") as f:
                if not f.read().startswith(prefix):
                    continue
            with open(f"/proc/{pid}/task/{task}/schedstat") as f:
                total += int(f.read().split()[0])
        except (FileNotFoundError, ProcessLookupError):
            pass  # a thread that just ended
    return total


def run_queue_ns(pid: int) -> int:
    """Time the threads of `pid` waited for a CPU while runnable (schedstat's second field):
    on a shared machine, how much of a latency is the scheduler's."""
    total = 0
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{task}/schedstat") as f:
                total += int(f.read().split()[1])
        except (FileNotFoundError, ProcessLookupError):
            pass
    return total


def descendants(pid: int) -> list[int]:
    """Every process below `pid` (children, their children, ...), from /proc."""
    parents = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    parents[int(entry)] = int(f.read().rsplit(")", 1)[1].split()[1])
            except (FileNotFoundError, ProcessLookupError, IndexError, ValueError):
                pass
    found, frontier = [], [pid]
    while frontier and len(found) < 10_000:
        children = [p for p, parent in parents.items() if parent in frontier]
        found += children
        frontier = children
    return found


def rss_kib(pid: int) -> int:
    """VmRSS in KiB."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


def udp_socket(port: int) -> dict | None:
    """The /proc/net/udp line of the socket bound to `port`: rx_queue bytes and drops."""
    want = f":{port:04X}"
    with open("/proc/net/udp") as f:
        next(f)
        for line in f:
            fields = line.split()
            if fields[1].endswith(want):
                return {"rx_queue": int(fields[4].split(":")[1], 16), "drops": int(fields[12])}
    return None


def udp_drops(port: int) -> int:
    sock = udp_socket(port)
    return sock["drops"] if sock else -1


def machine() -> str:
    model = "?"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return f"nproc={os.cpu_count()}, CPU: {model}, Python {sys.version.split()[0]}"


# --- processes --------------------------------------------------------------------------------

def run_pinned(cpus: str, argv: list, timeout: float) -> str:
    """Run a command pinned to `cpus`; its stdout."""
    return subprocess.run(["taskset", "-c", cpus, *map(str, argv)], check=True,
                          capture_output=True, text=True, timeout=timeout).stdout


def spawn_pinned(cpus: str, argv: list, **kwargs) -> subprocess.Popen:
    return subprocess.Popen(["taskset", "-c", cpus, *map(str, argv)], **kwargs)


def end(proc: subprocess.Popen, timeout: float = 5.0) -> None:
    """SIGTERM one process we started, then SIGKILL if it lingers."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


class Watchers:
    """A `bench/watchers.py` process holding N WebSocket watchers of one udplab.

    `kind` is `json` (WS /api/events, Bearer) or `page` (WS /ws/page, cookie + Origin)."""

    def __init__(self, server: LiveServer, kind: str, n: int, cpus: str = "1",
                 parse: bool = False, max_seconds: float = 120.0, deflate: bool = True,
                 viewer_token: str | None = None, lag: bool = False):
        self.n = n
        argv = [PY, str(BENCH / "watchers.py"), "--port", server.port,
                "--token", viewer_token or server.token,
                "--kind", kind, "--n", n, "--max-seconds", max_seconds]
        if viewer_token:
            argv.append("--view")
        if lag:
            argv.append("--lag")
        if parse:
            argv.append("--parse")
        if not deflate:
            argv.append("--no-deflate")
        self.proc = spawn_pinned(cpus, argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                 text=True)
        line = self._line(timeout=30)
        if not line.startswith("ready"):
            end(self.proc)
            raise RuntimeError(f"watchers did not start: {line!r}")

    def _line(self, timeout: float) -> str:
        import select
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        if not ready:
            return "(no answer)"
        return self.proc.stdout.readline().strip()

    def stats(self, command: str = "stats") -> dict:
        """Counts so far: messages, bytes, events (with --parse), dropped; `reset` also
        forgets the row lags so far (--lag)."""
        self.proc.stdin.write(f"{command}\n")
        self.proc.stdin.flush()
        return json.loads(self._line(timeout=10))

    def close(self) -> dict | None:
        result = None
        try:
            if self.proc.poll() is None:
                self.proc.stdin.write("quit\n")
                self.proc.stdin.flush()
                line = self._line(timeout=10)
                result = json.loads(line) if line.startswith("{") else None
        except (OSError, ValueError):
            pass
        end(self.proc)
        return result

    def __enter__(self) -> "Watchers":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# --- numbers and tables -----------------------------------------------------------------------

def median(values) -> float:
    values = list(values)
    return statistics.median(values) if values else float("nan")


def percentile(values, p: float) -> float:
    values = sorted(values)
    if not values:
        return float("nan")
    k = min(len(values) - 1, max(0, round(p / 100 * (len(values) - 1))))
    return values[k]


def table(title: str, header: list[str], rows: list[list]) -> str:
    """A plain text table."""
    cells = [[str(c) for c in header]] + [[fmt(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = [title, "  ".join(h.rjust(w) for h, w in zip(cells[0], widths)),
             "  ".join("-" * w for w in widths)]
    lines += ["  ".join(c.rjust(w) for c, w in zip(r, widths)) for r in cells[1:]]
    return "\n".join(lines)


def fmt(value) -> str:
    if isinstance(value, float):
        if value != value:
            return "n/a"
        if abs(value) >= 1000:
            return f"{value:,.0f}"
        if abs(value) >= 10:
            return f"{value:.1f}"
        return f"{value:.3g}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)


def save(name: str, data: dict) -> Path:
    """Write a benchmark's results as JSON for the suite's summary."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(data, indent=2, default=str))
    return path


def wait_for(predicate, timeout: float, step: float = 0.02):
    """Poll `predicate()` until truthy or `timeout` seconds; its last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(step)


PORT_RE = re.compile(r"^(\d+)$", re.M)


def class_arguments(description: str) -> argparse.Namespace:
    """--rate, --seconds and --viewers, as class.py and stages.py take them."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--rate", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--viewers", type=int, default=100)
    return parser.parse_args()
