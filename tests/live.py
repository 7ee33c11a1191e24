"""A real UDP Lab server in a subprocess, on a free port, for tests that talk to it."""

import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
URL_LINE = "http://127.0.0.1:"


class LiveServer:
    """`python -m webapp --port 0` with a known token; `stop()` sends SIGTERM."""

    def __init__(self, *args: str, pythonpath: Path = ROOT, cwd: Path = ROOT):
        self.token = secrets.token_urlsafe(24)
        self.log = tempfile.TemporaryFile(mode="w+")
        env = {**os.environ, "UDPLAB_TOKEN": self.token, "PYTHONPATH": str(pythonpath)}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "webapp", "--host", "127.0.0.1", "--port", "0", *args],
            stdout=subprocess.PIPE, stderr=self.log, text=True, env=env, cwd=cwd,
        )
        self.port = self._read_port(deadline=time.monotonic() + 20)
        self.url = f"http://127.0.0.1:{self.port}"
        self._wait_healthy(deadline=time.monotonic() + 20)

    def _read_port(self, deadline: float) -> int:
        for line in self.process.stdout:  # ends when the process exits
            if URL_LINE in line:
                return int(line.split(URL_LINE, 1)[1].split("/", 1)[0])
            if time.monotonic() > deadline:
                break
        self.stop()
        raise RuntimeError(f"udplab did not print its URL; log:\n{self.stderr()}")

    def _wait_healthy(self, deadline: float) -> None:
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/api/health", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"udplab never answered /api/health; log:\n{self.stderr()}")

    @property
    def auth(self) -> dict[str, str]:
        """Headers for a script: the Bearer token."""
        return {"Authorization": f"Bearer {self.token}"}

    def stderr(self) -> str:
        """Everything the server logged so far (all of it, once stopped)."""
        if self.log.closed:
            return self.final_log
        self.log.seek(0)
        return self.log.read()

    def stop(self, timeout: float = 10) -> int:
        """SIGTERM, then wait; returns the exit code (kills it if it hangs)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        if not self.log.closed:
            self.final_log = self.stderr()
            self.log.close()
            self.process.stdout.close()
        return self.process.returncode
