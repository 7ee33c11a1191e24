"""Where the benchmarked worker runs (issue 17, `--engine`), for echo.py and ingest.py.

- `inproc` (default, as before): one udplab process, web and engine together, placed by
  `--pinning` (common.place).
- `agent`: "the local engine in its own process": a private nats-server on a free loopback
  port (`fleet init` into a temp dir, as bench/fleet.py does), a dashboard
  (`udplab --nats URL --creds dashboard.creds`) and ONE `udplab agent` on this machine. The
  worker is started ON THE AGENT (`"machine": AGENT` in its spec) through the dashboard's API;
  watchers stay on the dashboard. Pinning: the agent process (all its threads) on the UDP CPU
  (the book's server's and the C server's), the dashboard and nats-server on the other CPU.

Loopback only; every process started is stopped by `close()` (also on an error or Ctrl+C:
callers use it in a `finally`/`with`).
"""

import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

from common import PY, ROOT, cpu_ns, end, pin, place, spawn_pinned, start_udplab, stop_udplab, \
    wait_for
from fleet import NATS_SERVER, free_port

from webapp.fleet import config

ENGINES = ("inproc", "agent")


def stop_on_sigterm(name: str) -> None:
    """The suite stops a benchmark past its time limit with SIGTERM: end as on Ctrl+C, through
    the `finally` blocks that stop udplab, the agent and nats-server (as bench/fleet.py does)."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(f"{name}: stopped by SIGTERM"))
AGENT = "a1"


class Engine:
    """The udplab process(es) of one benchmark run. `server` is the dashboard (the API and the
    watchers' end); `parts` maps a label to a pid whose CPU is read apart; `args` are more
    options of the udplab (dashboard) process."""

    def __init__(self, kind: str, udp_cpu: str, rest_cpu: str, args: tuple[str, ...] = ()):
        self.kind, self.udp_cpu, self.rest_cpu, self.args = kind, udp_cpu, rest_cpu, args
        self.server = self.nats = self.agent = None
        self.directory: Path | None = None
        try:
            self._start()
        except BaseException:
            self.close()
            raise

    def _start(self) -> None:
        if self.kind == "inproc":
            self.server = start_udplab(cpus=self.udp_cpu, args=self.args)
            return
        if not os.access(NATS_SERVER, os.X_OK):
            raise SystemExit(f"--engine agent: {NATS_SERVER} not found: run `make test-setup` "
                             "(it installs Debian's nats-server package)")
        self.directory = Path(tempfile.mkdtemp(prefix="udplab-engine-bench-"))
        port = free_port()
        config.init(self.directory, [AGENT], listen=f"127.0.0.1:{port}")
        url = f"nats://127.0.0.1:{port}"
        self.nats = spawn_pinned(self.rest_cpu, [NATS_SERVER, "-c",
                                                 self.directory / "nats-server.conf"],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.server = start_udplab(cpus=self.rest_cpu, args=(
            *self.args, "--nats", url, "--creds", str(self.directory / "dashboard.creds")))
        with open(self.directory / "agent.log", "wb") as log:
            self.agent = spawn_pinned(self.udp_cpu, [
                PY, "-m", "webapp", "agent", "--nats", url, "--name", AGENT, "--creds",
                self.directory / f"{AGENT}.creds"], cwd=ROOT,
                env={**os.environ, "PYTHONPATH": str(ROOT)}, stdin=subprocess.DEVNULL,
                stdout=log, stderr=subprocess.STDOUT)
        with self.server.client() as http:
            def up() -> bool:
                return any(m["name"] == AGENT and m["state"] == "up"
                           for m in http.get("/api/machines").json()["machines"])
            if not wait_for(up, timeout=30, step=0.2):
                tail = (self.directory / "agent.log").read_text(errors="replace")[-400:]
                raise RuntimeError(f"--engine agent: agent {AGENT} not up within 30 s "
                                   f"(exit {self.agent.poll()}): {tail}")
        pin(self.agent.pid, self.udp_cpu)  # every thread, also those made since its start

    def spec(self, spec: dict) -> dict:
        """A worker spec for where the engine runs."""
        return {**spec, "machine": AGENT} if self.kind == "agent" else spec

    @property
    def parts(self) -> dict[str, int]:
        if self.kind == "inproc":
            return {"udplab": self.server.proc.pid}
        return {"agent": self.agent.pid, "dashboard": self.server.proc.pid,
                "nats": self.nats.pid}

    def cpu(self) -> dict[str, int]:
        """Nanoseconds on a CPU so far of each part (all threads)."""
        return {name: cpu_ns(pid) for name, pid in self.parts.items()}

    def place(self, pinning: str) -> None:
        """`--pinning` for inproc (after its UDP threads started); the agent is placed at
        its start."""
        if self.kind == "inproc":
            place(self.server.proc.pid, pinning, self.udp_cpu, self.rest_cpu)

    def note(self, pinning: str) -> str:
        """The placement, in words, for a table's title."""
        if self.kind == "agent":
            return (f"udplab agent (all threads, the worker) on CPU {self.udp_cpu}; dashboard "
                    f"and nats-server on CPU {self.rest_cpu}")
        from common import pinning_note
        return pinning_note(pinning, self.udp_cpu, self.rest_cpu)

    def close(self) -> None:
        """Stop what was started; each step runs even if one before it is interrupted (a
        Ctrl+C or the suite's SIGTERM during the clean-up)."""
        try:
            if self.agent is not None:
                end(self.agent, timeout=10)
        finally:
            try:
                if self.server is not None:
                    stop_udplab(self.server)
            finally:
                try:
                    if self.nats is not None:
                        end(self.nats)
                finally:
                    if self.directory is not None:
                        shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self) -> "Engine":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def udplab_ns(parts: dict[str, int]) -> int:
    """CPU of the udplab processes (inproc: the one; agent: agent + dashboard), not nats."""
    return sum(v for k, v in parts.items() if k != "nats")
