"""Issue 16, multicast in the engine: joins, source-specific joins, IP_MULTICAST_ALL, the
sender's TTL, loop and interface, and the policy for groups.

Datagrams go to groups on loopback only (interface 127.0.0.1, the default on this machine):
the kernel keeps them on `lo`. Real interfaces are named only in policy checks, which refuse
before any socket is opened.
"""

import ipaddress
import random
import socket

import pytest

from waiting import ended, of_type
from webapp.engine import BadSpec, Refused, Supervisor
from webapp.engine.groups import IP_MULTICAST_ALL
from webapp.engine.policy import Policy
from webapp.engine.specs import parse_spec


def group() -> str:
    """A fresh organisation-local group, so tests running side by side never share one."""
    return f"239.255.{random.randrange(1, 255)}.{random.randrange(1, 255)}"


async def test_a_member_hears_the_group_and_the_sender_names_it():
    g = group()
    async with Supervisor() as sup:
        member = await sup.start({"kind": "listener", "name": "member", "port": 0,
                                  "join": [g], "interface": "127.0.0.1"})
        port = member.local[1]
        assert member.history[0].message == (
            f"Listening for datagrams at ('0.0.0.0', {port}); member of {g} on 127.0.0.1")
        sender = await sup.start({"kind": "multicast", "name": "tx", "host": g, "port": port,
                                  "message": "Hello, group"})
        assert sender.sock.getsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL) == 1
        assert sender.sock.getsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP) == 1
        await ended(sender)
        sent = of_type(sender, "sent")
        assert len(sent) == 1, list(sender.history)
        assert sent[0].reached == ["member"]
        assert sent[0].peer == (g, port)
        assert sent[0].message == (f"Multicast 'Hello, group' to group ('{g}', {port}) (TTL 1, "
                                   "loop on, via 127.0.0.1); heard by member")
        assert sender.counters == {"sent": 1, "reached": 1, "errors": 0}
        heard = of_type(member, "received")
        assert [e.text for e in heard] == ["Hello, group"]


async def test_multicast_all_off_by_default_and_the_linux_surprise_when_on():
    g = group()
    async with Supervisor() as sup:
        member = await sup.start({"kind": "listener", "name": "member", "port": 0,
                                  "join": [g]})
        port = member.local[1]
        quiet = await sup.start({"kind": "listener", "name": "quiet", "port": port})
        nosy = await sup.start({"kind": "listener", "name": "nosy", "port": port,
                                "multicast_all": True})
        assert quiet.sock.getsockopt(socket.IPPROTO_IP, IP_MULTICAST_ALL) == 0
        assert nosy.sock.getsockopt(socket.IPPROTO_IP, IP_MULTICAST_ALL) == 1
        assert "IP_MULTICAST_ALL on" in nosy.history[0].message
        sender = await sup.start({"kind": "multicast", "host": g, "port": port})
        await ended(sender)
        # nosy joined nothing, yet hears the group member joined: Linux's default
        assert of_type(sender, "sent")[0].reached == ["member", "nosy"]
        assert quiet.counters["received"] == 0


async def test_source_specific_join_hears_its_source_only():
    g = group()
    async with Supervisor() as sup:
        ssm = await sup.start({"kind": "listener", "name": "ssm", "port": 0, "join": [g],
                               "sources": ["127.0.0.1"]})
        port = ssm.local[1]
        assert ssm.history[0].message.endswith(f"member of {g} on 127.0.0.1, only from "
                                               "127.0.0.1")
        stranger = await sup.start({"kind": "multicast", "name": "stranger", "host": g,
                                    "port": port, "bind": "127.0.0.2", "message": "other"})
        await ended(stranger)
        trusted = await sup.start({"kind": "multicast", "name": "trusted", "host": g,
                                   "port": port, "bind": "127.0.0.1", "message": "source"})
        await ended(trusted)
        assert stranger.local[0] == "127.0.0.2" and trusted.local[0] == "127.0.0.1"
        assert of_type(stranger, "sent")[0].reached == []
        assert "heard by no worker of this app" in of_type(stranger, "sent")[0].message
        assert of_type(trusted, "sent")[0].reached == ["ssm"]
        assert [e.text for e in of_type(ssm, "received")] == ["source"]


async def test_on_loopback_ttl_and_loop_change_nothing():
    # lo has no MULTICAST flag: a group sent there is delivered as lo delivers everything,
    # whatever TTL 0 (never leave the host) and loop off (not to this host) say. The lab
    # tests show both taking effect on a real (virtual) link.
    g = group()
    async with Supervisor() as sup:
        member = await sup.start({"kind": "listener", "port": 0, "join": [g]})
        sender = await sup.start({"kind": "multicast", "host": g, "port": member.local[1],
                                  "loop": False, "ttl": 0})
        assert sender.sock.getsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP) == 0
        assert sender.sock.getsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL) == 0
        await ended(sender)
        assert of_type(sender, "sent")[0].reached == [member.id]


