"""The security model of DESIGN.md §4, one rule per test, against a live udplab."""

import re
import asyncio
import secrets
import time
from html.parser import HTMLParser

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from live import wait_state

EVIL = "http://evil.example"
HOSTILE = '<script>alert(1)</script><img src=x onerror="alert(2)"> "quoted" & \'single\''


def server_spec(name: str | None = None) -> dict:
    spec = {"kind": "server", "host": "127.0.0.1", "port": 0}
    if name:
        spec["name"] = name
    return spec


def exists(live, worker_id: str) -> bool:
    with live.client() as http:
        return http.get(f"/api/workers/{worker_id}").status_code == 200


# --- the token -------------------------------------------------------------------------------

@pytest.mark.parametrize(("method", "path"), [
    ("GET", "/api/workers"),
    ("POST", "/api/workers"),
    ("GET", "/api/workers/anything"),
    ("DELETE", "/api/workers/anything"),
    ("GET", "/api/workers/anything/events"),
    ("GET", "/"),
    ("POST", "/workers"),
    ("GET", "/docs"),
    ("GET", "/openapi.json"),
])
def test_every_route_needs_the_token(live, method, path):
    name = f"nope-{secrets.token_hex(4)}"
    with live.client(auth=False) as http:
        response = http.request(method, path, json=server_spec(name))
    assert response.status_code == 401, response.text
    assert "token" in response.text
    assert "set-cookie" not in response.headers
    assert not exists(live, name)


def test_health_and_static_need_no_token(live):
    with live.client(auth=False) as http:
        assert http.get("/api/health").json() == {"status": "ok"}
        css = http.get("/static/udplab.css")
    assert css.status_code == 200
    assert css.headers["content-type"].startswith("text/css")


@pytest.mark.parametrize("path", ["/api/events", "/ws/page"])
async def test_websocket_without_token_is_refused(live, path):
    with pytest.raises(InvalidStatus) as refused:
        async with connect(f"{live.ws_base}{path}", open_timeout=5,
                           additional_headers={"Origin": live.origin}):
            pass
    assert refused.value.response.status_code in (401, 403)


@pytest.mark.parametrize("path", ["/api/events", "/ws/page"])
async def test_websocket_with_wrong_bearer_is_refused(live, path):
    with pytest.raises(InvalidStatus) as refused:
        async with connect(f"{live.ws_base}{path}", open_timeout=5,
                           additional_headers={"Authorization": "Bearer wrong"}):
            pass
    assert refused.value.response.status_code in (401, 403)


@pytest.mark.parametrize("header", [
    lambda token: "Bearer wrong",
    lambda token: f"Bearer {token[:-1]}",
    lambda token: f"Bearer {token}x",
    lambda token: f"Basic {token}",
    lambda token: token,
], ids=["wrong", "prefix", "longer", "basic-scheme", "no-scheme"])
def test_wrong_bearer_token_is_refused(live, header):
    with live.client(auth=False, headers={"Authorization": header(live.token)}) as http:
        response = http.get("/api/workers")
    assert response.status_code == 401
    assert "error" in response.json()


def test_wrong_cookie_is_refused(live):
    with live.client(auth=False, headers={"Cookie": f"{live.cookie_name}=wrong"}) as http:
        refused = http.get("/api/workers")
        assert refused.status_code == 401
        # Our cookie with another value is what a tab of an earlier run sends: say so.
        assert "earlier run of udplab" in refused.json()["error"]
        assert "earlier run of udplab" in http.get("/").text
    # The cookie of another instance (another port) is not this one's session either.
    other = f"udplab_{live.port + 1}={live.token}"
    with live.client(auth=False, headers={"Cookie": other}) as http:
        assert http.get("/api/workers").status_code == 401


