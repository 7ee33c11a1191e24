"""The JSON API of DESIGN.md §3 against a live udplab: real workers, real datagrams."""

import socket

import httpx

from live import wait_state


def test_health_needs_no_token(live):
    response = httpx.get(f"{live.base}/api/health", timeout=5)
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_server_starts_on_a_port_the_os_picks(api):
    server = api.start(kind="server", host="127.0.0.1", port=0)
    assert server["id"]
    assert server["kind"] == "server"
    assert server["state"] == "running"
    host, port = server["local"]
    assert host == "127.0.0.1"
    assert 0 < port < 65536


def test_promiscuous_and_connected_clients_get_the_books_reply(api):
    server = api.start(kind="server", host="127.0.0.1", port=0)
    port = server["local"][1]
    for mode in ("promiscuous", "connected"):
        client = api.start(kind="client", host="127.0.0.1", port=port, mode=mode,
                           message="hello")
        done = wait_state(api, client["id"], {"finished", "failed"})
        assert done["state"] == "finished", done
        assert done["counters"]["replies"] == 1, done
        assert done["counters"]["sent"] == 1
        assert done["counters"]["gave_up"] == 0
        replies = [e for e in api.get(f"/api/workers/{client['id']}/events").json()["events"]
                   if e["type"] == "reply"]
        assert [e["text"] for e in replies] == ["Your data was 5 bytes long"]
        assert replies[0]["peer"] == ["127.0.0.1", port]
    counters = api.get(f"/api/workers/{server['id']}").json()["counters"]
    assert counters["received"] == 2
    assert counters["replied"] == 2


def test_list_shows_server_and_client(api):
    server = api.start(kind="server", host="127.0.0.1", port=0)
    client = api.start(kind="client", host="127.0.0.1", port=server["local"][1])
    wait_state(api, client["id"], "finished")
    response = api.get("/api/workers")
    assert response.status_code == 200
    listed = {w["id"]: w for w in response.json()["workers"]}
    assert listed[server["id"]]["state"] == "running"
    assert listed[server["id"]]["kind"] == "server"
    assert listed[client["id"]]["state"] == "finished"
    assert listed[client["id"]]["kind"] == "client"


def test_events_are_in_order_with_the_books_words(api):
    server = api.start(kind="server", host="127.0.0.1", port=0)
    port = server["local"][1]
    client = api.start(kind="client", host="127.0.0.1", port=port, message="x" * 23)
    wait_state(api, client["id"], "finished")

    def events(worker_id):
        response = api.get(f"/api/workers/{worker_id}/events")
        assert response.status_code == 200
        body = response.json()
        assert list(body) == ["events"]
        return body["events"]

    server_events, client_events = events(server["id"]), events(client["id"])
    for batch, worker_id in ((server_events, server["id"]), (client_events, client["id"])):
        assert batch, f"no events for {worker_id}"
        seqs = [e["seq"] for e in batch]
        assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs), seqs
        for event in batch:
            assert {"seq", "time", "worker", "type", "message"} <= set(event), event
            assert event["worker"] == worker_id
            assert isinstance(event["time"], float) and event["time"] > 1e9
            assert isinstance(event["message"], str) and event["message"]
            if event["type"] in ("received", "sent", "reply", "dropped"):
                assert {"local", "peer", "size", "text"} <= set(event), event
                assert len(event["peer"]) == 2 and isinstance(event["peer"][1], int)
                assert event["size"] == len(event["text"].encode())

    by_type = {}
    for event in server_events + client_events:
        by_type.setdefault(event["type"], []).append(event)
    assert by_type["listening"][0]["message"] == f"Listening at ('127.0.0.1', {port})"
    client_port = by_type["received"][0]["peer"][1]
    assert by_type["received"][0]["message"].startswith(
        f"The client at ('127.0.0.1', {client_port}) says")
    assert by_type["received"][0]["size"] == 23
    assert by_type["received"][0]["local"] == ["127.0.0.1", port]
    assert "Your data was 23 bytes long" in by_type["reply"][0]["message"]
    assert by_type["reply"][0]["message"].startswith(f"The server ('127.0.0.1', {port}) replied")
    # An unconnected client is bound implicitly by its first sendto(): to the wildcard
    # address, as the book's output shows (`The OS assigned me the address ('0.0.0.0', …)`).
    assert by_type["reply"][0]["local"] == ["0.0.0.0", client_port]
    assert by_type["bound"][0]["message"] == (
        f"The OS assigned me the address ('0.0.0.0', {client_port})")


def test_delete_stops_and_frees_the_port(api):
    server = api.start(kind="server", host="127.0.0.1", port=0)
    port = server["local"][1]
    response = api.delete(f"/api/workers/{server['id']}")
    assert response.status_code == 200
    assert response.json()["state"] == "stopped"
    assert api.get(f"/api/workers/{server['id']}").json()["state"] == "stopped"
    # The socket is closed by the time DELETE answers: the port binds again at once.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", port))
        assert sock.getsockname()[1] == port
    kinds = [e["type"] for e in api.get(f"/api/workers/{server['id']}/events").json()["events"]]
    assert kinds[-1] == "stopped"
    # Stopping again is harmless.
    again = api.delete(f"/api/workers/{server['id']}")
    assert again.status_code == 200 and again.json()["state"] == "stopped"


def test_openapi_and_docs_are_served(api):
    response = api.get("/openapi.json")
    assert response.status_code == 200
    schema = response.json()
    assert "/api/workers" in schema["paths"]
    assert "post" in schema["paths"]["/api/workers"]
    docs = api.get("/docs")
    assert docs.status_code == 200
    assert docs.headers["content-type"].startswith("text/html")
    assert 'id="swagger-ui"' in docs.text
