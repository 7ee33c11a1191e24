"""Errors in plain words, as JSON `{"error": …, "field": …}` (or HTML for the page's forms):
never a 500, never a traceback, and never at the expense of the workers already running."""

import re
import secrets

import pytest

from live import wait_state


@pytest.fixture(scope="module")
def sentinel(live):
    """A server started before every error of this module; it must survive them all."""
    with live.client() as http:
        worker = http.start(kind="server", host="127.0.0.1", port=0)
        yield worker
        http.stop_started()


def assert_plain_error(response, status: int, field: str | None = None) -> dict:
    assert response.status_code == status, (response.status_code, response.text)
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert isinstance(body["error"], str) and len(body["error"]) > 20, body
    assert "Traceback" not in response.text
    assert not body["error"].startswith(("[Errno", "OSError", "ValueError")), body
    if field is not None:
        assert body.get("field") == field, body
    return body


def assert_still_running(http, worker: dict) -> None:
    assert http.get(f"/api/workers/{worker['id']}").json()["state"] == "running"


@pytest.mark.parametrize(("spec", "field", "named"), [
    ({"kind": "server", "port": 70000}, "port", "70000"),
    ({"kind": "server", "port": "not a port!"}, "port", "not a port!"),
    ({"kind": "server", "port": -1}, "port", "-1"),
    ({"kind": "server", "port": "nosuchservice"}, "port", "nosuchservice"),
    ({"kind": "teapot", "port": 1060}, "kind", "teapot"),
    ({"kind": "client", "port": 1060, "mode": "sideways"}, "mode", "sideways"),
    ({"kind": "client", "host": "no-such-host.invalid", "port": 1060}, "host",
     "no-such-host.invalid"),
    ({"kind": "server", "host": "no-such-host.invalid", "port": 0}, "host",
     "no-such-host.invalid"),
    ({"kind": "server", "port": 0, "colour": "red"}, "colour", "colour"),
    ({"kind": "client", "port": 1060, "count": 0}, "count", "count"),
], ids=["port-70000", "port-words", "port-negative", "unknown-service", "unknown-kind",
        "unknown-mode", "client-host-unresolvable", "server-host-unresolvable",
        "unknown-field", "count-zero"])
def test_bad_spec_is_422_naming_the_field(api, sentinel, spec, field, named):
    body = assert_plain_error(api.post("/api/workers", json=spec), 422, field)
    assert named in body["error"], body
    assert_still_running(api, sentinel)


@pytest.mark.parametrize("content", [b'{"kind": "server", "port": ', b"[1, 2]", b"",
                                     b"\xff\xfe not utf-8", b'"server"'],
                         ids=["truncated", "array", "empty", "not-utf8", "string"])
def test_body_that_is_not_a_json_object_is_422(api, sentinel, content):
    response = api.post("/api/workers", content=content,
                        headers={"Content-Type": "application/json"})
    body = assert_plain_error(response, 422)
    assert "JSON object" in body["error"]
    assert_still_running(api, sentinel)


def test_address_in_use_is_409_and_the_first_server_still_answers(api, sentinel):
    first = api.start(kind="server", host="127.0.0.1", port=0)
    port = first["local"][1]
    second = api.post("/api/workers", json={"kind": "server", "host": "127.0.0.1",
                                            "port": port})
    body = assert_plain_error(second, 409, "port")
    assert str(port) in body["error"] and "127.0.0.1" in body["error"]
    assert "already in use" in body["error"]
    client = api.start(kind="client", host="127.0.0.1", port=port, message="still there?")
    done = wait_state(api, client["id"], {"finished", "failed"})
    assert done["counters"]["replies"] == 1, done
    assert api.get(f"/api/workers/{first['id']}").json()["counters"]["received"] == 1
    assert_still_running(api, sentinel)


