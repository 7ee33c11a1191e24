"""The wrong-token budget (issue 13): a right token always gets in; /api/health and /static are
never limited; wrong tokens are budgeted per address and app-wide, and past a budget they wait
in one slow lane, whatever address they come from; an earlier run's cookies are no guesses."""

import asyncio
import re
import time

import httpx
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from live import start_server, stop_and_check
from webapp.web.limits import (
    LANE, MAX_ADDRESSES, PENALTY, STALE_FOR, STALE_VALUES, WINDOW, TokenFailures)

WRONG = {"Authorization": "Bearer not-the-token"}


def client_from(app, address: str) -> httpx.AsyncClient:
    """An async client whose connections leave from `address` (any 127.x.y.z is ours)."""
    return httpx.AsyncClient(base_url=app.base, timeout=30,
                             transport=httpx.AsyncHTTPTransport(local_address=address))


async def timed(http: httpx.AsyncClient, url: str, **kwargs) -> tuple[httpx.Response, float]:
    started = time.monotonic()
    response = await http.get(url, **kwargs)
    return response, time.monotonic() - started


def test_wrong_tokens_are_slowed_then_the_right_one_still_gets_in(apps):
    app = apps.start("--max-token-failures", "5")

    async def scenario():
        async with client_from(app, "127.0.0.1") as http:
            took = []
            for _ in range(5):
                response, seconds = await timed(http, "/api/workers", headers=WRONG)
                assert response.status_code == 401, response.text
                took.append(seconds)
            assert took[3] >= 0.5 and took[4] >= 0.5, f"wrong tokens answered in {took}"
            assert took[4] > took[0] + 0.5, f"the slow-down does not grow: {took}"
            # The sixth is over the budget: it waits its turn in the lane, then 429.
            response, seconds = await timed(http, "/api/workers", headers=WRONG)
            assert response.status_code == 429, response.text
            assert "wait" in response.json()["error"] and "127.0.0.1" in response.json()["error"]
            assert seconds >= PENALTY * 0.9
            # Open routes are never limited, not even with a wrong token attached.
            for url in ("/api/health", "/static/udplab.css"):
                for headers in ({}, WRONG):
                    response, seconds = await timed(http, url, headers=headers)
                    assert response.status_code == 200, (url, response.text)
                    assert seconds < PENALTY, (url, seconds)  # never in the lane
            # The right token gets in, by header and by the printed URL.
            response, _ = await timed(http, "/api/workers", headers=app.bearer)
            assert response.status_code == 200, response.text
            response, _ = await timed(http, f"/?token={app.token}")
            assert response.status_code == 303, response.text
        # Another address is not affected at all.
        async with client_from(app, "127.0.0.2") as other:
            response, seconds = await timed(other, "/api/workers", headers=WRONG)
            assert response.status_code == 401 and seconds < PENALTY

    asyncio.run(scenario())


def test_concurrent_wrong_tokens_cannot_overrun_the_budget(apps):
    app = apps.start("--max-token-failures", "10")

    async def scenario():
        async with client_from(app, "127.0.0.1") as http:
            answers = await asyncio.gather(
                *(http.get("/api/workers", headers=WRONG) for _ in range(12)),
                http.get("/api/health"))
            statuses = sorted(a.status_code for a in answers[:-1])
            assert statuses == [401] * 10 + [429] * 2, statuses
            assert answers[-1].status_code == 200
            assert (await http.get("/api/workers", headers=app.bearer)).status_code == 200

    asyncio.run(scenario())


def test_guessing_from_many_addresses_is_bounded_by_the_app_wide_budget(apps):
    """Ten loopback source addresses, three guesses each at once: the app-wide budget (20)
    answers 20 of them, and the rest wait in one lane, one check per PENALTY seconds."""
    app = apps.start("--max-token-failures", "10", "--max-token-failures-total", "20")
    addresses = [f"127.0.0.{10 + i}" for i in range(10)]

    async def scenario():
        # The teacher, already in: a guesser elsewhere must not slow the teacher down.
        async with client_from(app, "127.0.0.1") as teacher:
            assert (await teacher.get("/api/workers", headers=app.bearer)).status_code == 200
            clients = [client_from(app, a) for a in addresses]

            async def teacher_meanwhile():
                await asyncio.sleep(2 * PENALTY)  # the lane is busy by then
                return await timed(teacher, "/api/workers", headers=app.bearer)

            try:
                started = time.monotonic()
                *results, (response, seconds) = await asyncio.gather(
                    *(timed(c, "/api/workers", headers=WRONG) for c in clients for _ in range(3)),
                    teacher_meanwhile())
                took = time.monotonic() - started
            finally:
                for c in clients:
                    await c.aclose()
            # Not in the lane, where it would wait behind several turns.
            assert response.status_code == 200 and seconds < 1.5 * PENALTY, seconds
            statuses = [r.status_code for r, _ in results]
            assert statuses.count(401) == 20, statuses
            assert statuses.count(429) == 10, statuses
            assert all("from the network" in r.json()["error"]
                       for r, _ in results if r.status_code == 429)
            # Those over the budget were checked one at a time: the k-th waited k turns...
            waited = sorted(s for r, s in results if r.status_code == 429)
            for turn, seconds in enumerate(waited[-LANE:], 1):
                assert seconds >= turn * PENALTY * 0.9, (turn, waited)
            # ...and those the full lane had no room for were refused unchecked, at once.
            assert all(s < PENALTY for s in waited[:-LANE]), waited
            assert took >= LANE * PENALTY * 0.9
            # A right token from a fresh address still gets in (after its turn in the lane).
            async with client_from(app, "127.0.0.99") as fresh:
                response, seconds = await timed(fresh, "/api/workers", headers=app.bearer)
                assert response.status_code == 200, response.text
                assert seconds < PENALTY * 3, seconds

    asyncio.run(scenario())


