"""Another machine's busy card on the page (issue 17): redrawn at most every REMOTE_CARD_EVERY
seconds while its datagrams only count (a fleet of 40 busy agents had the page morph ~25 cards
a flush), and exact once they stop. A real dashboard (`udplab --nats`), agents a and b in
their own namespaces, a real WebSocket client of /ws/page."""

import re
import time

import pytest
from websockets.sync.client import connect

from live import start_server, stop_and_check
from test_fleet_web import wait_for
from webapp.web.stream import REMOTE_CARD_EVERY

COUNT, INTERVAL = 120, 0.01  # the client's requests: ~1.2 s of steady traffic


@pytest.fixture(scope="module")
def dashboard(lan_fleet, tmp_path_factory):
    lan, server = lan_fleet
    live = start_server(tmp_path_factory.mktemp("dashboard"),
                        args=("--nats", server.url, "--creds",
                              str(server.dir / "dashboard.creds")))
    try:
        yield live
    finally:
        stop_and_check(live)


def card_on(message: str, dom_id: str) -> str | None:
    """The card `dom_id` that `message` redraws, if it does."""
    card = re.search(rf'<article id="worker-{dom_id}" .*?</article>', message, re.S)
    return card.group(0) if card else None


def received(card: str) -> int | None:
    """Its `received` counter (None before the card knows its counters' names)."""
    counter = re.search(r'data-counter="received">(\d+)<', card)
    return int(counter.group(1)) if counter else None


def test_a_busy_remote_card_is_redrawn_at_its_slower_pace_and_ends_exact(dashboard, lan_fleet):
    lan, _ = lan_fleet
    with dashboard.client() as http, \
            connect(f"{dashboard.ws_base}/ws/page",
                    additional_headers={**dashboard.cookie, "Origin": dashboard.origin},
                    open_timeout=5, max_size=None) as page:
        page.recv(timeout=5)
        wait_for(lambda: {"a", "b"} <= {m["name"] for m in
                                        http.get("/api/machines").json()["machines"]}, "a, b")
        server = http.post("/api/workers", json={"machine": "a", "kind": "server",
                                                 "name": "paced", "host": lan.hosts["a"],
                                                 "port": 1090})
        assert server.status_code == 201, server.text
        messages: list[str] = []
        # Its card first, with its counters: a card that learns them while datagrams are on
        # the way may count one twice (RemoteCards.started takes the larger of two counts).
        deadline = time.monotonic() + 10
        while not any((c := card_on(m, "a--paced")) and received(c) is not None
                      for m in messages):
            assert time.monotonic() < deadline, "no card of a:paced with its counters"
            try:
                messages.append(page.recv(timeout=0.3))
            except TimeoutError:
                pass
        messages.clear()
        client = http.post("/api/workers", json={
            "machine": "b", "kind": "client", "host": lan.hosts["a"], "port": 1090,
            "count": COUNT, "interval": INTERVAL})
        assert client.status_code == 201, client.text
        started = time.monotonic()
        deadline = started + 20
        while True:  # until the API and the page's newest card of it agree on all of them
            try:
                messages.append(page.recv(timeout=0.3))
            except TimeoutError:
                pass
            api = http.get("/api/workers/a:paced").json()["counters"]["received"]
            cards = [c for c in (card_on(m, "a--paced") for m in messages) if c]
            shown = [n for n in map(received, cards) if n is not None]
            if api >= COUNT and shown and shown[-1] == api:
                break
            assert time.monotonic() < deadline, f"page {shown[-1:]} vs API {api}"
        span = time.monotonic() - started
        http.delete("/api/workers/a:paced")
    assert shown == sorted(shown)
    # Before issue 17 the card was redrawn in every flush that had one of its events.
    assert len(cards) <= span / (REMOTE_CARD_EVERY - 0.05) + 2, (len(cards), span)
    with_events = [m for m in messages if "a · paced" in m]
    assert len(cards) <= 0.5 * len(with_events), (len(cards), len(with_events))
