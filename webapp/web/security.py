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

from webapp.web.settings import Settings

OPEN_PATHS = ("/api/health", "/static/")
FAILURE_WINDOW = 60.0  # seconds over which wrong tokens are counted per client address
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
        self.failures: dict[str, list[float]] = {}  # client address -> times of wrong tokens

    async def __call__(self, scope, receive, send):
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        client = (scope.get("client") or ("?", 0))[0]
        limit = self.settings.max_token_failures  # 0: no limit, no slowing down
        recent = self._recent_failures(client)
        if limit and len(recent) >= limit:
            wait = int(FAILURE_WINDOW - (time.monotonic() - recent[0])) + 1
            return await self.refuse(scope, receive, send, 429, (
                f"Too many wrong tokens from {client}: wait {wait} s, then use the URL that "
                "udplab printed when it started"))
        refusal = self.check(scope, headers)
        if refusal is not None:
            status, message = refusal
            if status == 401 and limit and self._offered_token(scope, headers):
                recent.append(time.monotonic())
                self.failures[client] = recent
                await asyncio.sleep(min(2.0, 0.1 * 2 ** len(recent)))  # slow down guessing
            return await self.refuse(scope, receive, send, status, message)
        if scope["type"] == "http":
            send = self.with_headers(send)
        return await self.app(scope, receive, send)

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

    def _recent_failures(self, client: str) -> list[float]:
        now = time.monotonic()
        recent = [t for t in self.failures.get(client, ()) if now - t < FAILURE_WINDOW]
        if recent:
            self.failures[client] = recent
        else:
            self.failures.pop(client, None)
        if len(self.failures) > 10_000:  # never grows without bound
            self.failures.clear()
        return recent

    @staticmethod
    def _offered_token(scope, headers: dict[str, str]) -> bool:
        """Whether the request tried a token at all (a Bearer header or a session cookie)."""
        return ("authorization" in headers or "udplab_" in headers.get("cookie", "")
                or Guard.is_login(scope))

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
