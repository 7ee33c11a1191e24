"""Issue 16 over the API of a udplab of the test's own: the multicast lab scenarios, and a
member on h2 that hears a group sent from h1 and placed with `where`."""

import time

import pytest

MULTICAST_SCENARIOS = ["multicast", "ssm", "snooping", "all-nodes"]


def test_multicast_scenarios_over_the_api(lab_app):
    with lab_app.client() as http:
        refused = http.post("/api/lab/scenarios/snooping")
        assert refused.status_code == 422 and refused.json()["field"] == "where", refused.text
        assert http.post("/api/lab").status_code == 201
        for name in MULTICAST_SCENARIOS:
            response = http.post(f"/api/lab/scenarios/{name}", timeout=60)
            assert response.status_code == 201, response.text
            run = response.json()
            assert run["scenario"] == name
            assert run["steps"] and all(s["ok"] for s in run["steps"]), (name, run["steps"])
        assert http.get("/api/workers").json()["workers"] == []


def test_a_group_from_h1_to_a_member_on_h2_over_the_api(lab_app):
    with lab_app.client() as http:
        assert http.post("/api/lab").status_code == 201
        member = http.start(kind="listener", where="h2", port=1210, join=["239.7.7.7"])
        sender = http.start(kind="multicast", where="h1", host="239.7.7.7", port=1210,
                            ttl=1, message="across the switch")
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            sent = [e for e in http.get(f"/api/workers/{sender['id']}/events").json()["events"]
                    if e["type"] == "sent"]
            if sent:
                break
            time.sleep(0.05)
        else:
            pytest.fail("the sender never sent")
        assert sent[0]["reached"] == [member["id"]]
        heard = [e for e in http.get(f"/api/workers/{member['id']}/events").json()["events"]
                 if e["type"] == "received"]
        assert [(e["peer"][0], e["text"]) for e in heard] == [("198.18.1.2", "across the switch")]
        http.stop_started()
