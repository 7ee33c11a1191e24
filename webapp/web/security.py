"""The guard in front of every route: Host allowlist, token, Origin check, safe headers.

It is plain ASGI middleware so that HTTP requests and WebSockets pass the same checks.
"""

import asyncio
import hmac
import html
import json
import time
from http.cookies import SimpleCookie
from urllib.parse import parse_qs, urlsplit

from webapp.web.limits import (
    BodyTooLarge, TokenFailures, limited_receive, slow_down, too_large_message)
from webapp.web.settings import Settings

OPEN_PATHS = ("/api/health", "/static/")
IMPORT_PATHS = frozenset({"/api/history/import", "/history/import"})  # larger bodies
EARLIER_RUN = ("This link is from an earlier run of udplab: open the URL it printed this time "
               "(it ends in /?token=…)")
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'"
)
SECURITY_HEADERS = [
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    # same-origin, not no-referrer: under no-referrer Chromium sends the page's own form
    # posts with `Origin: null`, which the Origin check must refuse (DESIGN.md §4).
    (b"referrer-policy", b"same-origin"),
    (b"x-frame-options", b"DENY"),
]


def host_name(host_header: str) -> str:
    """The name part of a Host header: `127.0.0.1:8000` → `127.0.0.1`, `[::1]:80` → `[::1]`."""
    if host_header.startswith("["):
        return host_header.split("]", 1)[0] + "]"
    return host_header.rsplit(":", 1)[0] if host_header.count(":") == 1 else host_header


