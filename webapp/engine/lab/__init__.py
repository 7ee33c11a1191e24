"""The virtual LAN: a few Linux network namespaces wired as two subnets and a router.

    h1 ─┐                               (subnet lan, MTU 1500)
    h2 ─┼─ switch (a bridge in a namespace of its own) ─ router ─── h4
    h3 ─┘                                               (subnet far, MTU 1280)

IPv6 runs beside IPv4: 2001:2:0:1::/64 on lan and 2001:2:0:2::/64 on far (h1 is 2001:2:0:1::2 as
it is 198.18.1.2), the router forwards both, and every eth0 also has its own fe80:: address.

Every namespace name starts with `udplab-<pid>-<n>-`, so two apps or test runs never
collide, and a lab whose app was killed is found and removed at the next start. Nothing is
created in the machine's own namespace and no route leads out: no traffic leaves the lab.
Building it needs CAP_NET_ADMIN (root).
"""

import ipaddress
import itertools
import json
import os
import re
import subprocess
import time
from dataclasses import dataclass, field

from webapp.engine.errors import BadSpec, Conflict, Refused

PREFIX = "udplab-"
LAN = ipaddress.ip_network("198.18.1.0/24")  # RFC 2544 benchmarking space: never a real LAN
FAR = ipaddress.ip_network("198.18.2.0/24")
FAR_MTU = 1280
# IPv6 beside it, from the benchmarking prefix 2001:2::/48 (RFC 5180), host numbers as IPv4's.
LAN6 = ipaddress.ip_network("2001:2:0:1::/64")
FAR6 = ipaddress.ip_network("2001:2:0:2::/64")
LINK_LOCAL = ipaddress.ip_network("fe80::/64")  # every lab link's own; never routed
NEEDS_ADMIN = (
    "Building the virtual LAN needs CAP_NET_ADMIN (to make network namespaces): run udplab "
    "as root (sudo .venv/bin/udplab), or give Python the capability with "
    "sudo setcap cap_net_admin,cap_net_raw+ep <the venv's python, resolved>. Everything "
    "else works without it."
)
_instances = itertools.count(1)


@dataclass
class Host:
    """A host of the lab: its namespace and its one interface."""

    name: str
    namespace: str
    address: str
    subnet: str
    mtu: int
    gateway: str | None
    broadcast: str
    address6: str | None = None
    subnet6: str | None = None
    gateway6: str | None = None
    link_local: str | None = None  # eth0's fe80:: address, with its scope: fe80::…%eth0

    def to_dict(self) -> dict:
        """The host as `GET /api/lab` shows it."""
        return {"name": self.name, "namespace": self.namespace, "address": self.address,
                "subnet": self.subnet, "broadcast": self.broadcast, "mtu": self.mtu,
                "gateway": self.gateway, "address6": self.address6, "subnet6": self.subnet6,
                "gateway6": self.gateway6, "link_local": self.link_local}


