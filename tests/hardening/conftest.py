"""Fixtures for the hardening tests (issue 7): network namespaces of the test's own, apps
started with chosen limits, and helpers to drive an app that lives inside a namespace.

Traffic rules (DESIGN.md §5): datagrams go only to loopback or into namespaces made here.
A "real network" is a veth pair between two namespaces of this test; the far end either has
no address (with a static neighbour entry pointing at a made-up MAC, datagrams are counted
on the interface and dropped by the peer) or is a second namespace of ours. Every namespace
is deleted when the test ends, and a test that leaves one behind fails.

Helpers come as fixtures, not imports: several folders have a module named `conftest`.
"""

import ctypes
import ctypes.util
import itertools
import json
import os
import shutil
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis.configuration import set_hypothesis_home_dir

from live import LiveServer, start_server, stop_and_check

# Hypothesis keeps caches (and, unless told otherwise, an example database) in ./.hypothesis:
# keep the checkout clean. The tests also pass database=None.
set_hypothesis_home_dir(Path(tempfile.gettempdir()) / "udplab-hypothesis")

CLONE_NEWNET = 0x40000000
PREFIX = f"hard{os.getpid()}-"  # never `udplab-`: the app deletes orphans of its own prefix
BOGUS_MAC = "02:00:00:00:00:01"
_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
_numbers = itertools.count(1)


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=10,
                          check=check)


def my_namespaces() -> list[str]:
    lines = ip("netns", "list").stdout.splitlines()
    return sorted(line.split()[0] for line in lines if line.startswith(PREFIX))


