"""Edges the fuzzers found, pinned down so that they are checked on every run (hypothesis and
schemathesis explore at random and may not meet them again)."""

import httpx
import pytest

HUGE = [2**63, 10**30]  # past SQLite's INTEGER (signed 64 bits)


@pytest.mark.parametrize("number", HUGE)
def test_history_ids_past_64_bits_are_not_found_not_500(apps, number):
    """Found by schemathesis: `GET /api/history/60682637919440546562048` was a 500
    (OverflowError: Python int too large to convert to SQLite INTEGER)."""
    app = apps.start()
    calls = [
        ("GET", f"/api/history/{number}"),
        ("DELETE", f"/api/history/{number}"),
        ("POST", f"/api/history/{number}/run"),
        ("GET", f"/api/history/{number}/export.jsonl"),
        ("GET", f"/api/history/sessions/{number}/export.csv"),
        ("DELETE", f"/api/history?session={number}"),
        ("GET", f"/history/{number}"),
        ("POST", f"/history/{number}/run"),
        ("POST", f"/history/{number}/delete"),
        ("POST", f"/history/sessions/{number}/delete"),
    ]
    failures = []
    # A new connection per request: after a 500 uvicorn drops the connection it came on.
    with app.client(headers={"Connection": "close"}) as http:
        for method, path in calls:
            try:
                response = http.request(method, path)
            except httpx.TransportError as exc:
                failures.append((method, path, repr(exc)))
                continue
            if response.status_code >= 500 or response.status_code < 300:
                failures.append((method, path, response.status_code, response.text[:200]))
            elif path.startswith("/api/"):
                assert isinstance(response.json().get("error"), str), (path, response.text)
        assert http.get("/api/health").status_code == 200
    log = app.log()
    # Clear the log's verdict here, so the teardown's "no traceback" check does not repeat it.
    assert not failures, "\n".join(map(str, failures)) + "\n\n" + log[-2500:]
