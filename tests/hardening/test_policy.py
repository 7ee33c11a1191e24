"""The destination policy: by default workers send only to loopback and the virtual LAN; the
operator adds networks with --allow-net; 255.255.255.255 needs --allow-limited-broadcast.

Every test that names a non-loopback destination runs inside namespaces of its own (see
conftest.py): were the policy broken, the datagrams would be counted on the veth and go
nowhere. The refusals are also checked to happen before any send (the counters stay put).
"""

import asyncio
import ipaddress
import socket

import pytest

from webapp.engine import Supervisor
from webapp.engine.errors import Refused
from webapp.engine.policy import Policy

FAR = "10.99.0.2"
SENDERS = {
    "client": {"kind": "client", "host": FAR, "port": 9, "timeout": 0.05, "give_up_after": 0.2},
    "stream": {"kind": "stream", "host": FAR, "port": 9, "count": 10},
    "spoofer": {"kind": "spoofer", "host": FAR, "port": 9},
    "broadcast": {"kind": "broadcast", "host": FAR, "port": 9},
    "mtu-probe": {"kind": "mtu-probe", "host": FAR, "port": 9},
}


def test_non_loopback_destination_is_403_naming_it_and_the_flag(make_net, apps):
    net = make_net()
    _, http = apps.start_in(net.a)
    before = net.tx()
    for kind, spec in SENDERS.items():
        response = http.post("/api/workers", json=spec)
        assert response.status_code == 403, (kind, response.text)
        body = response.json()
        assert FAR in body["error"] and "--allow-net" in body["error"], (kind, body)
        assert "10.99.0.2/32" in body["error"], body  # the exact flag that would allow it
        assert body.get("field") == "host", body
    assert http.get("/api/workers").json()["workers"] == [], "a refused spec left a worker"
    assert net.tx() == before, "a refused destination was sent to anyway"


def test_limited_broadcast_is_403_naming_its_flag(make_net, apps):
    net = make_net()
    _, http = apps.start_in(net.a)
    before = net.tx()
    for kind in ("broadcast", "client", "stream", "spoofer"):
        spec = {**SENDERS[kind], "host": "255.255.255.255"}
        response = http.post("/api/workers", json=spec)
        assert response.status_code == 403, (kind, response.text)
        assert "255.255.255.255" in response.json()["error"]
        assert "--allow-limited-broadcast" in response.json()["error"], response.text
    assert net.tx() == before


def test_allowed_network_sends_and_is_counted_on_the_interface(make_net, apps, until):
    net = make_net()
    _, http = apps.start_in(net.a, "--allow-net", "10.99.0.0/24")
    before = net.tx()
    response = http.post("/api/workers", json={"kind": "stream", "host": FAR, "port": 9,
                                                "count": 50, "rate": 1000})
    assert response.status_code == 201, response.text
    worker = response.json()
    state = until(lambda: (w := http.get(f"/api/workers/{worker['id']}").json())["state"]
                  == "finished" and w, "the stream to finish")
    assert state["counters"]["sent"] == 50, state
    sent = net.tx()["packets"] - before["packets"]
    assert 50 <= sent <= 55, f"{sent} packets left by va for a 50-datagram stream"
    # The allowance is exactly the network given: a neighbour network is still refused.
    response = http.post("/api/workers", json={**SENDERS["client"], "host": "10.99.1.2"})
    assert response.status_code == 403 and "10.99.1.2" in response.json()["error"]


def test_policy_check_every_address_of_a_list():
    policy = Policy(allowed_networks=(ipaddress.ip_network("10.99.0.0/24"),))
    assert policy.check("client", ["127.0.0.1", "::1"]) is True  # all local: no caps
    assert policy.check("client", ["127.0.0.1", FAR]) is False  # allowed, but capped
    with pytest.raises(Refused) as refused:
        policy.check("client", ["127.0.0.1", FAR, "10.98.0.7"])
    assert "10.98.0.7" in refused.value.message and "--allow-net" in refused.value.message
    with pytest.raises(Refused):
        policy.check("stream", "::ffff:10.98.0.7")
    # Servers and listeners do not send on their own: the policy does not apply at start.
    assert policy.check("server", ["10.98.0.7"]) is True
    assert policy.check("listener", "0.0.0.0") is True