def test_token_in_url_becomes_a_strict_httponly_cookie(live):
    with live.client(auth=False) as http:
        response = http.get("/", params={"token": live.token})
        assert response.status_code == 303
        assert response.headers["location"] == "/"
        cookies = response.headers.get_list("set-cookie")
        assert len(cookies) == 1, cookies
        parts = [p.strip() for p in cookies[0].split(";")]
        assert parts[0] == f"udplab_{live.port}={live.token}"
        flags = {p.split("=", 1)[0].lower(): p for p in parts[1:]}
        assert "httponly" in flags
        assert flags["samesite"].lower() == "samesite=strict"
        assert flags["path"] == "Path=/"
        # The cookie (kept by httpx's jar, as a browser would) is now the session.
        assert http.cookies.get(live.cookie_name) == live.token
        page = http.get("/")
        assert page.status_code == 200 and 'id="server-form"' in page.text
        assert http.get("/api/workers").status_code == 200


def test_wrong_token_in_url_is_401_without_cookie(live):
    with live.client(auth=False) as http:
        response = http.get("/", params={"token": "not-the-token"})
        assert response.status_code == 401
        assert "set-cookie" not in response.headers
        assert not http.cookies
        assert http.get("/api/workers").status_code == 401


def test_token_never_reaches_the_log(live):
    with live.client(auth=False) as http:
        assert http.get("/", params={"token": live.token}).status_code == 303
        assert http.get("/", params={"token": live.token, "x": "1"}).status_code == 303
        assert http.get(f"/?x=2&token={live.token}").status_code == 303
        assert http.get("/", params={"token": live.token[::-1]}).status_code == 401
        assert http.get("/api/workers", headers=live.bearer).status_code == 200
        assert http.get("/api/workers", headers=live.cookie).status_code == 200
    # uvicorn writes one access line per request (to stdout); wait, bounded, for ours.
    deadline = time.monotonic() + 5
    while live.output().count("token=(hidden)") < 4:
        assert time.monotonic() < deadline, live.output()[-3000:]
        time.sleep(0.02)
    log = live.log()
    assert "Application startup complete" in log  # this is the real log...
    assert live.token not in log and live.token[::-1] not in log  # ...and holds no token
    # stdout holds the token once, by design: in the URL printed at start, before any log line.
    output = live.output()
    assert output.count(live.token) == 1, output
    url_line, access_log = output.split(live.token, 1)
    assert "INFO" not in url_line
    assert live.token[::-1] not in access_log
    assert '"GET /?token=(hidden)&x=1 HTTP/1.1" 303' in access_log
    assert '"GET /?x=2&token=(hidden) HTTP/1.1" 303' in access_log


# --- Host allowlist (DNS rebinding) --------------------------------------------------------

@pytest.mark.parametrize("host", ["evil.example", "evil.example:{port}", "127.0.0.2:{port}",
                                  "localhost.evil.example:{port}"])
def test_foreign_host_header_is_refused(live, host):
    host = host.format(port=live.port)
    with live.client(headers={"Host": host}) as http:
        response = http.get("/api/workers")
        assert response.status_code == 400
        assert "Host" in response.json()["error"]
        # Even the open route: a rebound name must learn nothing from this server.
        assert http.get("/api/health").status_code == 400


@pytest.mark.parametrize("host", ["localhost:{port}", "127.0.0.1:{port}", "LOCALHOST:{port}"])
def test_loopback_host_header_is_accepted(live, host):
    with live.client(headers={"Host": host.format(port=live.port)}) as http:
        response = http.get("/api/workers")
    assert response.status_code == 200
    assert "workers" in response.json()


# --- Origin on state-changing requests (CSRF) ----------------------------------------------

@pytest.mark.parametrize("origin", [
    None, EVIL, "null", "https://127.0.0.1:{port}", "http://localhost:{port}",
    "http://127.0.0.1:{port}.evil.example", "http://127.0.0.1",
])
def test_cookie_post_from_another_origin_is_refused(live, origin):
    headers = dict(live.cookie)
    if origin is not None:
        headers["Origin"] = origin.format(port=live.port)
    name = f"csrf-{secrets.token_hex(4)}"
    with live.client(auth=False, headers=headers) as http:
        response = http.post("/api/workers", json=server_spec(name))
        assert response.status_code == 403, response.text
        assert "origin" in response.json()["error"].lower()
        form = http.post("/workers", data={"kind": "server", "port": "0", "name": name})
        assert form.status_code == 403
    assert not exists(live, name)