def test_an_earlier_runs_tabs_are_told_so_and_never_lock_the_new_url_out(tmp_path):
    """Restart udplab on the same port (a new token) while two old tabs keep reconnecting:
    they are told the link is from an earlier run, and the new URL gets in."""
    first = start_server(tmp_path / "first")
    port = first.port
    with httpx.Client(base_url=first.base, timeout=10) as browser:
        assert browser.get("/", params={"token": first.token}).status_code == 303
        old_cookie = browser.cookies.get(first.cookie_name)
    stop_and_check(first)
    viewer_cookie = f"udplab_view_{port}"
    second = start_server(tmp_path / "second", args=("--port", str(port)))
    try:
        assert second.port == port and second.token != first.token
        old = {"Cookie": f"{second.cookie_name}={old_cookie}; {viewer_cookie}=old-viewer",
               "Origin": second.origin}

        async def old_tabs():
            async def reconnecting_tab():
                for _ in range(30):
                    try:
                        async with connect(f"{second.ws_base}/ws/page", open_timeout=5,
                                           additional_headers=old):
                            raise AssertionError("an old cookie opened the page stream")
                    except InvalidStatus as refused:
                        assert refused.response.status_code in (401, 403)

            async def reloading_tab(http):
                seconds = []
                for _ in range(30):
                    response, took = await timed(http, "/", headers=old)
                    assert response.status_code == 401, response.text
                    assert "earlier run of udplab" in response.text, response.text
                    seconds.append(took)
                return seconds

            async with client_from(second, "127.0.0.1") as http:
                _, _, seconds = await asyncio.gather(reconnecting_tab(), reconnecting_tab(),
                                                     reloading_tab(http))
                # Never slowed down as guesses are.
                assert max(seconds) < 1.0, seconds
                # The new URL gets in at once, and the budget is untouched: a wrong Bearer
                # token is still answered 401, not 429.
                response, took = await timed(http, f"/?token={second.token}")
                assert response.status_code == 303 and took < 1.0, (response.text, took)
                http.cookies.clear()  # the new session cookie would let it in
                response, _ = await timed(http, "/api/workers", headers=WRONG)
                assert response.status_code == 401, response.text

        asyncio.run(old_tabs())
        api = httpx.get(f"{second.base}/api/workers",
                        headers={"Cookie": f"{second.cookie_name}={old_cookie}"})
        assert api.status_code == 401 and "earlier run" in api.json()["error"]
        assert re.search(r"open the URL it printed this time", api.json()["error"])
    finally:
        stop_and_check(second)


def test_many_new_cookie_values_are_guesses(apps):
    """Cookies cannot be a free channel for guessing: past a few distinct wrong values per
    address, each new one is counted like any other wrong token."""
    app = apps.start("--max-token-failures", "3")

    async def scenario():
        async with client_from(app, "127.0.0.1") as http:
            statuses = []
            for i in range(12):
                response = await http.get(
                    "/api/workers", headers={"Cookie": f"{app.cookie_name}=guess{i}"})
                statuses.append(response.status_code)
            assert statuses[:4] == [401] * 4  # taken for an earlier run's
            assert 429 in statuses, statuses
            assert (await http.get("/api/workers", headers=app.bearer)).status_code == 200

    asyncio.run(scenario())


# --- the bookkeeping, on a fake clock ----------------------------------------------------------

def test_budgets_forget_after_a_minute_and_stay_bounded():
    failures = TokenFailures(per_address=3, total=5)
    for i in range(3):
        failures.failed("a", now=float(i))
    assert failures.over_budget("a", now=3.0) == "Too many wrong tokens from a"
    assert failures.over_budget("b", now=3.0) is None
    assert failures.wait_seconds("a", now=3.0) == int(WINDOW - 3) + 1
    failures.failed("b", now=4.0)
    failures.failed("c", now=5.0)  # five in all: the app-wide budget is spent
    assert failures.over_budget("d", now=6.0) == "Too many wrong tokens from the network"
    failures.succeeded("e", now=6.0)
    assert failures.over_budget("e", now=6.0) is None  # showed the right token lately
    # A minute later everything is forgotten.
    assert failures.over_budget("a", now=3.0 + WINDOW) is None
    assert failures.over_budget("d", now=6.0 + WINDOW) is None
    # Many addresses never grow the tables past their bound.
    for i in range(MAX_ADDRESSES + 10):
        failures.failed(f"10.{i // 65536}.{i // 256 % 256}.{i % 256}", now=1000.0)
        failures.is_stale(f"x{i}", "old", now=1000.0)
    assert len(failures.by_address) <= MAX_ADDRESSES
    assert len(failures.stale) <= MAX_ADDRESSES
    assert len(failures.all) <= 4 * failures.total


def test_stale_cookie_values_are_few_and_remembered():
    failures = TokenFailures(per_address=10, total=100)
    values = [f"old{i}" for i in range(STALE_VALUES)]
    assert all(failures.is_stale("a", v, now=0.0) for v in values)
    assert not failures.is_stale("a", "one-more", now=1.0)  # a guess
    assert all(failures.knows_stale("a", v) for v in values)
    assert not failures.knows_stale("b", values[0])  # per address
    assert failures.is_stale("a", values[0], now=STALE_FOR / 2)  # seen again: kept
    # Values not seen for STALE_FOR are forgotten, making room again.
    assert failures.is_stale("a", "later", now=STALE_FOR + 1.0)
