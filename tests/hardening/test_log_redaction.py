"""Neither token ever reaches the log (issue 13): a real `python -m webapp`, both tokens
presented in every way a browser or a script can (Bearer header, cookie, query, encoded query,
a WebSocket URL), then its whole output searched for them; only the start-up banner holds them.
"""

import asyncio
import re
import time
from urllib.parse import quote, unquote_plus

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from webapp.serve import Redactor

VIEW_LINE = re.compile(r"\?view=(\S+)")


def encoded(text: str) -> str:
    """Every character percent-encoded: `abc` → `%61%62%63`."""
    return "".join(f"%{b:02X}" for b in text.encode())


async def present_both_tokens(app, viewer: str) -> int:
    """Every way of presenting either token; returns how many requests reached the server."""
    token = app.token
    cookie, view_cookie = app.cookie_name, f"udplab_view_{app.port}"
    requests = [
        ("GET", f"/?token={token}", {}, 303),
        ("GET", f"/?x=1&token={token}", {}, 303),
        ("GET", f"/?%74oken={token}", {}, 303),  # `t` encoded: parse_qs decodes the name
        ("GET", f"/?%74%6F%6B%65%6E={encoded(token)}", {}, 303),
        ("GET", f"/?token={encoded(token)}", {}, 303),
        ("GET", f"/?view={viewer}", {}, 303),
        ("GET", f"/?%76iew={viewer}", {}, 303),
        ("GET", f"/?view={encoded(viewer)}", {}, 303),
        ("GET", f"/?TOKEN={token}", {}, 200),  # not a login (names are case-sensitive)...
        ("GET", f"/api/workers/{token}", {"Authorization": f"Bearer {token}"}, 404),  # path
        ("GET", f"/api/workers/{encoded(viewer)}", {"Authorization": f"Bearer {token}"}, 404),
        ("GET", "/api/workers", {"Authorization": f"Bearer {token}"}, 200),
        ("GET", "/api/workers", {"Cookie": f"{cookie}={token}"}, 200),
        ("GET", "/", {"Cookie": f"{view_cookie}={viewer}"}, 200),
    ]
    async with httpx.AsyncClient(base_url=app.base, timeout=10) as http:
        for method, url, headers, status in requests:
            # ...but an authenticated request all the same, so every line is logged alike.
            if url.startswith("/?TOKEN"):
                headers = {"Authorization": f"Bearer {token}"}
            response = await http.request(method, url, headers=headers)
            assert response.status_code == status, (url, response.text)
    sockets = [
        (f"/api/events?token={token}", {"Authorization": f"Bearer {token}"}, None),
        (f"/api/events?view={viewer}", {"Cookie": f"{view_cookie}={viewer}",
                                        "Origin": app.origin}, None),
        (f"/ws/page?%74oken={encoded(token)}", {"Cookie": f"{cookie}={token}",
                                                "Origin": app.origin}, None),
        (f"/api/events?token={token}", {}, 401),  # refused handshakes are logged too
        (f"/api/events?view={viewer}", {}, 401),
    ]
    for path, headers, refused in sockets:
        if refused is None:
            async with connect(f"{app.ws_base}{path}", open_timeout=5,
                               additional_headers=headers) as ws:
                async with asyncio.timeout(5):
                    assert await ws.recv()
        else:
            with pytest.raises(InvalidStatus) as error:
                async with connect(f"{app.ws_base}{path}", open_timeout=5,
                                   additional_headers=headers):
                    pass
            assert error.value.response.status_code in (401, 403)
    return len(requests) + len(sockets)


def test_neither_token_reaches_the_log_whatever_way_it_comes(apps):
    app = apps.start()
    viewer = VIEW_LINE.search(app.output()).group(1)
    expected = asyncio.run(present_both_tokens(app, viewer))

    def logged() -> int:
        lines = (app.output() + app.log()).splitlines()
        return sum(1 for line in lines if '" 30' in line or '" 20' in line or '" 40' in line
                   or "WebSocket /" in line)

    deadline = time.monotonic() + 10
    while logged() < expected:
        assert time.monotonic() < deadline, app.output()[-3000:] + app.log()[-3000:]
        time.sleep(0.05)
    out, err = app.output(), app.log()
    assert "Application startup complete" in err  # the real log...
    for secret in (app.token, viewer):
        spelled = {secret, encoded(secret), quote(secret)}
        for text, where in ((out, "stdout"), (err, "stderr")):
            lines = [line for line in text.splitlines()
                     if any(s in unquote_plus(unquote_plus(line)) or s in line for s in spelled)]
            banner_lines = [line for line in lines
                            if line.strip().startswith("http://") and "INFO" not in line]
            assert lines == banner_lines, f"{where} shows a token:\n" + "\n".join(
                line for line in lines if line not in banner_lines)
    # Exactly one banner line per token, on stdout, before any log line.
    assert out.count(app.token) == 1 and out.count(viewer) == 1
    assert app.token not in err and viewer not in err
    # The lines are still useful: what was asked, with the secret part hidden.
    assert '"GET /?%74oken=(hidden) HTTP/1.1" 303' in out, out
    assert '"GET /?x=1&token=(hidden) HTTP/1.1" 303' in out, out
    assert '"GET /api/workers/(hidden) HTTP/1.1" 404' in out, out
    assert '"WebSocket /api/events?token=(hidden)" [accepted]' in err, err
    assert '"WebSocket /api/events?view=(hidden)" [accepted]' in err, err
    assert '"WebSocket /api/events?token=(hidden)" 403' in err, err


@pytest.mark.parametrize(("text", "shown"), [
    ("GET /?token=SECRET HTTP/1.1", "GET /?token=(hidden) HTTP/1.1"),
    ("GET /?%74oken=abc&x=1", "GET /?%74oken=(hidden)&x=1"),
    ("GET /?%2574oken=abc", "GET /?%2574oken=(hidden)"),  # encoded twice
    ("GET /?a=1;view=zz", "GET /?a=1;view=(hidden)"),
    ("GET /?t=%53%45%43RET", "GET /?t=(hidden)"),  # the value itself, encoded
    ("GET /x/%53ECRET/y", "GET (hidden)"),  # in a path
    ("Bearer SECRET", "Bearer (hidden)"),
    ("GET /?page=2&q=token", "GET /?page=2&q=token"),  # nothing secret: unchanged
])
def test_redactor_hides_every_spelling(text, shown):
    assert Redactor("SECRET", "VIEWER").redact(text) == shown