def test_cookie_delete_without_origin_is_refused(live, api):
    worker = api.start(**server_spec())
    with live.client(auth=False, headers=live.cookie) as http:
        assert http.delete(f"/api/workers/{worker['id']}").status_code == 403
    assert api.get(f"/api/workers/{worker['id']}").json()["state"] == "running"


def test_cookie_post_from_the_dashboard_origin_is_allowed(live):
    with live.client(auth=False, headers={**live.cookie, "Origin": live.origin}) as http:
        worker = http.post("/api/workers", json=server_spec())
        assert worker.status_code == 201, worker.text
        stopped = http.delete(f"/api/workers/{worker.json()['id']}")
        assert stopped.status_code == 200 and stopped.json()["state"] == "stopped"


def test_bearer_post_without_origin_is_allowed(live):
    with live.client() as http:
        worker = http.start(**server_spec())
        assert worker["state"] == "running"
        http.stop_started()


@pytest.mark.parametrize("origin", [EVIL, "null"])
def test_bearer_post_from_a_foreign_origin_is_refused(live, origin):
    name = f"xo-{secrets.token_hex(4)}"
    with live.client(headers={"Origin": origin}) as http:
        response = http.post("/api/workers", json=server_spec(name))
    assert response.status_code == 403
    assert not exists(live, name)


# --- Origin on WebSockets (cross-site WebSocket hijacking) ---------------------------------

@pytest.mark.parametrize("path", ["/api/events", "/ws/page"])
async def test_websocket_with_cookie_and_own_origin_is_accepted(live, path):
    async with connect(f"{live.ws_base}{path}", open_timeout=5,
                       additional_headers={**live.cookie, "Origin": live.origin}) as ws:
        async with asyncio.timeout(5):
            first = await ws.recv()
    assert first
    if path == "/ws/page":
        check = PageCheck.of(first)
        assert not check.problems, check.problems


@pytest.mark.parametrize("origin", [None, EVIL, "null", "http://localhost:{port}"])
@pytest.mark.parametrize("path", ["/api/events", "/ws/page"])
async def test_websocket_with_cookie_from_another_origin_is_refused(live, path, origin):
    headers = dict(live.cookie)
    if origin is not None:
        headers["Origin"] = origin.format(port=live.port)
    with pytest.raises(InvalidStatus) as refused:
        async with connect(f"{live.ws_base}{path}", open_timeout=5, additional_headers=headers):
            pass
    assert refused.value.response.status_code == 403


async def test_websocket_with_bearer_from_a_foreign_origin_is_refused(live):
    with pytest.raises(InvalidStatus) as refused:
        async with connect(f"{live.ws_base}/api/events", open_timeout=5,
                           additional_headers={**live.bearer, "Origin": EVIL}):
            pass
    assert refused.value.response.status_code == 403


# --- headers and the page ------------------------------------------------------------------

def assert_security_headers(response: httpx.Response) -> None:
    csp = response.headers.get("content-security-policy", "")
    directives = {d.strip().split(" ", 1)[0]: d.strip() for d in csp.split(";") if d.strip()}
    assert directives.get("script-src") == "script-src 'self'", csp
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp, csp
    assert "object-src 'none'" in csp and "frame-ancestors 'none'" in csp, csp
    assert response.headers.get("x-content-type-options") == "nosniff"
    assert response.headers.get("referrer-policy") == "same-origin"


@pytest.mark.parametrize(("what", "method", "path", "auth", "status"), [
    ("page", "GET", "/", True, 200),
    ("docs", "GET", "/docs", True, 200),
    ("api", "GET", "/api/workers", True, 200),
    ("health", "GET", "/api/health", False, 200),
    ("401 api", "GET", "/api/workers", False, 401),
    ("401 page", "GET", "/", False, 401),
    ("404", "GET", "/api/workers/nobody", True, 404),
    ("422", "POST", "/api/workers", True, 422),
    ("login redirect", "GET", "/?token={token}", False, 303),
    ("static", "GET", "/static/udplab.css", False, 200),
])
def test_responses_carry_the_security_headers(live, what, method, path, auth, status):
    with live.client(auth=auth) as http:
        response = http.request(method, path.format(token=live.token), json={"kind": "?"})
    assert response.status_code == status
    assert_security_headers(response)


