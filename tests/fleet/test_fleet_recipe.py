"""The "Two machines" recipe (issue 15): played by a dashboard joined to agents a and b in
their own namespaces (udp_remote.py's server on one, its client on the other, a broadcast on
the test's own bridge heard on every machine); and, without --nats, it says it needs two."""

import pytest

from test_fleet_web import dashboard  # noqa: F401 (a fixture)

NAME = "13-two-machines"


def wait_up(http, names, timeout=10.0):
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        up = {m["name"] for m in http.get("/api/machines").json()["machines"]
              if m["state"] == "up"}
        if set(names) <= up:
            return
        time.sleep(0.1)
    pytest.fail(f"{names} not up within {timeout} s")


def test_two_machines_recipe_plays_across_the_fleet(dashboard, lan_fleet):
    lan, _ = lan_fleet
    with dashboard.client() as http:
        wait_up(http, ["a", "b"])
        response = http.post(f"/api/recipes/{NAME}", json={"wait": True}, timeout=40)
        assert response.status_code == 201, response.text
        run = response.json()
        assert run["done"] and run["ok"], run
        pick, server, client, broadcast = (step["actual"] for step in run["steps"])
        assert pick == f"a ({lan.hosts['a']}) and b ({lan.hosts['b']})"
        assert server == f"Listening at ('{lan.hosts['a']}', 1060) on a"
        assert "Your data was" in client and "bytes long" in client, client
        subnet = lan.hosts["a"].rsplit(".", 1)[0]
        assert f"{subnet}.255:1061" in broadcast and "heard on every machine" in broadcast
        for name in ("a", "b", "local"):  # the dashboard's own is on the bridge too
            assert name in broadcast.split("heard on ")[1], broadcast
        assert run["workers"]["server@a"] == f"a:{run['id']}-server"
        assert run["workers"]["client@b"] == f"b:{run['id']}-client"
        # the run's workers are stopped on every machine
        workers = {w["id"]: w for w in http.get("/api/workers").json()["workers"]}
        for worker_id in run["workers"].values():
            assert workers[worker_id]["state"] not in ("running", "paused"), workers[worker_id]
    assert "Traceback" not in dashboard.log()


def test_without_a_fleet_it_says_it_needs_two_machines(live):
    with live.client() as http:
        response = http.post(f"/api/recipes/{NAME}", json={"wait": True}, timeout=20)
        assert response.status_code == 201, response.text
        run = response.json()
    assert run["done"] and not run["ok"] and run["stopped"], run
    assert [step["ok"] for step in run["steps"]] == [False]
    assert "needs two machines" in run["steps"][0]["actual"]
    assert "--nats" in run["steps"][0]["actual"]