def test_lab_subnets_are_refused_from_the_machine_itself():
    policy = Policy(lab_networks=(ipaddress.ip_network("198.18.1.0/24"),))
    with pytest.raises(Refused) as refused:
        policy.check("client", "198.18.1.2")
    assert refused.value.field == "where" and "where" in refused.value.message
    assert policy.check("client", "198.18.1.2", in_lab=True) is True
    with pytest.raises(Refused) as refused:
        policy.check("client", FAR, in_lab=True)  # a lab host reaches only the lab
    assert refused.value.field == "host"


def _run(coro_fn):
    return asyncio.run(coro_fn())


def test_lab_subnet_refused_by_the_supervisor_before_any_send(make_net):
    net = make_net("10.99.0.0/24")

    async def scenario():
        policy = Policy(lab_networks=(ipaddress.ip_network("10.99.0.0/24"),))
        async with Supervisor(policy=policy) as sup:
            try:
                await sup.start({**SENDERS["client"]})
            except Refused as exc:
                return exc.field, exc.message, len(sup.workers)
            return None

    before = net.tx()
    outcome = net.a.call(_run, scenario)
    assert outcome is not None, "a worker on the machine was let into the lab's subnet"
    field, message, workers = outcome
    assert field == "where" and workers == 0, outcome
    assert net.tx() == before


def test_name_resolving_to_several_addresses_needs_all_allowed(make_net):
    """A name that resolves to a loopback and a real address is refused (naming the real
    one); the name is resolved once, and the worker uses the address that was checked."""
    net = make_net()

    async def scenario():
        loop = asyncio.get_running_loop()
        real_getaddrinfo = loop.getaddrinfo
        calls = []
        answers = {
            "mixed.test": ["127.0.0.1", FAR],
            # Rebinding: the first answer is loopback, any later one is the real network.
            "rebind.test": ["127.0.0.2"],
        }

        async def fake_getaddrinfo(host, port, *args, **kwargs):
            calls.append(host)
            if host not in answers:
                return await real_getaddrinfo(host, port, *args, **kwargs)
            found = answers[host] if calls.count(host) == 1 else [FAR]
            return [(socket.AF_INET, socket.SOCK_DGRAM, 17, "", (a, port)) for a in found]

        loop.getaddrinfo = fake_getaddrinfo
        out = {}
        async with Supervisor() as sup:
            try:
                await sup.start({"kind": "client", "host": "mixed.test", "port": 9})
                out["mixed"] = "started"
            except Refused as exc:
                out["mixed"] = exc.message
            worker = await sup.start({"kind": "client", "host": "rebind.test", "port": 9,
                                      "timeout": 0.01, "give_up_after": 0.05})
            await asyncio.wait([worker.task], timeout=2)
            out["rebind_target"] = list(worker.target.address[:2])
            out["rebind_sent"] = worker.counters["sent"]
            # localhost really resolves (from /etc/hosts): every address is loopback.
            local = await sup.start({"kind": "client", "host": "localhost", "port": 9,
                                     "timeout": 0.01, "give_up_after": 0.02})
            out["localhost"] = list(local.target.address[:2])
            out["localhost_all"] = list(local.target.addresses)
        out["calls"] = calls
        return out

    before = net.tx()
    out = net.a.call(_run, scenario)
    assert FAR in out["mixed"] and "--allow-net" in out["mixed"], out
    assert out["rebind_target"] == ["127.0.0.2", 9], out
    assert out["rebind_sent"] >= 1, out
    assert out["calls"].count("rebind.test") == 1, "the name was resolved more than once"
    assert out["calls"].count("mixed.test") == 1
    assert out["localhost"][0] in ("127.0.0.1", "::1"), out
    assert all(ipaddress.ip_address(a).is_loopback for a in out["localhost_all"]), out
    assert net.tx() == before, "something left by the veth"


def test_localhost_is_allowed_through_the_api(live):
    with live.client() as http:
        response = http.post("/api/workers", json={"kind": "client", "host": "localhost",
                                                    "port": 9, "timeout": 0.01,
                                                    "give_up_after": 0.02})
        assert response.status_code == 201, response.text
        worker = response.json()
        assert worker["target"][0] in ("127.0.0.1", "::1")
        assert worker["throttled"] is False
        http.delete(f"/api/workers/{worker['id']}")
