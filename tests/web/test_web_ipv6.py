"""Issue 16 over HTTP and on the page: IPv6 workers through the API (dual stack, v6only,
link-local scope), and `[addr]:port` wherever the page writes an IPv6 address. Traffic only
to ::1 and 127.0.0.1."""

import time

import pytest

from live import wait_state
from webapp.engine.events import Received, Sent
from webapp.web.ladder import layout
from webapp.web.render import make_environment

QUICK = {"timeout": 0.2, "give_up_after": 0.5}


def events(http, worker_id: str) -> list[dict]:
    response = http.get(f"/api/workers/{worker_id}/events")
    assert response.status_code == 200, response.text
    return response.json()["events"]


def first_of(http, worker_id: str, kind: str, timeout: float = 3.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        found = [e for e in events(http, worker_id) if e["type"] == kind]
        if found:
            return found[0]
        assert time.monotonic() < deadline, f"no {kind} event from {worker_id}"
        time.sleep(0.05)


def test_dual_stack_server_over_the_api_shows_the_mapped_peer(api):
    server = api.start(kind="server", host="::", port=0, v6only=False)
    assert server["spec"]["v6only"] is False and server["local"][0] == "::"
    listening = first_of(api, server["id"], "listening")
    assert listening["family"] == "ipv6" and "dual-stack" in listening["message"]
    client = api.start(kind="client", host="127.0.0.1", port=server["local"][1],
                       message="four", **QUICK)
    wait_state(api, client["id"], "finished")
    received = first_of(api, server["id"], "received")
    assert received["peer"][0] == "::ffff:127.0.0.1"
    assert received["message"].startswith("The client at [::ffff:127.0.0.1]:")
    assert "IPv4-mapped" in received["message"]


def test_dual_stack_beside_ipv4_is_a_409_explained_and_v6only_coexists(api):
    four = api.start(kind="server", host="0.0.0.0", port=0)
    port = four["local"][1]
    clash = api.post("/api/workers", json={"kind": "server", "host": "::", "port": port})
    assert clash.status_code == 409, clash.text
    assert "Address already in use" in clash.json()["error"]
    assert f"{four['id']} holds 0.0.0.0 port {port}" in clash.json()["error"]
    six = api.start(kind="server", host="::", port=port, v6only=True)
    assert six["local"] == ["::", port]


@pytest.mark.parametrize("host", ["fe80::1", "fe80::1%0"])
def test_link_local_without_scope_is_a_422_naming_host(api, host):
    response = api.post("/api/workers", json={"kind": "client", "host": host, "port": 9})
    assert response.status_code == 422, response.text
    assert response.json()["field"] == "host"
    assert "Add %interface" in response.json()["error"]


def test_bad_v6only_is_a_422(api):
    response = api.post("/api/workers", json={"kind": "server", "host": "::1", "port": 0,
                                               "v6only": "maybe"})
    assert response.status_code == 422 and response.json()["field"] == "v6only"


def test_the_page_writes_ipv6_addresses_in_brackets(api, live):
    server = api.start(kind="server", host="::1", port=0)
    port = server["local"][1]
    with live.client(auth=False, headers=live.cookie) as page:
        html = page.get("/").text
    assert f"<code>[::1]:{port}</code>" in html


def test_addr_filter_and_ladder_use_brackets_for_ipv6(tmp_path):
    env = make_environment(tmp_path)
    addr = env.filters["addr"]
    assert addr(("::1", 1060)) == "[::1]:1060"
    assert addr(["2001:db8::5", 53]) == "[2001:db8::5]:53"
    assert addr(("127.0.0.1", 1060)) == "127.0.0.1:1060"
    sent = Sent(seq=1, time=0.0, worker="c", message="m", local=("2001:db8::1", 5000),
                peer=("2001:db8::2", 6000), size=1, text="x")
    mapped = Received(seq=2, time=0.0, worker="s", message="m", local=("::", 7000),
                      peer=("::ffff:127.0.0.1", 5001), size=1, text="x")
    plain = Sent(seq=3, time=0.0, worker="c4", message="m", local=("0.0.0.0", 5001),
                 peer=("127.0.0.1", 7000), size=1, text="x")
    drawn = layout([sent, plain, mapped], {"c": "client", "s": "server", "c4": "client"})
    labels = [c["label"] for c in drawn["columns"]]
    assert "[2001:db8::1]:5000" in labels and "[2001:db8::2]:6000" in labels
    # the mapped peer and the IPv4 client are one column (one endpoint), not two
    assert labels.count("5001") == 1 and not any("ffff" in label for label in labels)