def can_build() -> bool:
    """Whether this process has CAP_NET_ADMIN."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("CapEff:"):
                    return bool(int(line.split()[1], 16) & (1 << 12))
    except OSError:
        pass
    return os.geteuid() == 0


def _ip(*args: str) -> None:
    try:
        done = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=10)
    except FileNotFoundError:
        raise Refused("Building the lab needs the 'ip' command (Debian: apt-get install "
                      "iproute2)", field="lab") from None
    if done.returncode != 0:
        raise Conflict(f"Building the lab failed at 'ip {' '.join(args)}': "
                       f"{done.stderr.strip() or done.returncode}")


def _sysctl(namespace: str, *settings: str) -> None:
    subprocess.run(["ip", "netns", "exec", namespace, "sysctl", "-qw", *settings],
                   check=True, capture_output=True, timeout=10)


def _link_local(namespace: str, ifname: str, wait: float = 2.0) -> str | None:
    """The fe80:: address of an interface, with its scope; the kernel adds it as the link
    comes up (no DAD in the lab), so wait a little, boundedly, if it is not there yet."""
    deadline = time.monotonic() + wait
    while True:
        done = subprocess.run(["ip", "-j", "-n", namespace, "-6", "addr", "show", "dev",
                               ifname, "scope", "link"], capture_output=True, text=True,
                              timeout=10)
        try:
            for link in json.loads(done.stdout or "[]"):
                for info in link.get("addr_info", []):
                    if info.get("local"):  # iproute2 puts an empty {} among them when filtering
                        return f"{info['local']}%{ifname}"
        except (ValueError, AttributeError):
            pass
        if time.monotonic() >= deadline:
            return None
        time.sleep(0.05)


def namespaces() -> list[str]:
    """Every network namespace on the machine whose name is ours (any instance)."""
    try:
        done = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True,
                              timeout=10)
    except FileNotFoundError:  # no iproute2: there can be no lab either
        return []
    return [line.split()[0] for line in done.stdout.splitlines()
            if line.startswith(PREFIX)]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def clean_orphans() -> list[str]:
    """Delete the namespaces of labs whose app is gone (killed, say); their names."""
    removed = []
    for name in namespaces():
        match = re.match(rf"{PREFIX}(\d+)-", name)
        if match and not _alive(int(match.group(1))):
            subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=10)
            removed.append(name)
    return removed


@dataclass
class Lab:
    """One built lab; `build()` and `teardown()` run commands, so call them off the loop."""

    prefix: str = field(default_factory=lambda: f"{PREFIX}{os.getpid()}-{next(_instances)}-")
    hosts: dict[str, Host] = field(default_factory=dict)
    router: dict = field(default_factory=dict)
    built: bool = False

    def ns(self, short: str) -> str:
        """The full namespace name of a lab node (`h1`, `router`, `switch`)."""
        return f"{self.prefix}{short}"

    def build(self) -> None:
        """Make the namespaces, links, addresses and routes; tear down on any failure."""
        if not can_build():
            raise Refused(NEEDS_ADMIN, field="lab")
        if self.built:
            raise Conflict("The lab is already built: tear it down first (DELETE /api/lab)")
        try:
            self._build()
        except BaseException:
            self.teardown()
            raise
        self.built = True

    def _build(self) -> None:
        lan_hosts = list(LAN.hosts())
        far_hosts = list(FAR.hosts())
        nodes = ["switch", "router", "h1", "h2", "h3", "h4"]
        for node in nodes:
            _ip("netns", "add", self.ns(node))
            _ip("-n", self.ns(node), "link", "set", "lo", "up")
            if node != "switch":
                # No duplicate address detection: addresses are usable at once (the lab
                # makes every address itself, so none can be a duplicate).
                _sysctl(self.ns(node), "net.ipv6.conf.all.accept_dad=0",
                        "net.ipv6.conf.default.accept_dad=0")
        switch = self.ns("switch")
        _ip("-n", switch, "link", "add", "br0", "type", "bridge")
        _ip("-n", switch, "link", "set", "br0", "up")
        # router on the lan side, then h1..h3: each a veth pair into the switch
        lan_members = [("router", "lan0", str(lan_hosts[0]))] + [
            (f"h{n}", "eth0", str(lan_hosts[n])) for n in (1, 2, 3)]
        for port, (node, ifname, address) in enumerate(lan_members):
            _ip("-n", self.ns(node), "link", "add", ifname, "type", "veth",
                "peer", "name", f"p{port}", "netns", switch)
            _ip("-n", switch, "link", "set", f"p{port}", "master", "br0")
            _ip("-n", switch, "link", "set", f"p{port}", "up")
            _ip("-n", self.ns(node), "addr", "add", f"{address}/{LAN.prefixlen}",
                "broadcast", str(LAN.broadcast_address), "dev", ifname)
            _ip("-n", self.ns(node), "addr", "add", f"{self._v6(LAN6, port + 1)}/64",
                "dev", ifname, "nodad")
            _ip("-n", self.ns(node), "link", "set", ifname, "up")
        # the far side: router <-> h4 directly, with the smaller MTU
        router, h4 = self.ns("router"), self.ns("h4")
        _ip("-n", router, "link", "add", "far0", "mtu", str(FAR_MTU), "type", "veth",
            "peer", "name", "eth0", "netns", h4)
        _ip("-n", h4, "link", "set", "eth0", "mtu", str(FAR_MTU))
        _ip("-n", router, "addr", "add", f"{far_hosts[0]}/{FAR.prefixlen}", "broadcast",
            str(FAR.broadcast_address), "dev", "far0")
        _ip("-n", h4, "addr", "add", f"{far_hosts[3]}/{FAR.prefixlen}", "broadcast",
            str(FAR.broadcast_address), "dev", "eth0")
        _ip("-n", router, "addr", "add", f"{self._v6(FAR6, 1)}/64", "dev", "far0", "nodad")
        _ip("-n", h4, "addr", "add", f"{self._v6(FAR6, 4)}/64", "dev", "eth0", "nodad")
        _ip("-n", router, "link", "set", "far0", "up")
        _ip("-n", h4, "link", "set", "eth0", "up")
        _sysctl(router, "net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1")
        for n in (1, 2, 3):
            _ip("-n", self.ns(f"h{n}"), "route", "add", "default", "via", str(lan_hosts[0]))
            _ip("-n", self.ns(f"h{n}"), "-6", "route", "add", "default", "via",
                self._v6(LAN6, 1))
        _ip("-n", h4, "route", "add", "default", "via", str(far_hosts[0]))
        _ip("-n", h4, "-6", "route", "add", "default", "via", self._v6(FAR6, 1))
        for n in (1, 2, 3):
            self.hosts[f"h{n}"] = Host(f"h{n}", self.ns(f"h{n}"), str(lan_hosts[n]), str(LAN),
                                       1500, str(lan_hosts[0]), str(LAN.broadcast_address),
                                       self._v6(LAN6, n + 1), str(LAN6), self._v6(LAN6, 1))
        self.hosts["h4"] = Host("h4", h4, str(far_hosts[3]), str(FAR), FAR_MTU,
                                str(far_hosts[0]), str(FAR.broadcast_address),
                                self._v6(FAR6, 4), str(FAR6), self._v6(FAR6, 1))
        for host in self.hosts.values():
            host.link_local = _link_local(host.namespace, "eth0")
        self.router = {"name": "router", "namespace": router,
                       "addresses": {str(LAN): str(lan_hosts[0]), str(FAR): str(far_hosts[0]),
                                     str(LAN6): self._v6(LAN6, 1),
                                     str(FAR6): self._v6(FAR6, 1)}}

    @staticmethod
    def _v6(network: ipaddress.IPv6Network, number: int) -> str:
        """Host `number` of an IPv6 subnet: 2001:2:0:1::2 for h1, as 198.18.1.2 is."""
        return str(network[number])

    def teardown(self) -> list[str]:
        """Delete every namespace of this lab (their links go with them); idempotent."""
        removed = []
        for name in namespaces():
            if name.startswith(self.prefix):
                subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=10)
                removed.append(name)
        self.hosts.clear()
        self.router = {}
        self.built = False
        return removed

    def forget_path_mtus(self, name: str) -> None:
        """Flush a host's route cache, so it forgets the path MTUs it learned."""
        _ip("-n", self.host(name).namespace, "route", "flush", "cache")
        _ip("-n", self.host(name).namespace, "-6", "route", "flush", "cache")

    def host(self, name: str) -> Host:
        """A lab host by name, or `BadSpec` naming the field `where`."""
        if not self.built:
            raise BadSpec(f"There is no virtual LAN to place a worker on {name!r}: build it "
                          "first (POST /api/lab, or the Lab panel)", field="where")
        host = self.hosts.get(name)
        if host is None:
            raise BadSpec(f"The lab has no host {name!r}: use one of "
                          f"{', '.join(self.hosts)}", field="where")
        return host

    def networks(self) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
        """The lab's subnets, which workers may send to (link-local: on a lab host, its
        own link, as nothing routes fe80::)."""
        return [LAN, FAR, LAN6, FAR6, LINK_LOCAL] if self.built else []

    def to_dict(self) -> dict:
        """The lab as `GET /api/lab` shows it."""
        return {
            "built": self.built,
            "can_build": can_build(),
            "needs": None if can_build() else NEEDS_ADMIN,
            "prefix": self.prefix,
            "hosts": [h.to_dict() for h in self.hosts.values()],
            "router": self.router,
            "subnets": [{"name": "lan", "network": str(LAN), "mtu": 1500},
                        {"name": "far", "network": str(FAR), "mtu": FAR_MTU}],
            "subnets6": [{"name": "lan", "network": str(LAN6), "mtu": 1500},
                         {"name": "far", "network": str(FAR6), "mtu": FAR_MTU}],
        }
