"""Issue 16, IPv6 everywhere, on loopback: IPv6 literals, dual stack and v6only, link-local
scopes refused without an interface, family-correct peer checks, the policy on IPv6 and
IPv4-mapped addresses, and the `[addr]:port` form. Traffic only to ::1 and 127.0.0.1."""

import ipaddress
import socket

import pytest

from waiting import ended, of_type, until
from webapp.engine import BadSpec, Conflict, Refused, Supervisor
from webapp.engine.events import format_address, host_port
from webapp.engine.experiments import BindingExplorer
from webapp.engine.policy import Policy
from webapp.engine.udp import resolve, same_peer

FAST = {"timeout": 0.05, "give_up_after": 0.2}


async def test_server_and_client_on_ipv6_loopback_say_the_family():
    async with Supervisor() as sup:
        server = await sup.start({"kind": "server", "host": "::1", "port": 0})
        port = server.local[1]
        listening = of_type(server, "listening")[0]
        assert listening.family == "ipv6"
        assert listening.message == f"Listening at [::1]:{port} (IPv6)"
        client = await sup.start({"kind": "client", "host": "::1", "port": port,
                                  "message": "hello six"})
        await ended(client)
        reply = of_type(client, "reply")[0]
        assert reply.peer == ("::1", port) and reply.expected
        assert reply.message == f"The server [::1]:{port} replied 'Your data was 9 bytes long'"
        bound = of_type(client, "bound")[0]
        assert bound.family == "ipv6" and bound.local[0] == "::"  # unconnected: the wildcard


async def test_bracketed_literal_and_a_host_name_say_what_they_resolved_to():
    target = await resolve("[::1]", 1060)
    assert target.family == socket.AF_INET6 and target.address[:2] == ("::1", 1060)
    async with Supervisor() as sup:
        server = await sup.start({"kind": "server", "host": "localhost", "port": 0})
        listening = of_type(server, "listening")[0]
        assert listening.family == "ipv4"  # IPv4 first when a name has both
        assert listening.message.endswith("(localhost resolved to 127.0.0.1: IPv4)")
        # an IPv4 literal keeps the book's words exactly
        plain = await sup.start({"kind": "server", "host": "127.0.0.1", "port": 0})
        assert of_type(plain, "listening")[0].message == f"Listening at {plain.local!r}"


async def test_dual_stack_server_sees_an_ipv4_client_as_mapped_and_explains_it():
    async with Supervisor() as sup:
        server = await sup.start({"kind": "server", "host": "::", "port": 0,
                                  "v6only": False})
        port = server.local[1]
        assert "dual-stack (v6only off)" in of_type(server, "listening")[0].message
        client = await sup.start({"kind": "client", "host": "127.0.0.1", "port": port,
                                  "mode": "check-address", "message": "from four", **FAST})
        await ended(client)
        received = of_type(server, "received")[0]
        assert received.peer[0] == "::ffff:127.0.0.1"
        assert "IPv4-mapped ::ffff:a.b.c.d" in received.message
        # the reply goes back over IPv4: the client sees 127.0.0.1 and accepts it
        assert of_type(client, "reply")[0].peer == ("127.0.0.1", port)


async def test_v6only_server_does_not_hear_ipv4():
    async with Supervisor() as sup:
        server = await sup.start({"kind": "server", "host": "::", "port": 0, "v6only": True})
        assert "dual-stack" not in of_type(server, "listening")[0].message
        client = await sup.start({"kind": "client", "host": "127.0.0.1",
                                  "port": server.local[1], **FAST})
        await ended(client)
        assert server.counters["received"] == 0
        assert of_type(client, "gave-up") or of_type(client, "error")


async def test_dual_stack_bind_beside_ipv4_is_address_in_use_explained():
    async with Supervisor() as sup:
        four = await sup.start({"kind": "server", "name": "four", "host": "0.0.0.0",
                                "port": 0})
        port = four.local[1]
        with pytest.raises(Conflict) as caught:
            await sup.start({"kind": "server", "host": "::", "port": port})
        message = caught.value.message
        assert "Address already in use" in message
        assert "four holds 0.0.0.0" in message and "dual-stack" in message
        assert "v6only on" in message
        # with v6only the two families share the port
        six = await sup.start({"kind": "server", "host": "::", "port": port, "v6only": True})
        assert six.local == ("::", port)


