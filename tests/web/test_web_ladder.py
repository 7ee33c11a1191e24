"""The ladder's layout (webapp/web/ladder.py), issue 14: pure code, real event objects."""

from webapp.engine.events import Dropped, Sent
from webapp.web.ladder import MAX_LANES, layout


def sent(seq, worker, local, peer, text="hi"):
    return Sent(seq=seq, time=0.0, worker=worker, message="", local=local, peer=peer,
                size=len(text), text=text)


def test_names_are_whole_and_addresses_are_the_bound_ones():
    worker = "promiscuous-fooled-3-client-with-a-long-name"
    drawn = layout([sent(1, worker, ("0.0.0.0", 40000), ("127.0.0.1", 1060))], {})
    client, server = drawn["columns"]
    assert client["worker"] == worker  # not "…ous-fooled-3-client"
    assert client["label"] == "0.0.0.0:40000"
    assert server["worker"] is None and server["label"] == "127.0.0.1:1060"
    # lanes in percent of the width: they spread over whatever width the panel has
    assert [c["x"] for c in drawn["columns"]] == [25.0, 75.0]


def test_a_drop_is_marked_once():
    drop = Dropped(seq=2, time=0.0, worker="server-1", message="", local=("127.0.0.1", 1060),
                   peer=("127.0.0.1", 40000), size=2, text="hi")
    drawn = layout([sent(1, "client-2", ("127.0.0.1", 40000), ("127.0.0.1", 1060)), drop], {})
    mark = drawn["items"][-1]
    assert mark["what"] == "mark" and mark["label"] == "pretended to drop"  # the ✕ is drawn once
    assert mark["anchor"] == "end"  # on the rightmost lane it reads leftwards, inside


def test_many_endpoints_keep_the_newest_exchange_readable():
    events = [sent(n, f"client-{n}", ("127.0.0.1", 40000 + n), ("127.0.0.1", 1060))
              for n in range(1, 21)]
    drawn = layout(events, {})
    assert len(drawn["columns"]) <= MAX_LANES
    assert drawn["items"][-1]["seq"] == 20  # the newest is always drawn
    assert [i["seq"] for i in drawn["items"]] == list(range(22 - MAX_LANES, 21))
