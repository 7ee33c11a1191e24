"""Issue 16 through the JSON API: the multicast sender and the listener's joins on a real
app, the refusals in plain words, and the recipe "Multicast" playing green. Groups are used on
loopback only (the default interface on the machine)."""

import random
import time

RECIPE = "14-multicast"


def _group() -> str:
    return f"239.255.{random.randrange(1, 255)}.{random.randrange(1, 255)}"


def _events(api, worker_id: str, kind: str, timeout: float = 5.0) -> list[dict]:
    deadline = time.monotonic() + timeout
    while True:
        events = [e for e in api.get(f"/api/workers/{worker_id}/events").json()["events"]
                  if e["type"] == kind]
        if events or time.monotonic() > deadline:
            return events
        time.sleep(0.05)


def test_join_and_send_through_the_api(api):
    group = _group()
    response = api.post("/api/workers", json={"kind": "listener", "port": 0,
                                               "join": group, "sources": ""})
    assert response.status_code == 201, response.text
    member = response.json()
    assert member["spec"]["join"] == [group] and member["spec"]["multicast_all"] is False
    response = api.post("/api/workers", json={"kind": "multicast", "host": group,
                                               "port": member["local"][1], "count": 2,
                                               "interval": 0.01, "message": "api"})
    assert response.status_code == 201, response.text
    sender = response.json()
    assert sender["kind"] == "multicast" and sender["spec"]["ttl"] == 1
    sent = _events(api, sender["id"], "sent")
    assert sent and sent[0]["reached"] == [member["id"]], sent
    assert _events(api, member["id"], "received")[0]["text"] == "api"


def test_bad_multicast_input_is_422_naming_field_and_fix(api):
    for spec, field in (({"kind": "multicast", "host": "127.0.0.1"}, "host"),
                        ({"kind": "listener", "join": ["10.0.0.1"]}, "join"),
                        ({"kind": "listener", "sources": ["127.0.0.1"]}, "sources"),
                        ({"kind": "multicast", "ttl": -1}, "ttl")):
        response = api.post("/api/workers", json=spec)
        assert response.status_code == 422, (spec, response.text)
        assert response.json()["field"] == field, response.json()


def test_a_group_on_a_real_interface_is_403_before_anything_opens(api):
    # only checked: refused by the policy before any socket exists
    # (ids, not whole records: a worker of an earlier test may still be finishing)
    before = {w["id"] for w in api.get("/api/workers").json()["workers"]}
    response = api.post("/api/workers", json={"kind": "multicast", "host": "239.1.2.3",
                                               "interface": "eth0"})
    assert response.status_code == 403, response.text
    assert "--allow-net 239.1.2.3/32" in response.json()["error"]
    assert {w["id"] for w in api.get("/api/workers").json()["workers"]} <= before


def test_the_multicast_recipe_plays_green(api):
    response = api.post(f"/api/recipes/{RECIPE}", json={"wait": True}, timeout=60)
    assert response.status_code == 201, response.text
    run = response.json()
    assert run["done"] and run["ok"], run
    actual = [step["actual"] for step in run["steps"]]
    assert "member of 239.255.0.1 on 127.0.0.1" in actual[0]
    assert "says: 'Hello, group'" in actual[1]
    assert "heard by no worker of this app" in actual[3]  # the stranger, filtered by source
    assert "says: 'From the source'" in actual[4]
    assert "says: 'Who hears this?'" in actual[6]  # the surprise: heard without joining
    assert "heard by no worker of this app" in actual[8]  # the cure


def test_the_page_forms_post_joins_and_a_send_like_a_browser(live):
    """The listener form's join fields and the Multicast form, posted as the page posts
    them (hidden 'off' then the checkbox's 'on'; empty fields are left out)."""
    group = _group()
    with live.client(auth=False, headers={**live.cookie, "Origin": live.origin}) as http:
        page = http.get("/").text
        assert '<form id="multicast-form"' in page and 'name="join"' in page
        assert 'name="multicast_all"' in page and 'name="ttl"' in page
        response = http.post("/workers", data={
            "kind": "listener", "host": "0.0.0.0", "port": "0", "name": "", "join": group,
            "sources": "", "interface": "", "multicast_all": ["off", "on"]})
        assert response.status_code == 303, response.text
        listener = next(w for w in http.get("/api/workers").json()["workers"]
                        if w["kind"] == "listener" and w["spec"]["join"] == [group])
        http.started.append(listener["id"])
        assert listener["spec"]["multicast_all"] is True
        response = http.post("/workers", headers={"HX-Request": "true"}, data={
            "kind": "multicast", "host": group, "port": str(listener["local"][1]), "ttl": "1",
            "interface": "", "message": "from the form", "count": "1", "loop": ["off", "on"]})
        assert response.status_code in (200, 201), response.text
        assert _events(http, listener["id"], "received")[0]["text"] == "from the form"
        response = http.post("/workers", headers={"HX-Request": "true"}, data={
            "kind": "multicast", "host": "10.1.2.3", "port": "1060"})
        assert response.status_code == 422
        assert "must be a group address" in response.text and "<html" not in response.text