async def test_ipv4_bind_beside_a_dual_stack_server_is_explained():
    async with Supervisor() as sup:
        dual = await sup.start({"kind": "listener", "name": "dual", "host": "::", "port": 0})
        with pytest.raises(Conflict) as caught:
            await sup.start({"kind": "server", "host": "127.0.0.1", "port": dual.local[1]})
        assert "dual is bound to :: with v6only off" in caught.value.message


async def test_v6only_on_an_ipv4_bind_is_a_bad_spec():
    async with Supervisor() as sup:
        with pytest.raises(BadSpec) as caught:
            await sup.start({"kind": "server", "host": "127.0.0.1", "port": 0,
                             "v6only": True})
        assert caught.value.field == "v6only" and "IPv6 option" in caught.value.message
        assert sup.workers == {}


@pytest.mark.parametrize("host", ["fe80::1", "fe80::1%0", "[fe80::1]"])
async def test_link_local_without_a_scope_asks_for_the_interface(host):
    async with Supervisor() as sup:
        for kind in ("client", "server", "listener", "spoofer", "stream", "mtu-probe"):
            with pytest.raises(BadSpec) as caught:
                await sup.start({"kind": kind, "host": host, "port": 9})
            assert caught.value.field == "host"
            assert "Add %interface" in caught.value.message, caught.value.message
        assert sup.workers == {}


@pytest.mark.parametrize("scope", ["nosuch0", "99999", "²", "99999999999999999999", "lo\x00"])
async def test_link_local_with_an_unknown_interface_says_so(scope):
    async with Supervisor() as sup:
        with pytest.raises(BadSpec) as caught:
            await sup.start({"kind": "client", "host": f"fe80::1%{scope}", "port": 9})
        assert f"no interface {scope!r} on this machine" in caught.value.message
        assert caught.value.field == "host"


async def test_link_local_scope_by_index_is_looked_up():
    # Resolution only, nothing sent: loopback is interface 1 in every namespace.
    target = await resolve("fe80::1%1", 9)
    assert target.address == ("fe80::1", 9, 0, 1)
    named = await resolve("fe80::1%lo", 9)
    assert named.address == ("fe80::1", 9, 0, socket.if_nametoindex("lo"))


async def test_check_address_client_compares_mapped_and_plain_as_one_peer():
    # A client on an IPv6 socket aimed at the mapped form of an IPv4 server.
    async with Supervisor() as sup:
        server = await sup.start({"kind": "server", "host": "127.0.0.1", "port": 0})
        client = await sup.start({"kind": "client", "host": "::ffff:127.0.0.1",
                                  "port": server.local[1], "mode": "check-address", **FAST})
        await ended(client)
        reply = of_type(client, "reply")[0]
        assert reply.expected and not of_type(client, "rejected")
    assert same_peer(("::ffff:127.0.0.1", 5), ("127.0.0.1", 5))
    assert same_peer(("::1", 5), ("0:0::1", 5))
    assert not same_peer(("::ffff:127.0.0.1", 5), ("127.0.0.2", 5))
    assert not same_peer(("::1", 5), ("127.0.0.1", 5))
    assert not same_peer(("::1", 5), ("::1", 6))


async def test_impostor_from_another_port_is_refused_by_an_ipv6_check_address_client():
    async with Supervisor() as sup:
        server = await sup.start({"kind": "server", "host": "::1", "port": 0, "reply": "none"})
        client = await sup.start({"kind": "client", "host": "::1", "port": server.local[1],
                                  "mode": "check-address", "timeout": 1, "give_up_after": 1})
        await until(lambda: client.local is not None, "the client to send")
        spoofer = await sup.start({"kind": "spoofer", "target": client.id})
        await ended(spoofer)
        await until(lambda: of_type(client, "rejected"), "the client to refuse FAKE")
        rejected = of_type(client, "rejected")[0]
        assert rejected.peer[0] == "::1" and rejected.peer[1] != server.local[1]
        assert f"not from the server [::1]:{server.local[1]}" in rejected.message