async def test_an_unknown_interface_is_a_clear_error_and_nothing_is_left_running():
    # allowed towards 239/8 so the policy lets the name through to the kernel's lookup,
    # which fails before anything is joined or sent
    policy = Policy(allowed_networks=(ipaddress.ip_network("239.0.0.0/8"),))
    async with Supervisor(policy=policy) as sup:
        with pytest.raises(BadSpec) as caught:
            await sup.start({"kind": "listener", "port": 0, "join": [group()],
                             "interface": "nope0"})
        assert "no interface 'nope0'" in caught.value.message
        with pytest.raises(BadSpec) as caught:
            await sup.start({"kind": "multicast", "host": group(), "interface": "nope0"})
        assert "no interface 'nope0'" in caught.value.message
        assert sup.workers == {}


@pytest.mark.parametrize("raw, field, words", [
    ({"kind": "listener", "sources": ["127.0.0.1"]}, "sources", "give the group in 'join'"),
    ({"kind": "listener", "join": ["127.0.0.1"]}, "join", "not a multicast group"),
    ({"kind": "listener", "join": ["ff02::1"]}, "host", "bind to '::'"),
    ({"kind": "listener", "host": "::", "join": ["239.1.2.3"]}, "host", "'0.0.0.0'"),
    ({"kind": "listener", "join": ["239.1.2.3"], "sources": ["ff02::1"]}, "sources",
     "not a unicast address"),
    ({"kind": "multicast", "bind": "localhost"}, "bind", "address of this host"),
    ({"kind": "listener", "join": "x" * 3}, "join", "not a multicast group"),
    ({"kind": "listener", "join": [f"239.0.0.{n}" for n in range(21)]}, "join", "at most 20"),
    ({"kind": "multicast", "host": "127.0.0.1"}, "host", "must be a group address"),
    ({"kind": "multicast", "ttl": 256}, "ttl", "from 0 to 255"),
    ({"kind": "multicast", "interface": "two words"}, "interface", "interface name"),
])
def test_bad_multicast_specs_name_field_and_fix(raw, field, words):
    with pytest.raises(BadSpec) as caught:
        parse_spec(raw)
    assert caught.value.field == field
    assert words in caught.value.message


def test_form_strings_are_accepted():
    spec = parse_spec({"kind": "listener", "join": "239.1.2.3, 239.1.2.4",
                       "sources": "127.0.0.1", "multicast_all": "on"})
    assert spec.join == ("239.1.2.3", "239.1.2.4") and spec.sources == ("127.0.0.1",)
    assert spec.multicast_all is True
    assert spec.to_dict()["join"] == ("239.1.2.3", "239.1.2.4")


def test_policy_groups_on_loopback_and_the_lab_are_allowed():
    policy = Policy()
    assert policy.check("multicast", "239.1.2.3") is True  # no interface: loopback
    assert policy.check("multicast", "239.1.2.3", interface="127.0.0.1", ttl=5) is True
    assert policy.check("multicast", "239.1.2.3", interface="lo") is True
    assert policy.check("multicast", "ff02::1", interface="eth0", in_lab=True, ttl=9) is True


def test_policy_refuses_groups_towards_a_real_network_and_caps_the_ttl():
    # checks only: nothing is sent, nor any socket opened
    with pytest.raises(Refused) as caught:
        Policy().check("multicast", "239.1.2.3", interface="eth0")
    assert "--allow-net 239.1.2.3/32" in caught.value.message
    assert caught.value.field == "interface"
    with pytest.raises(Refused):
        Policy().check_group("239.1.2.3", "192.0.2.1")  # an address of a real interface
    allowed = Policy(allowed_networks=(ipaddress.ip_network("239.1.0.0/16"),))
    assert allowed.check("multicast", "239.1.2.3", interface="eth0", ttl=1) is False
    with pytest.raises(Refused) as caught:
        allowed.check("multicast", "239.1.2.3", interface="eth0", ttl=2)
    assert "--max-multicast-ttl 2" in caught.value.message and caught.value.field == "ttl"
    allowed.max_multicast_ttl = 5
    assert allowed.check("multicast", "239.1.2.3", interface="eth0", ttl=5) is False


async def test_supervisor_refuses_a_join_or_send_on_a_real_interface_before_opening():
    async with Supervisor() as sup:
        with pytest.raises(Refused):
            await sup.start({"kind": "listener", "port": 0, "join": ["239.1.2.3"],
                             "interface": "eth0"})
        with pytest.raises(Refused):
            await sup.start({"kind": "multicast", "host": "239.1.2.3", "interface": "eth0"})
        assert sup.workers == {}


async def test_ipv6_group_on_loopback_is_an_error_event_that_says_where_to_go():
    # Linux gives lo no IPv6 multicast route, so the kernel refuses the send: nothing leaves
    async with Supervisor() as sup:
        sender = await sup.start({"kind": "multicast", "host": "ff12::1234", "port": 9})
        await ended(sender)
        errors = of_type(sender, "error")
        assert len(errors) == 1 and errors[0].errno == 101, list(sender.history)
        assert "lab host" in errors[0].message and "via lo" not in errors[0].message
        assert sender.state == "finished" and sender.counters["errors"] == 1


@pytest.mark.parametrize("kind", ["client", "stream", "spoofer", "broadcast", "mtu-probe"])
def test_other_kinds_may_not_send_to_a_group(kind):
    # they set no multicast interface: a group would leave by the default route
    with pytest.raises(Refused) as caught:
        Policy().check(kind, "239.1.2.3")
    assert "--allow-net 239.1.2.3/32" in caught.value.message
    with pytest.raises(Refused):
        Policy().check(kind, "239.1.2.3", in_lab=True)
