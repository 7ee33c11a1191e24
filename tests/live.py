"""A real `python -m webapp` (uvicorn) in a subprocess on a free port, and small helpers to
drive it with real httpx clients. The fixtures live in conftest.py.

Never Starlette's TestClient: the point is the real server, its real startup output, its
real signal handling and its real log.
"""

import os
import re
import secrets
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[1]
URL_LINE = re.compile(r"http://127\.0\.0\.1:(\d+)/\?token=(\S+)")
START_TIMEOUT = 15.0  # seconds for the process to print its URL and answer /api/health
STOP_TIMEOUT = 6.0  # uvicorn's graceful shutdown timeout is 3 s; a little slack on top


@dataclass
class LiveServer:
    """One running `python -m webapp` process and what a test needs to talk to it."""

    proc: subprocess.Popen
    port: int
    token: str
    stdout_path: Path
    stderr_path: Path
    _files: list = field(default_factory=list)

    @property
    def base(self) -> str:
        """The base URL, without a trailing slash."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def origin(self) -> str:
        """The dashboard's own origin: the only one allowed to change state by cookie."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_base(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    @property
    def cookie_name(self) -> str:
        return f"udplab_{self.port}"

    @property
    def bearer(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    @property
    def cookie(self) -> dict[str, str]:
        """A Cookie header carrying the session cookie that `/?token=…` sets."""
        return {"Cookie": f"{self.cookie_name}={self.token}"}

    def client(self, *, auth: bool = True, **kwargs: Any) -> "ApiClient":
        """A sync httpx client for this server, with the Bearer token unless `auth=False`."""
        headers = dict(self.bearer) if auth else {}
        headers.update(kwargs.pop("headers", {}))
        return ApiClient(base_url=self.base, headers=headers, timeout=10.0,
                            follow_redirects=False, **kwargs)

    def async_client(self, *, auth: bool = True, **kwargs: Any) -> httpx.AsyncClient:
        """An async httpx client for this server, with the Bearer token unless `auth=False`."""
        headers = dict(self.bearer) if auth else {}
        headers.update(kwargs.pop("headers", {}))
        return httpx.AsyncClient(base_url=self.base, headers=headers, timeout=10.0,
                                 follow_redirects=False, **kwargs)

    def log(self) -> str:
        """Everything the server wrote to stderr (uvicorn's log) so far."""
        return self.stderr_path.read_text(errors="replace")

    def output(self) -> str:
        """Everything the server wrote to stdout so far: the start-up URL, then uvicorn's
        access log (uvicorn's default logging config sends access lines to stdout)."""
        return self.stdout_path.read_text(errors="replace")

    def terminate(self, timeout: float = STOP_TIMEOUT) -> int | None:
        """SIGTERM, then wait; the exit code, or None if it did not exit in time (then killed)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            code = None
            self.proc.kill()
            self.proc.wait(timeout=5)
        for f in self._files:
            f.close()
        self._files.clear()
        return code


def start_server(workdir: Path, *, pythonpath: Path = REPO, cwd: Path = REPO,
                 args: tuple[str, ...] = (), wrapper: tuple[str, ...] = ()) -> LiveServer:
    """Start `python -m webapp --port 0` and wait until it answers /api/health.

    `pythonpath` and `cwd` let a test run an unpacked wheel away from the checkout; `args`
    are extra udplab options; `wrapper` goes before the command (e.g. setpriv dropping a
    capability)."""
    token = secrets.token_urlsafe(32)
    env = dict(os.environ)
    env["UDPLAB_TOKEN"] = token
    env["XDG_DATA_HOME"] = str(workdir / "xdg")  # each app's history database in its workdir
    env["PYTHONPATH"] = str(pythonpath)
    env["PYTHONUNBUFFERED"] = "1"
    workdir.mkdir(parents=True, exist_ok=True)
    stdout_path, stderr_path = workdir / "stdout.txt", workdir / "stderr.txt"
    # Files, not pipes: nobody has to keep draining them, so the server can never block on a
    # full pipe, and the log stays readable after the process is gone.
    out, err = stdout_path.open("wb"), stderr_path.open("wb")
    proc = subprocess.Popen(
        [*wrapper, sys.executable, "-m", "webapp", "--host", "127.0.0.1", "--port", "0", *args],
        cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
    )
    server = None
    try:
        deadline = time.monotonic() + START_TIMEOUT
        port = None
        while port is None:
            match = URL_LINE.search(stdout_path.read_text(errors="replace"))
            if match:
                port = int(match.group(1))
                assert match.group(2) == token, "the printed URL must carry the token"
                break
            if proc.poll() is not None:
                raise RuntimeError(f"udplab exited with {proc.returncode}:\n"
                                   f"{stderr_path.read_text(errors='replace')}")
            if time.monotonic() > deadline:
                raise RuntimeError("udplab printed no URL within "
                                   f"{START_TIMEOUT} s:\n{stderr_path.read_text()}")
            time.sleep(0.02)
        server = LiveServer(proc, port, token, stdout_path, stderr_path, [out, err])
        with httpx.Client(timeout=2.0) as http:
            while True:
                try:
                    if http.get(f"{server.base}/api/health").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"udplab did not answer /api/health:\n{server.log()}")
                time.sleep(0.02)
        return server
    except BaseException:
        proc.kill()
        proc.wait(timeout=5)
        out.close()
        err.close()
        raise


def stop_and_check(server: LiveServer) -> None:
    """Teardown: SIGTERM must end the process, with code 0, within the graceful timeout."""
    started = time.monotonic()
    code = server.terminate()
    took = time.monotonic() - started
    assert code == 0, f"udplab exited with {code} after SIGTERM ({took:.1f} s):\n{server.log()}"
    assert "Traceback" not in server.log(), server.log()


# --- helpers --------------------------------------------------------------------------------

class ApiClient(httpx.Client):
    """A sync httpx client that remembers the workers it started, to stop them afterwards."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.started: list[str] = []

    def start(self, **spec: Any) -> dict[str, Any]:
        """POST /api/workers and expect 201 and a running worker."""
        response = self.post("/api/workers", json=spec)
        assert response.status_code == 201, response.text
        worker = response.json()
        self.started.append(worker["id"])
        assert worker["state"] == "running", worker
        return worker

    def stop_started(self) -> None:
        """DELETE every worker this client started (idempotent on the server side)."""
        for worker_id in self.started:
            self.delete(f"/api/workers/{worker_id}")
        self.started.clear()


def wait_state(http: httpx.Client, worker_id: str, states: set[str] | str,
               timeout: float = 5.0) -> dict[str, Any]:
    """Poll GET /api/workers/{id} until its state is one of `states` (bounded in time)."""
    states = {states} if isinstance(states, str) else set(states)
    deadline = time.monotonic() + timeout
    while True:
        response = http.get(f"/api/workers/{worker_id}")
        assert response.status_code == 200, response.text
        worker = response.json()
        if worker["state"] in states:
            return worker
        assert time.monotonic() < deadline, f"{worker_id} still {worker['state']}: {worker}"
        time.sleep(0.02)
