"""Issue 14, defect 2: the page's own forms pass the Origin check, and a refused browser
request ends on a page with the dashboard's look and a way back."""

import pytest

EVIL = "http://evil.example"


def test_pages_send_their_origin_with_their_own_forms(live):
    """`same-origin`, not `no-referrer`: under no-referrer Chromium posts forms with
    `Origin: null` (the browser side is tested in tests/browser/test_page_history.py)."""
    with live.client() as http:
        for path in ("/", "/history"):
            assert http.get(path).headers["referrer-policy"] == "same-origin"


@pytest.mark.parametrize("origin", ["null", EVIL])
def test_a_refused_form_post_ends_on_a_styled_page_with_a_way_back(live, origin):
    headers = {**live.cookie, "Origin": origin, "Referer": f"{live.base}/history?q=server"}
    with live.client(auth=False, headers=headers) as http:
        refused = http.post("/history/sessions/999999/delete")
    assert refused.status_code == 403
    page = refused.text
    assert "the request comes from origin" in page
    assert '<link rel="stylesheet" href="/static/udplab.css">' in page
    assert '<p class="error" role="alert">' in page
    assert '<a class="back" href="/history?q=server">Back to the page you came from</a>' in page


@pytest.mark.parametrize("referer", [None, f"{EVIL}/history", "http://127.0.0.1:1/x",
                                     "javascript:alert(1)"])
def test_the_way_back_never_leaves_the_dashboard(live, referer):
    headers = {**live.cookie, "Origin": EVIL}
    if referer:
        headers["Referer"] = referer
    with live.client(auth=False, headers=headers) as http:
        refused = http.post("/workers", data={"kind": "server", "port": "0"})
    assert refused.status_code == 403
    assert '<a class="back" href="/">Back to the dashboard</a>' in refused.text