class Guard:
    """ASGI middleware enforcing the security model of DESIGN.md §4."""

    def __init__(self, app, settings: Settings):
        self.app = app
        self.settings = settings
        self.token = settings.token.encode()
        self.viewer = settings.viewer_token.encode()
        self.failures = TokenFailures(settings.max_token_failures,
                                      settings.max_token_failures_total)

    async def __call__(self, scope, receive, send):
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        client = (scope.get("client") or ("?", 0))[0]
        failures = self.failures
        kind = self.offered(scope, headers)
        # Open paths and foreign Hosts are answered without looking at any token: never limited.
        offered = kind if failures.enabled and not self.is_open(scope, headers) else None
        cookies = self.our_cookies(headers) if offered == "cookie" else []
        why = None
        if offered is not None:
            now = time.monotonic()
            if offered == "cookie" and all(failures.knows_stale(client, v) for v in cookies):
                # An old tab reconnecting: known wrong, so no comparison and no count.
                return await self.refuse(scope, receive, send, 401, EARLIER_RUN)
            why = failures.over_budget(client, now)
            if why is not None and not await failures.wait_in_lane():
                return await self.refuse(scope, receive, send, 429, self.too_many(why, client))
        refusal = self.check(scope, headers)
        if refusal is None:
            if offered is not None and self.showed_a_token(scope):
                failures.succeeded(client, time.monotonic())
            return await self.pass_on(scope, receive, send, headers)
        status, message = refusal
        if status == 401 and offered is not None:
            now = time.monotonic()
            if offered == "cookie" and all(failures.is_stale(client, v, now) for v in cookies):
                return await self.refuse(scope, receive, send, 401, EARLIER_RUN)
            count = failures.failed(client, now)  # no await between the check and this
            if why is not None:  # it waited in the lane already
                return await self.refuse(scope, receive, send, 429, self.too_many(why, client))
            await asyncio.sleep(slow_down(count))  # slow down guessing
        elif status == 401 and kind == "cookie":
            message = EARLIER_RUN  # (with the limit off: still say why)
        return await self.refuse(scope, receive, send, status, message)

    def too_many(self, why: str, client: str) -> str:
        wait = self.failures.wait_seconds(client, time.monotonic())
        return (f"{why}: wait {wait} s, then use the URL that udplab printed when it started "
                "(a right token always gets in)")

    async def pass_on(self, scope, receive, send, headers: dict[str, str]):
        """Call the app; HTTP bodies are held to their route's size limit, refused with 413
        on their Content-Length before any byte is read, or as soon as a chunked body
        streams past it."""
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        importing = scope["path"] in IMPORT_PATHS
        limit = self.settings.max_import_body if importing else self.settings.max_body
        too_large = too_large_message(limit, importing)
        length = headers.get("content-length", "")
        if length.isdigit() and int(length) > limit:
            return await self.refuse(scope, receive, send, 413, too_large)
        started = False
        send_with_headers = self.with_headers(send)

        async def send_and_note(message):
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send_with_headers(message)

        try:
            await self.app(scope, limited_receive(receive, limit, too_large), send_and_note)
        except BodyTooLarge as exc:
            if started:
                raise
            await self.refuse(scope, receive, send, 413, str(exc.detail))

    def is_open(self, scope, headers: dict[str, str]) -> bool:
        """Answered whatever the token: a route open to all, or a Host refused anyway."""
        if host_name(headers.get("host", "")).lower() not in self.settings.host_names:
            return True
        path = scope["path"]
        return scope["type"] == "http" and (path in OPEN_PATHS or path.startswith("/static/"))

    def offered(self, scope, headers: dict[str, str]) -> str | None:
        """How the request offers a token: 'guess' (a URL or a Bearer header: what a person
        or a script typed), 'cookie' (only a cookie of ours: what a run of udplab set),
        or None."""
        if "authorization" in headers or (scope["type"] == "http" and self.is_login(scope)):
            return "guess"
        return "cookie" if self.our_cookies(headers) else None

    def our_cookies(self, headers: dict[str, str]) -> list[str]:
        """The values of this dashboard's two cookies (session and viewer) in the request."""
        cookie = SimpleCookie()
        try:
            cookie.load(headers.get("cookie", ""))
        except Exception:  # a malformed Cookie header is simply no session
            return []
        names = (self.settings.cookie_name, self.settings.viewer_cookie_name)
        return [cookie[name].value for name in names if name in cookie]

    @staticmethod
    def showed_a_token(scope) -> bool:
        """Whether a request that passed did so by a token (not by an open path)."""
        return bool(scope.get("state", {}).get("udplab_auth")) or (
            scope["type"] == "http" and Guard.is_login(scope))

    def check(self, scope, headers: dict[str, str]) -> tuple[int, str] | None:
        """None when the request may pass, else (status, reason in plain words)."""
        host = headers.get("host", "")
        if host_name(host).lower() not in self.settings.host_names:
            return 400, (
                f"The Host {host!r} is not one this dashboard answers to (a guard against "
                "DNS rebinding): open it by its address, or start udplab with --allow-host"
            )
        path = scope["path"]
        if scope["type"] == "http" and (path in OPEN_PATHS or path.startswith("/static/")):
            return None
        if scope["type"] == "http" and self.is_login(scope):
            query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
            key, value = ("token", self.token) if "token" in query else ("view", self.viewer)
            if hmac.compare_digest(query[key][0].encode(), value):
                return None  # the page route sets the cookie and drops the token from the URL
            return 401, ("That link's token is not this dashboard's: copy the whole URL that "
                         "udplab printed when it started")
        by = self.authenticated_by(headers)
        scope.setdefault("state", {})["udplab_auth"] = by
        if by == "viewer" and scope["type"] == "http" and scope["method"] not in SAFE_METHODS:
            return 403, ("This is the read-only viewer link: it can watch the dashboard, not "
                         "start, stop or change anything")
        if by is None:
            return 401, (
                "This dashboard needs its token: open the URL that udplab printed when it "
                "started (it ends in /?token=…), or send 'Authorization: Bearer <token>'"
            )
        origin = headers.get("origin")
        changes_state = scope["type"] == "websocket" or scope["method"] not in SAFE_METHODS
        if origin is not None or (changes_state and by in ("cookie", "viewer")):
            expected = f"http://{host}"
            if origin != expected:
                return 403, (
                    f"Refused: the request comes from origin {origin or 'none'!r}, not from "
                    f"this dashboard ({expected}); use the dashboard's own page or a script "
                    "with the Bearer token"
                )
        return None

    def authenticated_by(self, headers: dict[str, str]) -> str | None:
        """'bearer' or 'cookie' when the request carries the right token, else None."""
        auth = headers.get("authorization", "")
        if auth[:7].lower() == "bearer " and self.matches(auth[7:].strip()):
            return "bearer"
        cookie = SimpleCookie()
        try:
            cookie.load(headers.get("cookie", ""))
        except Exception:  # a malformed Cookie header is simply no session
            return None
        morsel = cookie.get(self.settings.cookie_name)
        if morsel is not None and self.matches(morsel.value):
            return "cookie"
        morsel = cookie.get(self.settings.viewer_cookie_name)
        if morsel is not None and hmac.compare_digest(morsel.value.encode(), self.viewer):
            return "viewer"
        return None

    def matches(self, candidate: str) -> bool:
        """Constant-time comparison with the token."""
        return hmac.compare_digest(candidate.encode(), self.token)

    @staticmethod
    def is_login(scope) -> bool:
        """`GET /?token=…`: the page route checks the token itself and sets the cookie."""
        if scope["path"] != "/" or scope["method"] != "GET":
            return False
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        return "token" in query or "view" in query

    def with_headers(self, send):
        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                message = dict(message)
                message["headers"] = [*message.get("headers", []), *SECURITY_HEADERS]
            await send(message)

        return send_with_headers

    @staticmethod
    def back_link(scope) -> str:
        """Where the refusal page's way back leads: the page the person came from when it is
        one of ours (a same-origin Referer), else the dashboard."""
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        referer = urlsplit(headers.get("referer", ""))
        if referer.scheme == "http" and referer.netloc == headers.get("host") and \
                referer.path.startswith("/") and not referer.path.startswith("//"):
            return referer.path + (f"?{referer.query}" if referer.query else "")
        return "/"

    async def refuse(self, scope, receive, send, status: int, message: str):
        """Answer a refused request: JSON for the API, a short page otherwise."""
        if scope["type"] == "websocket":
            # Closing before accept makes the server answer the handshake with 403.
            await send({"type": "websocket.close", "code": 1008, "reason": message[:120]})
            return
        if scope["path"].startswith("/api/"):
            body = json.dumps({"error": message}).encode()
            content_type = b"application/json"
        else:
            body = refusal_page(message, self.back_link(scope)).encode()
            content_type = b"text/html; charset=utf-8"
        await send({
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", content_type),
                        (b"content-length", str(len(body)).encode()), *SECURITY_HEADERS],
        })
        await send({"type": "http.response.body", "body": body})


def refusal_page(message: str, back: str) -> str:
    """The page a refused browser request ends on: the dashboard's look, the reason in plain
    words, and a way back (the stylesheet is served without a token, so it always loads)."""
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        "<title>Refused · UDP Lab</title>"
        '<link rel="icon" href="/static/favicon.svg" type="image/svg+xml">'
        '<link rel="stylesheet" href="/static/udplab.css"></head>'
        '<body><header class="top"><h1>UDP Lab</h1></header>'
        '<main class="refusal"><section class="panel" aria-label="Refused">'
        "<h2>Not done</h2>"
        f'<p class="error" role="alert">{html.escape(message)}</p>'
        f'<p><a class="back" href="{html.escape(back)}">'
        f'{"Back to the dashboard" if back == "/" else "Back to the page you came from"}</a>'
        "</p></section></main></body></html>"
    )
