"""Issue 16, the policy for groups through the real app: a group on a real interface needs
--allow-net covering it, and its TTL is capped at 1 unless --max-multicast-ttl raises it.

The "real interface" is `va`, a veth of a namespace this test made (see conftest.py): what a
refusal would have sent is counted there, and goes nowhere.
"""

import time

GROUP = "239.1.2.3"


def _sent_on_va(net, before: dict[str, int]) -> int:
    return net.tx()["packets"] - before["packets"]


def test_groups_on_a_real_interface_are_refused_by_default(make_net, apps):
    net = make_net()
    _, http = apps.start_in(net.a)
    before = net.tx()
    for spec in ({"kind": "multicast", "host": GROUP, "port": 9, "interface": "va"},
                 {"kind": "multicast", "host": GROUP, "port": 9, "interface": net.here},
                 {"kind": "listener", "port": 0, "join": [GROUP], "interface": "va"}):
        response = http.post("/api/workers", json=spec)
        assert response.status_code == 403, (spec, response.text)
        body = response.json()
        assert f"--allow-net {GROUP}/32" in body["error"] and body["field"] == "interface", body
    assert http.get("/api/workers").json()["workers"] == [], "a refused spec left a worker"
    time.sleep(0.2)
    assert _sent_on_va(net, before) == 0, "a refused group was sent to (or joined) anyway"


def test_allowed_group_is_capped_at_ttl_1_unless_the_operator_raises_it(make_net, apps, until):
    net = make_net()
    _, http = apps.start_in(net.a, "--allow-net", "239.1.0.0/16")
    response = http.post("/api/workers", json={"kind": "multicast", "host": GROUP, "port": 9,
                                                "interface": "va", "ttl": 2})
    assert response.status_code == 403, response.text
    assert "--max-multicast-ttl 2" in response.json()["error"]
    assert response.json()["field"] == "ttl"
    before = net.tx()
    response = http.post("/api/workers", json={"kind": "multicast", "host": GROUP, "port": 9,
                                                "interface": "va", "count": 5,
                                                "interval": 0.01})
    assert response.status_code == 201, response.text
    worker = response.json()
    done = until(lambda: (w := http.get(f"/api/workers/{worker['id']}").json())["state"]
                 == "finished" and w, "the sender to finish")
    assert done["counters"]["sent"] == 5 and done["throttled"] is False, done
    assert 5 <= _sent_on_va(net, before) <= 8  # the five datagrams, maybe an IGMP report

    _, raised = apps.start_in(net.a, "--allow-net", "239.1.0.0/16", "--max-multicast-ttl", "2")
    response = raised.post("/api/workers", json={"kind": "multicast", "host": GROUP, "port": 9,
                                                  "interface": "va", "ttl": 2})
    assert response.status_code == 201, response.text