class Netns:
    """A named network namespace of this test, and one thread living inside it.

    `call(fn, ...)` runs `fn` in that thread: every socket it opens (httpx connections
    included) and every process it starts (a `python -m webapp`) is inside the namespace.
    A thread enters a namespace with setns(2) for itself only; the rest of pytest stays out.
    """

    def __init__(self, name: str):
        self.name = name
        ip("netns", "add", name)
        self.ip("link", "set", "lo", "up")
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name,
                                          initializer=self._enter)

    def _enter(self) -> None:
        fd = os.open(f"/run/netns/{self.name}", os.O_RDONLY)
        try:
            if _libc.setns(fd, CLONE_NEWNET) != 0:
                err = ctypes.get_errno()
                raise OSError(err, f"setns into {self.name}: {os.strerror(err)}")
        finally:
            os.close(fd)

    def ip(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return ip("-n", self.name, *args, check=check)

    def call(self, fn, *args: Any, timeout: float = 60, **kwargs: Any) -> Any:
        return self._thread.submit(fn, *args, **kwargs).result(timeout=timeout)

    def stats(self, ifname: str) -> dict[str, int]:
        """The interface's transmit counters, as the kernel of this namespace has them."""
        link = json.loads(self.ip("-s", "-j", "link", "show", "dev", ifname).stdout)[0]
        tx = link["stats64"]["tx"]
        return {"packets": tx["packets"], "bytes": tx["bytes"]}

    def close(self) -> None:
        self._thread.shutdown(wait=True, cancel_futures=True)
        ip("netns", "del", self.name, check=False)


class Net:
    """Namespaces `a` (where the app runs) and `b`, joined by veth `va` (in a) — `vb` (in b).

    With `peer_address=None`, b's end has no address: `a` reaches `far` through a static
    neighbour entry with a made-up MAC, so every datagram is counted on `va` and dropped by
    `vb` (not its MAC). With a `peer_address`, b is a real peer that can answer."""

    def __init__(self, subnet: str, peer_address: bool, mtu: int = 1500):
        n = next(_numbers)
        self.a = Netns(f"{PREFIX}{n}a")
        self.b = Netns(f"{PREFIX}{n}b")
        self.subnet = subnet
        base = subnet.rsplit(".", 1)[0]
        self.here, self.far = f"{base}.1", f"{base}.2"
        ip("link", "add", "va", "netns", self.a.name, "type", "veth",
           "peer", "name", "vb", "netns", self.b.name)
        for ns, dev in ((self.a, "va"), (self.b, "vb")):
            # No IPv6 on the pair: no router solicitations or DAD to blur the counters.
            ns.ip("link", "set", dev, "mtu", str(mtu))
            subprocess.run(["ip", "netns", "exec", ns.name, "sysctl", "-qw",
                            f"net.ipv6.conf.{dev}.disable_ipv6=1"], check=True, timeout=10)
            ns.ip("link", "set", dev, "up")
        self.a.ip("addr", "add", f"{self.here}/24", "dev", "va")
        if peer_address:
            self.b.ip("addr", "add", f"{self.far}/24", "dev", "vb")
        else:
            self.a.ip("neigh", "add", self.far, "lladdr", BOGUS_MAC, "dev", "va",
                      "nud", "permanent")

    def tx(self) -> dict[str, int]:
        return self.a.stats("va")

    def close(self) -> None:
        self.a.close()
        self.b.close()


@pytest.fixture
def make_net():
    """`make_net(subnet, peer_address=False, mtu=1500)`: a two-namespace test network."""
    if shutil.which("ip") is None:
        pytest.fail("the hardening tests need iproute2's `ip` (Debian: apt-get install iproute2)")
    nets: list[Net] = []

    def make(subnet: str = "10.99.0.0/24", peer_address: bool = False, mtu: int = 1500) -> Net:
        net = Net(subnet, peer_address, mtu)
        nets.append(net)
        return net

    try:
        yield make
    finally:
        for net in nets:
            net.close()


@pytest.fixture(autouse=True)
def no_namespace_of_ours_left():
    """Whatever a test does, no namespace of this pytest process survives it."""
    yield
    left = my_namespaces()
    for name in left:
        ip("netns", "del", name, check=False)
    assert not left, f"the test left these namespaces behind: {left}"


class NsClient:
    """A Bearer httpx client of an app inside a namespace; every call runs in that namespace."""

    def __init__(self, ns: Netns, server: LiveServer):
        self.ns = ns
        self.server = server
        self.http = ns.call(lambda: httpx.Client(base_url=server.base, headers=server.bearer,
                                                 timeout=10.0))

    def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        return self.ns.call(self.http.request, method, url, **kwargs)

    def get(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("GET", url, **kwargs)

    def post(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("POST", url, **kwargs)

    def delete(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("DELETE", url, **kwargs)

    def close(self) -> None:
        self.ns.call(self.http.close)


class Apps:
    """Apps of this test: started with chosen flags, here or inside a namespace; each must
    stop cleanly on SIGTERM (exit 0, no traceback) at the end of the test."""

    def __init__(self, tmp_path: Path):
        self.tmp_path = tmp_path
        self.started: list[LiveServer] = []
        self.clients: list[NsClient] = []

    def start(self, *args: str) -> LiveServer:
        server = start_server(self.tmp_path / f"app{len(self.started)}", args=args)
        self.started.append(server)
        return server

    def start_in(self, ns: Netns, *args: str,
                 wrapper: tuple[str, ...] = ()) -> tuple[LiveServer, NsClient]:
        """An app whose process lives in `ns` (its health check and clients too)."""
        workdir = self.tmp_path / f"app{len(self.started)}"
        server = ns.call(start_server, workdir, args=args, wrapper=wrapper)
        self.started.append(server)
        client = NsClient(ns, server)
        self.clients.append(client)
        return server, client

    def close(self) -> None:
        for client in self.clients:
            try:
                client.close()
            except RuntimeError:
                pass  # its namespace thread is gone already
        errors = []
        for server in self.started:
            if server.proc.poll() is None:
                try:
                    stop_and_check(server)
                except AssertionError as exc:
                    errors.append(str(exc))
            else:
                server.terminate()
        assert not errors, "\n".join(errors)


@pytest.fixture
def apps(tmp_path, make_net):
    """Depends on `make_net` so that apps stop before their namespaces go."""
    registry = Apps(tmp_path)
    try:
        yield registry
    finally:
        registry.close()


def wait_for(predicate, what: str, timeout: float = 5.0, step: float = 0.02):
    """Poll until `predicate()` is truthy (returns it); fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(step)


@pytest.fixture
def until():
    """`until(predicate, what, timeout=5.0)`: a bounded synchronous wait."""
    return wait_for