def test_address_not_available_is_409(api, sentinel):
    # bind() only: 10.255.255.1 is not this machine's, so nothing is ever sent there.
    response = api.post("/api/workers", json={"kind": "server", "host": "10.255.255.1",
                                              "port": 0})
    body = assert_plain_error(response, 409, "host")
    assert "10.255.255.1" in body["error"] and "not available" in body["error"]
    assert_still_running(api, sentinel)


def test_taken_name_is_409(api, sentinel):
    name = f"dup-{secrets.token_hex(4)}"
    api.start(kind="server", host="127.0.0.1", port=0, name=name)
    response = api.post("/api/workers", json={"kind": "server", "port": 0, "name": name})
    body = assert_plain_error(response, 409, "name")
    assert name in body["error"]


@pytest.mark.parametrize(("method", "path"), [
    ("GET", "/api/workers/no-such-worker"),
    ("DELETE", "/api/workers/no-such-worker"),
    ("GET", "/api/workers/no-such-worker/events"),
])
def test_unknown_worker_is_404(api, sentinel, method, path):
    body = assert_plain_error(api.request(method, path), 404)
    assert "no-such-worker" in body["error"]
    assert_still_running(api, sentinel)


def test_workers_survive_all_the_errors(api, sentinel):
    workers = {w["id"]: w for w in api.get("/api/workers").json()["workers"]}
    assert workers[sentinel["id"]]["state"] == "running"
    assert workers[sentinel["id"]]["local"] == sentinel["local"]
    client = api.start(kind="client", host="127.0.0.1", port=sentinel["local"][1])
    assert wait_state(api, client["id"], "finished")["counters"]["replies"] == 1


# --- the page's forms: cookie session + the dashboard's own Origin -----------------------

@pytest.fixture
def browser_like(live):
    """What a browser on the dashboard sends: the session cookie and the exact Origin."""
    with live.client(auth=False, headers={**live.cookie, "Origin": live.origin}) as http:
        yield http
        http.stop_started()


BAD_PORT_FORM = {"kind": "server", "host": "127.0.0.1", "port": "70000", "reply": "length"}


def test_form_error_for_htmx_is_a_fragment(browser_like, sentinel):
    response = browser_like.post("/workers", data=BAD_PORT_FORM,
                                 headers={"HX-Request": "true"})
    assert response.status_code == 422
    assert response.headers["content-type"].startswith("text/html")
    assert "Port 70000 is out of range" in response.text
    assert "<form" not in response.text and "<html" not in response.text
    assert "Traceback" not in response.text


def test_form_error_without_javascript_is_the_page_with_the_message(browser_like, sentinel):
    response = browser_like.post("/workers", data=BAD_PORT_FORM)
    assert response.status_code == 422
    assert response.headers["content-type"].startswith("text/html")
    text = response.text
    assert '<form id="server-form"' in text and '<form id="client-form"' in text
    # The message sits in the server form's result box, and the form keeps what was typed.
    assert re.search(r'id="server-result"[^>]*>\s*<p class="error">Port 70000 is out of range',
                     text), text[text.find('id="server-result"'):][:300]
    assert 'value="70000"' in text
    assert "Traceback" not in text


def test_good_form_without_javascript_redirects_to_the_page(browser_like, live):
    name = f"form-{secrets.token_hex(4)}"
    response = browser_like.post("/workers", data={"kind": "server", "host": "127.0.0.1",
                                                   "port": "0", "name": name})
    browser_like.started.append(name)
    assert response.status_code == 303
    assert response.headers["location"] == "/"
    worker = browser_like.get(f"/api/workers/{name}").json()
    assert worker["state"] == "running" and worker["local"][1] > 0


def test_good_form_with_htmx_says_what_started(browser_like):
    name = f"form-{secrets.token_hex(4)}"
    response = browser_like.post("/workers", headers={"HX-Request": "true"},
                                 data={"kind": "server", "host": "127.0.0.1", "port": "0",
                                       "name": name})
    browser_like.started.append(name)
    assert response.status_code == 200
    assert f"Started server <strong>{name}</strong>" in response.text
