"""Fixtures for the virtual-LAN tests (issue 5): the privilege guard, the kernel as iproute2
reports it, and a udplab process of a test's own whose lab must be gone when it stops.

Helpers come as fixtures, not imports: several folders have a module named `conftest`.
Traffic only ever flows inside namespaces these tests (or the app under test) created, and
on loopback.
"""

import json
import os
import shutil
import subprocess

from contextlib import asynccontextmanager

import pytest

from live import LiveServer, start_server, stop_and_check
from webapp.engine import Supervisor
from webapp.engine import lab as lab_module

LAB_NAMESPACES = 6  # h1 to h4, the router and the switch: one namespace each


class Kernel:
    """What iproute2 says about the machine and the lab's namespaces."""

    def __init__(self) -> None:
        self.ip = shutil.which("ip")  # None without iproute2: then there can be no lab

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        assert self.ip, "iproute2's `ip` is needed (Debian: apt-get install iproute2)"
        return subprocess.run([self.ip, *args], capture_output=True, text=True, timeout=10,
                              check=check)

    def json(self, *args: str) -> list[dict]:
        """`ip -j ARGS` (or `ip -n NS -j ARGS` when args start with -n NS), parsed."""
        if args[:1] == ("-n",):
            out = self.run("-n", args[1], "-j", *args[2:]).stdout
        else:
            out = self.run("-j", *args).stdout
        return json.loads(out or "[]")

    def namespaces(self, prefix: str = lab_module.PREFIX) -> list[str]:
        """Every named network namespace whose name starts with `prefix`."""
        lines = self.run("netns", "list").stdout.splitlines()
        return sorted(line.split()[0] for line in lines if line.startswith(prefix))

    def delete(self, names: list[str]) -> None:
        for name in names:
            self.run("netns", "del", name, check=False)

    def root_links(self) -> set[str]:
        """Interface names of the machine's own network namespace."""
        return {link["ifname"] for link in self.json("link")}

    def root_routes(self) -> list[dict]:
        """Every route of the machine's own namespace, all tables."""
        return self.json("route", "show", "table", "all")


@pytest.fixture(scope="session")
def kernel() -> Kernel:
    return Kernel()


@pytest.fixture
def lab_admin(kernel) -> None:
    """Building the lab needs CAP_NET_ADMIN. CI runs as root, where a skip is a failure."""
    if kernel.ip is None:
        pytest.skip("the virtual LAN needs iproute2's `ip` (Debian: apt-get install iproute2)")
    if not lab_module.can_build():
        pytest.skip("the virtual LAN needs CAP_NET_ADMIN (run the tests as root, as CI "
                    "does): " + lab_module.NEEDS_ADMIN)


@pytest.fixture
def built_lab(kernel, lab_admin):
    """`async with built_lab() as sup`: a supervisor with its lab built, every namespace of
    it there; after the `async with` none of them may remain."""
    @asynccontextmanager
    async def built():
        async with Supervisor() as sup:
            await sup.build_lab()
            prefix = sup.lab.prefix
            assert len(kernel.namespaces(prefix)) == LAB_NAMESPACES
            yield sup
        assert kernel.namespaces(prefix) == [], "leaving `async with` must tear the lab down"

    return built


@pytest.fixture(autouse=True)
def no_lab_of_this_process_left(kernel):
    """Safety net: whatever a test does, the labs this pytest process built are deleted at
    its end, and a test that left one behind fails."""
    if kernel.ip is None:
        yield
        return
    mine = f"{lab_module.PREFIX}{os.getpid()}-"
    before = set(kernel.namespaces(mine))
    yield
    left = sorted(set(kernel.namespaces(mine)) - before)
    kernel.delete(left)
    assert not left, f"the test left these namespaces behind: {left}"


def app_prefix(server: LiveServer) -> str:
    """The prefix of every namespace a udplab process may create: `udplab-<its pid>-`."""
    return f"{lab_module.PREFIX}{server.proc.pid}-"


@pytest.fixture
def lab_app(tmp_path, kernel, lab_admin) -> LiveServer:
    """A udplab process of this test's own. At the end it must stop cleanly on SIGTERM
    (unless the test already stopped it) and no namespace of it may remain."""
    server = start_server(tmp_path / "udplab")
    server.prefix = app_prefix(server)
    try:
        yield server
    finally:
        if server.proc.poll() is None:
            stop_and_check(server)
        else:
            server.terminate()  # the test stopped it (and checked how); close the files
        left = kernel.namespaces(server.prefix)
        kernel.delete(left)
        assert not left, f"udplab pid {server.proc.pid} left these namespaces: {left}"