def test_policy_judges_mapped_addresses_as_ipv4_and_takes_ipv6_prefixes():
    policy = Policy(allowed_networks=(ipaddress.ip_network("2001:db8:1::/48"),
                                      ipaddress.ip_network("10.1.0.0/16")))
    assert policy.check("client", "::1") is True  # loopback: local, no caps
    assert policy.check("client", "::ffff:127.0.0.1") is True  # mapped loopback
    assert policy.check("client", "2001:db8:1::5") is False  # allowed, throttled
    assert policy.check("client", "::ffff:10.1.2.3") is False  # as 10.1.2.3: allowed
    with pytest.raises(Refused) as caught:
        policy.check("client", "2001:db8:2::5")
    assert "--allow-net 2001:db8:2::5/128" in caught.value.message
    assert "--allow-net 2001:db8:2::/64" in caught.value.message
    with pytest.raises(Refused) as caught:
        policy.check("client", "::ffff:10.2.0.1")
    assert "--allow-net 10.2.0.1/32" in caught.value.message  # judged as the IPv4 it carries
    with pytest.raises(Refused):
        policy.check("client", "fe80::1%lo")  # link-local from the machine: a real network


def test_policy_lab_ipv6_networks_are_the_lab():
    from webapp.engine.lab import FAR6, LAN6, LINK_LOCAL
    policy = Policy(lab_networks=(LAN6, FAR6, LINK_LOCAL))
    assert policy.check("client", "2001:2:0:2::4", in_lab=True) is True
    assert policy.check("client", "fe80::1%eth0", in_lab=True) is True
    with pytest.raises(Refused) as caught:
        policy.check("client", "2001:2:0:1::3")  # from the machine into the lab
    assert caught.value.field == "where"
    with pytest.raises(Refused):
        policy.check("client", "2001:db8::1", in_lab=True)


def test_ipv6_addresses_are_written_with_brackets():
    assert host_port(("::1", 1060)) == "[::1]:1060"
    assert host_port(("fe80::1%eth0", 7)) == "[fe80::1%eth0]:7"
    assert host_port(("127.0.0.1", 1060)) == "127.0.0.1:1060"
    assert format_address(("::1", 1060)) == "[::1]:1060"
    assert format_address(("127.0.0.1", 1060)) == "('127.0.0.1', 1060)"  # the book's


async def test_binding_explorer_shows_ipv6_rows():
    async with Supervisor() as sup:
        outcome = await BindingExplorer(sup).run()
        rows = {s["action"]: s for s in outcome["steps"]}
        port = outcome["port"]
        assert rows[f"bind ::1 port {port}"]["outcome"] == "bound"
        dual = rows[f"bind :: port {port} (v6only off: dual-stack)"]
        assert dual["outcome"] == "conflict" and "dual-stack" in dual["why"]
        reach = rows[f"a client sends to ::1 port {port}"]
        assert reach["outcome"] == "reached the ::1 server"
        mapped = rows[f"a client sends to 127.0.0.1 port {port} (dual-stack :: alone)"]
        assert mapped["outcome"] == "reached the :: server as ::ffff:127.0.0.1", mapped
        assert sup.workers == {}


async def test_every_sending_kind_takes_an_ipv6_literal():
    async with Supervisor() as sup:
        listener = await sup.start({"kind": "listener", "host": "::1", "port": 0})
        port = listener.local[1]
        server = await sup.start({"kind": "server", "host": "::1", "port": 0, "reply": "none"})
        specs = [
            {"kind": "client", "host": "::1", "port": port, "message": "client", **FAST},
            {"kind": "spoofer", "host": "::1", "port": port, "message": "spoofer"},
            {"kind": "broadcast", "host": "::1", "port": port, "message": "broadcast"},
            {"kind": "stream", "host": "::1", "port": server.local[1], "count": 5,
             "size": 64},
        ]
        for spec in specs:
            worker = await sup.start(spec)
            await ended(worker)
            assert worker.counters["sent"] >= 1 and not worker.counters["errors"], spec
        await until(lambda: listener.counters["received"] >= 3, "three datagrams on ::1")
        texts = {e.text for e in of_type(listener, "received")}
        assert {"client", "spoofer", "broadcast"} <= texts
        await until(lambda: server.counters["received"] == 5, "the stream over ::1")


def test_interface_picker_offers_ipv6_with_scopes_for_link_local():
    from webapp.engine import interfaces
    choices = dict(interfaces.host_choices())
    assert "::1" in choices and "::" in choices
    for interface in interfaces.interfaces():
        for a in interface.addresses:
            if a.family != "ipv6" or a.address == "::1":
                continue
            if ipaddress.ip_address(a.address).is_link_local:
                assert f"{a.address}%{interface.name}" in choices
                assert a.address not in choices  # never without its scope
            else:
                assert a.address in choices


