"""Fixtures for the fleet tests (issue 15): a real nats-server on a free port with the config
`udplab fleet init` wrote, a small LAN of network namespaces on a bridge this test made
(198.18.N.0/24, benchmarking space, never a real LAN; N picked per run), and `udplab agent`
processes each inside its own namespace, reaching nats-server over that bridge as separate
machines would.

Everything made here is removed in `finally` blocks: processes, namespaces, the bridge.
Traffic flows only on loopback and inside these namespaces.
"""

import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from webapp.fleet import config

REPO = Path(__file__).resolve().parents[2]
NATS_SERVER = "/usr/sbin/nats-server"


def _free_subnet() -> str:
    """198.18.N for N in 50..90 not on any interface here: two runs at once (two worktrees)
    each get their own LAN, or their bridges would both claim .1."""
    taken = ip("-o", "-4", "addr", "show").stdout
    free = [n for n in range(50, 91) if f" 198.18.{n}." not in taken]
    return f"198.18.{secrets.choice(free or [50])}"


NS_PREFIX = "ulfleet-"  # not the lab's `udplab-`: its orphan cleaner must leave these alone


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def wait_port(host: str, port: int, proc: subprocess.Popen, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"nats-server exited with {proc.returncode}")
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.02)
    raise RuntimeError(f"nats-server did not listen on {host}:{port} in {timeout} s")


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=10,
                          check=check)


SUBNET = _free_subnet()  # the test LAN: .1 the bridge (nats-server), .2… the agents' machines


@dataclass
class NatsServer:
    """A running nats-server with a fleet's config."""

    dir: Path
    host: str
    port: int
    proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"nats://{self.host}:{self.port}"

    def creds(self, user: str) -> config.Creds:
        return config.Creds.load(self.dir / f"{user}.creds")

    def start(self) -> "NatsServer":
        log = (self.dir / "nats-server.log").open("ab")
        self.proc = subprocess.Popen([NATS_SERVER, "-c", str(self.dir / "nats-server.conf")],
                                     stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        log.close()
        wait_port(self.host, self.port, self.proc)
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)


def make_fleet(directory: Path, host: str, machines: list[str]) -> NatsServer:
    port = free_port(host)
    config.init(directory, machines, listen=f"{host}:{port}")
    return NatsServer(directory, host, port)


@pytest.fixture
def new_fleet():
    """`make_fleet` (helpers come as fixtures: several folders have a `conftest` module)."""
    return make_fleet


@pytest.fixture
def nats_loopback(tmp_path):
    """nats-server on 127.0.0.1 with a fleet of machines a, b and c."""
    server = make_fleet(tmp_path / "fleet", "127.0.0.1", ["a", "b", "c"]).start()
    try:
        yield server
    finally:
        server.stop()


@dataclass
class AgentProcess:
    """One `udplab agent` running inside a namespace."""

    name: str
    namespace: str
    proc: subprocess.Popen
    out: Path
    err: Path

    def stderr(self) -> str:
        return self.err.read_text(errors="replace")

    def stop(self) -> int | None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=8)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        return self.proc.returncode


@dataclass
class Lan:
    """A bridge in this machine's namespace and one namespace per machine behind it."""

    tag: str = field(default_factory=lambda: secrets.token_hex(3))
    hosts: dict[str, str] = field(default_factory=dict)  # machine -> its address
    agents: list[AgentProcess] = field(default_factory=list)
    bridge: str = ""
    made_bridge: bool = False

    def __post_init__(self) -> None:
        self.bridge = f"ulfb{self.tag}"

    def ns(self, machine: str) -> str:
        return f"{NS_PREFIX}{self.tag}-{machine}"

    def outer(self, machine: str) -> str:
        """The root end of `machine`'s veth, on the bridge."""
        return f"ulf{self.tag}{machine}"

    def build(self, machines: list[str]) -> None:
        ip("link", "add", self.bridge, "type", "bridge")
        self.made_bridge = True
        ip("addr", "add", f"{SUBNET}.1/24", "dev", self.bridge)
        ip("link", "set", self.bridge, "up")
        for index, machine in enumerate(machines, start=2):
            ns, outer = self.ns(machine), self.outer(machine)
            ip("netns", "add", ns)
            self.hosts[machine] = f"{SUBNET}.{index}"
            ip("link", "add", outer, "type", "veth", "peer", "name", "eth0", "netns", ns)
            ip("link", "set", outer, "master", self.bridge)
            ip("link", "set", outer, "up")
            ip("-n", ns, "addr", "add", f"{SUBNET}.{index}/24", "dev", "eth0")
            ip("-n", ns, "link", "set", "eth0", "up")
            ip("-n", ns, "link", "set", "lo", "up")

    def agent(self, server: NatsServer, machine: str, *, creds: str | None = None,
              extra: tuple[str, ...] = (), wait: bool = True,
              wrap: tuple[str, ...] = ()) -> AgentProcess:
        """Start `udplab agent` for `machine` inside its namespace; wait until it serves.
        `wrap` goes before Python (`setpriv ...`: an agent with fewer capabilities)."""
        n = sum(1 for a in self.agents if a.name == machine)
        out = server.dir / f"agent-{machine}-{n}.out"
        err = server.dir / f"agent-{machine}-{n}.err"
        env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1"}
        with out.open("wb") as o, err.open("wb") as e:
            proc = subprocess.Popen(
                ["ip", "netns", "exec", self.ns(machine), *wrap, sys.executable, "-m", "webapp",
                 "agent", "--nats", server.url, "--name", machine, "--creds",
                 str(server.dir / f"{creds or machine}.creds"),
                 "--allow-net", f"{SUBNET}.0/24", *extra],
                cwd=REPO, env=env, stdin=subprocess.DEVNULL, stdout=o, stderr=e)
        agent = AgentProcess(machine, self.ns(machine), proc, out, err)
        self.agents.append(agent)
        if wait:
            deadline = time.monotonic() + 20
            while "is serving" not in out.read_text(errors="replace"):
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"agent {machine} did not start:\n{agent.stderr()}")
                time.sleep(0.05)
        return agent

    def teardown(self) -> None:
        for agent in self.agents:
            agent.stop()
        for machine in self.hosts:
            # the veth first, by its outer end: a namespace's deletion frees its links later,
            # in the kernel's own time, and a test that compares the root's links right after
            # (tests/lab) saw them go away under it
            ip("link", "del", self.outer(machine), check=False)
            ip("netns", "del", self.ns(machine), check=False)
        if self.made_bridge:
            ip("link", "del", self.bridge, check=False)


@pytest.fixture(scope="module")
def lan_fleet(tmp_path_factory):
    """A LAN of machines a, b, c (namespaces), nats-server on the bridge, agents a and b."""
    lan = Lan()
    server = None
    try:
        lan.build(["a", "b", "c"])
        server = make_fleet(tmp_path_factory.mktemp("fleet"), f"{SUBNET}.1",
                            ["a", "b", "c"]).start()
        lan.agent(server, "a")
        lan.agent(server, "b")
        yield lan, server
    finally:
        lan.teardown()
        if server is not None:
            server.stop()
    assert not [line for line in ip("netns", "list").stdout.splitlines()
                if line.startswith(f"{NS_PREFIX}{lan.tag}")]
