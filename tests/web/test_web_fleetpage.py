"""The page's cards of other machines' workers (webapp/web/fleetpage.py), pure: events in,
cards out, no sockets. A card made from events alone learns its kind, spec and target from
what the fleet knows of the worker, whenever that comes."""

from webapp.fleet import wire
from webapp.web.fleetpage import RemoteCards


def sent(worker: str, seq: int):
    """An agent's `sent` event for `worker` (its id there), as the dashboard's bus holds it."""
    return wire.event_from_agent({"type": "sent", "worker": worker, "time": 1.0 + seq,
                                  "message": "Sent 'x'", "text": "x", "size": 1,
                                  "local": ["198.18.0.3", 40000],
                                  "peer": ["198.18.0.2", 1060]}, "b", seq)


def test_a_named_workers_card_learns_its_kind_once_the_fleet_knows_it():
    known: dict[str, dict] = {}
    cards = RemoteCards(known.get)
    touched = cards.apply([sent("imp-cli-1", 1)])
    card = cards.cards["b:imp-cli-1"]
    assert touched == {"b:imp-cli-1"}
    assert card.kind == "imp-cli" and not cards.learned  # a guess from its name, for now
    # the machine's answer to the start arrives after its first events
    known["b:imp-cli-1"] = {"id": "b:imp-cli-1", "machine": "b", "kind": "client",
                            "state": "running", "spec": {"mode": "promiscuous"},
                            "local": ["0.0.0.0", 40000], "target": ["198.18.0.2", 1060],
                            "counters": {"sent": 0, "replies": 0, "unexpected": 0}}
    touched = cards.apply([])  # a flush with no event of it: it learns all the same
    assert cards.learned and touched == {"b:imp-cli-1"}
    assert card.kind == "client" and card.spec == {"mode": "promiscuous"}
    assert card.target.address == ("198.18.0.2", 1060)
    assert card.counters == {"sent": 1, "replies": 0, "unexpected": 0}  # none lost
    cards.apply([sent("imp-cli-1", 2)])
    assert not cards.learned and card.counters["sent"] == 2  # learned once


def test_without_a_fleet_to_ask_a_card_keeps_its_guess():
    cards = RemoteCards()
    cards.apply([sent("client-7", 1)])
    assert cards.cards["b:client-7"].kind == "client" and not cards.learned