@pytest.mark.parametrize("mode", ["connected", "check-address"])
async def test_forged_ipv4_fools_an_ipv6_client_of_a_mapped_server_as_it_would_an_ipv4_one(
        mode):
    # The client's dual-stack socket sees the forged IPv4 source 127.0.0.1 as
    # ::ffff:127.0.0.1, its server: mapped and plain are one peer, for the kernel and for us.
    async with Supervisor() as sup:
        server = await sup.start({"kind": "server", "host": "127.0.0.1", "port": 0})
        sup.pause(server.id)
        client = await sup.start({"kind": "client", "host": "::ffff:127.0.0.1",
                                  "port": server.local[1], "mode": mode, "timeout": 1.5,
                                  "give_up_after": 1.5})
        await until(lambda: client.local is not None, "the client to send")
        spoofer = await sup.start({"kind": "spoofer", "target": client.id, "forge": True})
        await ended(spoofer)
        assert spoofer.counters["sent"] == 1, list(spoofer.history)
        assert spoofer.local == ("127.0.0.1", server.local[1])
        await ended(client)
        reply = of_type(client, "reply")[0]
        assert reply.text == "FAKE" and reply.expected, reply
        assert reply.peer == ("::ffff:127.0.0.1", server.local[1])


def test_family_note_names_what_a_host_name_resolved_to():
    from webapp.engine.udp import Target
    # This machine's /etc/hosts has no IPv6-only name to resolve for real; the wording is
    # checked on the target that such a name gives.
    six = Target(socket.AF_INET6, ("::1", 1060, 0, 0), "six.example", addresses=("::1",))
    assert six.family_note() == " (six.example resolved to ::1: IPv6)"
    assert six.family_name == "ipv6"
    assert Target(socket.AF_INET6, ("::1", 1060, 0, 0), "[::1]").family_note() == " (IPv6)"
    assert Target(socket.AF_INET, ("127.0.0.1", 1060), "127.0.0.1").family_note() == ""
    assert Target(socket.AF_INET, ("0.0.0.0", 1060), "").family_note() == ""


async def test_binding_an_ipv6_address_this_machine_lacks_says_which_to_use():
    async with Supervisor() as sup:
        with pytest.raises(Conflict) as caught:
            await sup.start({"kind": "server", "host": "2001:db8::77", "port": 0})
        assert "[Errno 99]" in caught.value.message
        assert "(IPv6: ::1, or :: for all)" in caught.value.message


async def test_an_ipv6_socket_shows_and_sets_its_ipv6_options():
    from webapp.engine import sockopts
    async with Supervisor() as sup:
        dual = await sup.start({"kind": "server", "host": "::", "port": 0})
        rows = {row["name"]: row for row in sockopts.read_all(dual.sock)}
        assert "IP_TTL" not in rows and rows["IPV6_V6ONLY"]["text"] == "off"
        assert rows["IPV6_UNICAST_HOPS"]["value"] == 64
        assert sockopts.set_option(dual.sock, "IPV6_UNICAST_HOPS", 7)["value"] == 7
        assert sockopts.set_option(dual.sock, "IPV6_MTU_DISCOVER", "DO")["value"] == 2
        with pytest.raises(BadSpec, match="can only be read"):
            sockopts.set_option(dual.sock, "IPV6_V6ONLY", 1)
        six = await sup.start({"kind": "server", "host": "::", "port": 0, "v6only": True})
        assert {r["name"]: r for r in sockopts.read_all(six.sock)}["IPV6_V6ONLY"]["text"] == "on"
        four = await sup.start({"kind": "server", "host": "127.0.0.1", "port": 0})
        assert not any(r["name"].startswith("IPV6") for r in sockopts.read_all(four.sock))
        with pytest.raises(BadSpec, match="IPv6 option; this socket is IPv4"):
            sockopts.set_option(four.sock, "IPV6_UNICAST_HOPS", 7)


async def test_dual_stack_bind_beside_another_programs_ipv4_socket_is_explained():
    # The port's holder is no worker of ours: the bind error itself says why :: clashes.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as other:
        other.bind(("127.0.0.1", 0))
        port = other.getsockname()[1]
        async with Supervisor() as sup:
            with pytest.raises(Conflict) as caught:
                await sup.start({"kind": "server", "host": "::", "port": port})
            assert "[Errno 98] Address already in use) (:: with v6only off is dual-stack" \
                in caught.value.message
            six = await sup.start({"kind": "server", "host": "::", "port": port,
                                   "v6only": True})
            assert six.local == ("::", port)