def test_refusals_carry_the_security_headers(live):
    with live.client(headers={"Host": "evil.example"}) as http:
        refused = http.get("/api/workers")
    assert refused.status_code == 400
    assert_security_headers(refused)
    with live.client(auth=False, headers={**live.cookie, "Origin": EVIL}) as http:
        forbidden = http.post("/api/workers", json=server_spec())
    assert forbidden.status_code == 403
    assert_security_headers(forbidden)


class PageCheck(HTMLParser):
    """Finds what a CSP without 'unsafe-inline' would block (or should never need)."""

    def __init__(self):
        super().__init__()
        self.problems: list[str] = []
        self.scripts: list[str] = []
        self._in_script = False

    @classmethod
    def of(cls, html: str) -> "PageCheck":
        check = cls()
        check.feed(html)
        check.close()
        return check

    def handle_starttag(self, tag, attrs):
        for name, value in attrs:
            if name.lower().startswith("on"):
                self.problems.append(f"<{tag} {name}={value!r}>")
            if name in ("href", "src", "action") and (value or "").strip().lower().startswith(
                    "javascript:"):
                self.problems.append(f"<{tag} {name}={value!r}>")
        if tag == "script":
            src = dict(attrs).get("src")
            if not src:
                self.problems.append("<script> without src")
            else:
                self.scripts.append(src)
            self._in_script = True

    def handle_endtag(self, tag):
        if tag == "script":
            self._in_script = False

    def handle_data(self, data):
        if self._in_script and data.strip():
            self.problems.append(f"inline script: {data.strip()[:80]!r}")


def test_page_has_no_inline_script_even_with_hostile_payloads(api):
    # Put hostile text where the page shows it: event rows (message, text) from real datagrams.
    server = api.start(kind="server", host="127.0.0.1", port=0, reply="echo")
    client = api.start(kind="client", host="127.0.0.1", port=server["local"][1],
                       message=HOSTILE)
    assert wait_state(api, client["id"], "finished")["counters"]["replies"] == 1
    page = api.get("/")
    assert page.status_code == 200
    # The rows and cards are HTML (escaped once), not HTML shown as text (escaped twice).
    assert '<tr class="ev ev-reply">' in page.text, page.text[-3000:]
    assert f'<article id="worker-{client["id"]}"' in page.text
    assert "&lt;tr" not in page.text and "&amp;lt;" not in page.text
    check = PageCheck.of(page.text)
    assert not check.problems, check.problems
    assert check.scripts, "the page loads its scripts from files"
    assert all(src.startswith("/static/") for src in check.scripts), check.scripts
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page.text  # shown, escaped


def test_docs_page_has_no_inline_script(api):
    page = api.get("/docs")
    assert page.status_code == 200
    check = PageCheck.of(page.text)
    assert not check.problems, check.problems
    assert check.scripts


def test_form_error_page_escapes_what_was_typed(live):
    with live.client(auth=False, headers={**live.cookie, "Origin": live.origin}) as http:
        response = http.post("/workers", data={"kind": "client", "host": "127.0.0.1",
                                               "port": "70000", "message": HOSTILE})
    assert response.status_code == 422
    check = PageCheck.of(response.text)
    assert not check.problems, check.problems
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in response.text


def test_viewer_token_never_reaches_the_log(live):
    viewer = re.search(r"\?view=(\S+)", live.output()).group(1)
    with live.client(auth=False) as http:
        assert http.get("/", params={"view": viewer}).status_code == 303
    deadline = time.monotonic() + 5
    while "view=(hidden)" not in live.output():
        assert time.monotonic() < deadline, live.output()[-2000:]
        time.sleep(0.02)
    assert live.output().count(viewer) == 1  # only in the URL printed at start
    assert viewer not in live.log()
