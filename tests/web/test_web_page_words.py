"""Issue 14, "smaller things seen": what the page says, in the page's words, against the
session's live udplab (real sockets on loopback)."""

import time
import uuid

import pytest

from live import wait_state
from webapp.engine.errors import Refused
from webapp.engine.policy import Policy

HX = {"HX-Request": "true"}


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def page_client(live):
    """The page's way in: the session cookie and the dashboard's own Origin."""
    return live.client(auth=False, headers={**live.cookie, "Origin": live.origin, **HX})


def test_an_impostor_with_neither_target_nor_port_sends_nothing(live, api):
    before = {w["id"] for w in api.get("/api/workers").json()["workers"]}
    with page_client(live) as page:
        # the Impostor form as a person leaves it: target and port empty, host prefilled
        answer = page.post("/workers", data={"kind": "spoofer", "target": "", "host":
                                             "127.0.0.1", "port": "", "message": "FAKE",
                                             "count": "1"})
    assert answer.status_code == 422, answer.text
    assert "An impostor needs somewhere to send: name a target client, or give a host and " \
           "a port" in answer.text
    assert {w["id"] for w in api.get("/api/workers").json()["workers"]} == before
    refused = api.post("/api/workers", json={"kind": "spoofer"})
    assert refused.status_code == 422 and refused.json()["field"] == "target"


def test_the_started_message_names_the_kind_as_the_panel_does(live, api):
    sink = api.start(kind="server", name=unique("sink"), port=0, reply="none")
    name = unique("imp")
    with page_client(live) as page:
        answer = page.post("/workers", data={"kind": "spoofer", "name": name, "host":
                                             "127.0.0.1", "port": str(sink["local"][1])})
    assert answer.status_code == 200, answer.text
    api.started.append(name)
    assert f"Started impostor <strong>{name}</strong>" in answer.text
    stopped = api.delete(f"/api/workers/{name}").json()
    assert stopped["state"] in ("stopped", "finished")
    messages = [e["message"] for e in api.get(f"/api/workers/{name}/events").json()["events"]]
    assert any(m.startswith(f"Impostor {name} ") for m in messages), messages


def test_an_mtu_probe_finishes_as_mtu_probe(api):
    sink = api.start(kind="server", name=unique("sink"), port=0, reply="none")
    probe = api.post("/api/workers", json={"kind": "mtu-probe", "port": sink["local"][1]})
    assert probe.status_code == 201, probe.text
    probe_id = probe.json()["id"]
    api.started.append(probe_id)
    assert wait_state(api, probe_id, {"finished", "failed"})["state"] == "finished"
    last = api.get(f"/api/workers/{probe_id}/events").json()["events"][-1]
    assert last["message"] == f"MTU probe {probe_id} finished"


def test_number_limits_read_as_people_write_them(api):
    refused = api.post("/api/workers", json={"kind": "stream", "count": 0})
    assert refused.status_code == 422
    assert "from 1 to 10,000,000" in refused.json()["error"]
    assert "e+" not in refused.json()["error"]


def test_a_gone_worker_is_explained_in_page_words(live, api):
    with page_client(live) as page:
        for action in ("stop", "pause", "remove"):
            answer = page.post(f"/workers/{unique('gone')}/{action}")
            assert answer.status_code == 404
            assert "Workers panel" in answer.text and "/api/" not in answer.text, answer.text
        options = page.get("/options", params={"options": unique("gone")})
        assert "Workers panel" in options.text and "/api/" not in options.text, options.text


def test_a_lab_address_while_the_lab_is_down_says_so():
    policy = Policy()  # no lab built: no lab networks
    with pytest.raises(Refused) as refused:
        policy.check("mtu-probe", "198.18.2.4")
    assert "virtual LAN is down: build it first" in refused.value.message
    assert "--allow-net" not in refused.value.message
    with pytest.raises(Refused) as far:  # elsewhere the operator's switch is still the fix
        policy.check("client", "192.0.2.7")
    assert "--allow-net 192.0.2.7/32" in far.value.message  # refused: nothing is sent


def test_after_teardown_a_probe_to_the_lab_says_the_lab_is_down(api):
    start = time.monotonic()
    refused = api.post("/api/workers", json={"kind": "mtu-probe", "host": "198.18.2.4",
                                             "port": 1060})
    assert refused.status_code == 403, refused.text
    assert "the virtual LAN is down: build it first" in refused.json()["error"]
    assert time.monotonic() - start < 5
