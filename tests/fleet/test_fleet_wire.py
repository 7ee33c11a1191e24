"""What travels between dashboard and agents, without a server: events, errors, ids."""

import asyncio
import json
import time

import pytest

from webapp.engine import BadSpec, Conflict, EngineError, EventBus, Supervisor, UnknownWorker
from webapp.engine.events import BroadcastSent, Event, Received, Sent, Stopped
from webapp.fleet import wire
from webapp.fleet.fleet import Fleet
from webapp.fleet.machine import LocalMachine, Machine
from webapp.fleet.remote import RemoteMachine, Unreachable, on_machine


def test_an_agents_event_becomes_the_same_class_here_with_its_machine():
    sent = BroadcastSent(seq=7, time=1.5, worker="broadcast-1", message="m",
                         local=("198.18.50.2", 5000), peer=("198.18.50.255", 1060), size=3,
                         text="abc", reached=["listener-1", "listener-2"])
    raw = json.loads(json.dumps(sent.to_dict()))  # as it crossed the wire
    event = wire.event_from_agent(raw, "b", 42)
    assert isinstance(event, BroadcastSent) and event.type == "sent"
    assert event.seq == 42 and event.worker == "b:broadcast-1" and event.machine == "b"
    assert event.peer == ("198.18.50.255", 1060) and event.local == ("198.18.50.2", 5000)
    assert event.reached == ["b:listener-1", "b:listener-2"]
    plain = Sent(seq=1, time=1.0, worker="client-1", message="m", local=None,
                 peer=("127.0.0.1", 1060), size=1, text="x")
    assert type(wire.event_from_agent(plain.to_dict(), "b", 1)).__mro__[1] is Sent
    stopped = wire.event_from_agent(
        Stopped(seq=1, time=1.0, worker="w", message="m", state="failed").to_dict(), "c", 2)
    assert stopped.state == "failed" and stopped.to_dict()["machine"] == "c"


def test_an_event_of_an_unknown_type_or_with_missing_fields_keeps_its_line():
    newer = wire.event_from_agent({"type": "teleported", "worker": "w", "message": "hi",
                                   "time": 3.0}, "a", 5)
    assert newer.to_dict() == {"type": "note", "seq": 5, "time": 3.0, "worker": "a:w",
                               "message": "hi", "machine": "a", "original": "teleported"}
    older = wire.event_from_agent({"type": "received", "worker": "w", "message": "says"},
                                  "a", 6)
    assert older.type == "note" and older.message == "says" and not isinstance(older, Received)


@pytest.mark.parametrize("error", [BadSpec("bad port", field="port"), Conflict("taken"),
                                   UnknownWorker("who?"), EngineError("plain")])
def test_engine_errors_cross_as_themselves(error):
    with pytest.raises(type(error)) as caught:
        wire.unpack(wire.failure(error))
    assert type(caught.value) is type(error)
    assert caught.value.message == error.message and caught.value.field == error.field
    assert caught.value.status == error.status
    assert wire.unpack(wire.ok({"id": "x"})) == {"id": "x"}


def test_worker_ids_name_their_machine():
    assert wire.fleet_id("b", "client-1") == "b:client-1"
    assert wire.split_id("b:client-1") == ("b", "client-1")
    assert wire.split_id("client-1") == (None, "client-1")


class FakeAgent:
    """An agent's batches as `udplab agent` numbers them (`seq`, run `total`), and its answer
    to `replay`: it publishes the kept ones again (before answering, as NATS orders them)."""

    def __init__(self, machine: RemoteMachine, boot: str = "x"):
        self.machine, self.boot = machine, boot
        self.batches: list[dict] = []
        self.origin = self.total = 0
        self.oldest = 1  # batches before it are no longer kept
        self.asked: list[tuple[int, int]] = []
        machine.sequence.ask = self.replay
        machine.sequence.pause = 0.01

    def batch(self, count: int, worker: str = "client-1") -> dict:
        events = []
        for _ in range(count):
            self.origin += 1
            events.append(Sent(seq=self.origin, time=1.0, worker=worker, message="m",
                               local=None, peer=("198.18.50.3", 4000), size=1,
                               text=str(self.origin)).to_dict())
        self.total += count
        self.batches.append({"boot": self.boot, "seq": len(self.batches) + 1,
                             "total": self.total, "events": events})
        return self.batches[-1]

    async def replay(self, first: int, before: int) -> dict:
        self.asked.append((first, before))
        await asyncio.sleep(0)
        for batch in self.batches[max(first, self.oldest) - 1:before - 1]:
            self.machine.receive_events({"replay": True, **batch})
        # a batch sent twice (say, once live after the reconnect and once replayed) goes in once
        self.machine.receive_events({"replay": True, **self.batches[0]})
        return {"replayed": before - first, "oldest": self.oldest, "boot": self.boot}


async def settle(machine: RemoteMachine) -> None:
    for _ in range(200):
        await asyncio.sleep(0.01)
        if machine.batch >= machine.sequence.top:
            return


async def test_a_gap_in_an_agents_batches_is_asked_for_and_goes_in_in_order_once():
    bus = EventBus()
    bus.next_seq(), bus.next_seq()  # local events came first
    machine = RemoteMachine("b", nc=None, bus=bus)
    agent = FakeAgent(machine)
    with bus.subscribe() as sub:
        machine.receive_events(agent.batch(2))
        machine.receive_events(agent.batch(1))
        agent.batch(3), agent.batch(2)  # published while nats-server was away
        machine.receive_events(agent.batch(2))  # a gap: 5 waits while 3 and 4 are asked for
        machine.receive_events(agent.batch(1))
        assert machine.batch == 2 and agent.asked == []
        await settle(machine)
        machine.receive_events(agent.batches[5])  # the same batch again: let go
        events, _ = sub.drain()
    assert agent.asked == [(3, 5)]
    sent = [e for e in events if e.type == "sent"]
    assert [int(e.text) for e in sent] == list(range(1, 12)), "in order, each once"
    assert [e.seq for e in events] == list(range(3, 3 + len(events)))
    [said] = [e for e in events if e.type == "machine"]
    assert said.message == "Machine b: 5 event(s) of the outage recovered from b's buffer"
    assert events[-1] is said and said.machine == "b"
    assert machine.missed == 2 and machine.sequence.recovered == 5
    assert machine.sequence.lost == 0 and machine.sequence.duplicates == 2


async def test_what_an_agent_no_longer_keeps_is_counted_exactly_and_said():
    bus = EventBus()
    machine = RemoteMachine("b", nc=None, bus=bus)
    agent = FakeAgent(machine)
    with bus.subscribe() as sub:
        machine.receive_events(agent.batch(2))
        agent.batch(4), agent.batch(3), agent.batch(1)
        agent.oldest = 4  # its buffer lets go of batches 2 and 3 (7 events)
        # a hello says 4 batches were published: 2-4 never will come by themselves
        machine.receive_hello({"boot": "x", "batches": 4, "total": agent.total})
        await settle(machine)
        events, _ = sub.drain()
    assert [int(e.text) for e in events if e.type == "sent"] == [1, 2, 10]
    said = events[-1].message
    assert said == ("Machine b: 1 event(s) of the outage recovered from b's buffer; 7 event(s) "
                    "lost (2 batch(es)): b's buffer no longer has them (it keeps its newest "
                    "32 MiB of batches)"), said
    assert machine.sequence.lost == 7 and machine.missed == 3 and machine.batch == 4


async def test_an_agent_that_does_not_answer_is_asked_again_then_its_gap_is_lost():
    bus = EventBus()
    machine = RemoteMachine("b", nc=None, bus=bus)
    agent = FakeAgent(machine)
    asked = []

    async def silent(first: int, before: int) -> dict:
        asked.append((first, before))
        raise Unreachable("Machine b did not answer within 5 s")
    machine.sequence.ask = silent
    with bus.subscribe() as sub:
        machine.receive_events(agent.batch(1))
        agent.batch(2)
        machine.receive_events(agent.batch(1))
        await settle(machine)
        events, _ = sub.drain()
    assert asked == [(2, 3)] * 3
    assert [int(e.text) for e in events if e.type == "sent"] == [1, 4]
    assert events[-1].message == ("Machine b: 2 event(s) lost (1 batch(es)): b did not answer "
                                  "when asked for them (Machine b did not answer within 5 s)")


async def test_a_batch_enters_the_bus_numbered_here_and_gaps_are_counted():
    bus = EventBus()
    bus.next_seq(), bus.next_seq()  # local events came first
    machine = RemoteMachine("b", nc=None, bus=bus)  # no connection: it cannot ask
    raw = Received(seq=900, time=1.0, worker="server-1", message="m", local=None,
                   peer=("198.18.50.3", 4000), size=3, text="abc").to_dict()
    with bus.subscribe() as sub:
        # joined late: batch 5 is the first heard, so 1-4 are not "missed"
        machine.receive_events({"boot": "x", "seq": 5, "events": [raw, raw]})
        machine.receive_events({"boot": "x", "seq": 8, "events": [raw]})
        events, _ = sub.drain()
    assert [e.seq for e in events] == [3, 4, 5, 6] and all(e.machine == "b" for e in events)
    assert [e.type for e in events] == ["received", "received", "received", "machine"]
    assert events[3].message == ("Machine b: 2 batch(es) of events lost (b is an older agent "
                                 "that does not count them): this dashboard cannot ask for "
                                 "them")
    assert machine.missed == 2 and machine.state == "up"
    machine.receive_events({"boot": "y", "seq": 1, "events": []})  # the agent restarted
    assert machine.missed == 2 and machine.batch == 1
    # a hello numbers the batches sent before it: those that did not come never will
    machine.receive_hello({"boot": "y", "batches": 4})
    assert machine.missed == 5 and machine.batch == 4
    machine.receive_events({"boot": "y", "seq": 5, "events": []})
    assert machine.missed == 5


async def test_both_machines_are_machines_and_the_local_one_is_the_default():
    async with Supervisor() as supervisor:
        local = LocalMachine(supervisor)
        assert isinstance(local, Machine)
        assert isinstance(RemoteMachine("b", nc=None, bus=supervisor.bus), Machine)
        fleet = Fleet(local)
        worker = await fleet.start({"kind": "server", "port": 0})
        assert worker["machine"] == "local" and ":" not in worker["id"]
        assert (await fleet.get(worker["id"]))["state"] == "running"
        assert [m["name"] for m in fleet.status()] == ["local"]
        assert fleet.status()[0]["state"] == "up" and fleet.status()[0]["local"] is True
        with pytest.raises(BadSpec, match="no machine 'b'"):
            await fleet.start({"kind": "server", "machine": "b"})
        with pytest.raises(UnknownWorker):
            await fleet.get("b:server-1")
        assert (await fleet.stop(worker["id"]))["state"] == "stopped"


async def test_a_late_report_completes_a_broadcast_once_and_only_within_its_window():
    from webapp.fleet.broadcasts import Broadcasts

    bus = EventBus()
    counted = []
    broadcasts = Broadcasts(bus, lambda name: {"198.18.50.2"}, 0.01, late=0.3,
                            count=lambda worker, more: counted.append((worker, more)))
    now = time.time()

    def sent(text: str) -> Event:
        return wire.event_from_agent(BroadcastSent(
            seq=1, time=now, worker="broadcast-1", message=f"Broadcast {text!r}; heard by x",
            local=("198.18.50.2", 5000), peer=("198.18.50.255", 1060), size=1, text=text,
            reached=["listener-1"]).to_dict(), "a", bus.next_seq(), "boot-a")

    def received(machine: str, text: str, late: float = 0.0, port: int = 5000) -> Event:
        return wire.event_from_agent(Received(
            seq=1, time=now + late, worker="listener-1", message="m", local=("0.0.0.0", 1060),
            peer=("198.18.50.2", port), size=1, text=text).to_dict(), machine, bus.next_seq())

    with bus.subscribe() as sub:
        broadcasts.hold(received("a", "one"))  # a's own listener, already in its reached
        assert broadcasts.hold(sent("one")) and broadcasts.hold(sent("one"))  # sent twice
        await asyncio.sleep(0.05)
        broadcasts.hear(received("b", "one", late=0.6))  # b read the first late
        broadcasts.hear(received("b", "two", late=0.6))  # another text: not this broadcast
        broadcasts.hear(received("c", "one", port=5001, late=0.6))  # another sender's port
        broadcasts.hear(received("b", "one", late=0.7))  # and then the second
        await asyncio.sleep(0.35)
        broadcasts.hear(received("c", "one", late=1.0))  # after the window: too late
        events, _ = sub.drain()
    first, second, late_first, late_second = events
    assert (first.type, second.type) == ("sent", "sent")
    assert first.reached == ["a:listener-1"] and second.reached == ["a:listener-1"]
    assert late_first.type == "reached" and late_first.of == first.seq
    assert late_first.added == ["b:listener-1"]
    assert late_first.reached == ["a:listener-1", "b:listener-1"]
    assert late_second.of == second.seq and late_second.reached == late_first.reached
    assert late_first.machine == "a" and late_first.worker == "a:broadcast-1"
    assert "b:listener-1 said so late" in late_first.message
    assert counted == [("a:broadcast-1", 1), ("a:broadcast-1", 1)]


async def test_once_reconnected_the_dashboard_asks_every_agent_how_far_it_got():
    """Batches an agent published while the dashboard was away from nats-server (its own
    reconnect came later) are asked for at once, not at the agent's next hello."""
    from webapp.fleet.config import Creds
    from webapp.fleet.connection import Connection

    async with Supervisor() as supervisor:
        fleet = Fleet(LocalMachine(supervisor))
        machine = fleet.machines["b"] = RemoteMachine("b", nc=None, bus=fleet.bus)
        agent = FakeAgent(machine)
        asked = []

        async def request(verb: str, **args) -> dict:
            asked.append(verb)
            return {"boot": "x", "batches": len(agent.batches), "total": agent.total}
        machine.request = request
        connection = Connection("nats://127.0.0.1:4222", Creds("dashboard", "secret"),
                                name="test")
        connection.on_reconnect.append(fleet._reconnected)
        with fleet.bus.subscribe() as sub:
            machine.receive_events(agent.batch(1))
            agent.batch(3)  # published while this dashboard was not connected
            await connection._reconnected()
            await settle(machine)
            events, _ = sub.drain()
    assert asked == ["hello"] and agent.asked == [(2, 3)]
    assert [int(e.text) for e in events if e.type == "sent"] == [1, 2, 3, 4]
    assert events[-1].message == "Machine b: 3 event(s) of the outage recovered from b's buffer"


def test_an_agents_message_names_the_api_calls_of_its_machine():
    """Every way the engine names a lab call, said for machine b (the real path, through an
    agent, is tests/fleet/test_fleet_lab.py); other calls and other words are left alone."""
    said = {
        "build it first (POST /api/lab, or the Lab panel)":
            "build it first (POST /api/lab?machine=b, or the Lab panel with b picked)",
        "build it first (the Lab panel, or POST /api/lab), then":
            "build it first (the Lab panel with b picked, or POST /api/lab?machine=b), then",
        "tear it down first (DELETE /api/lab)": "tear it down first (DELETE /api/lab?machine=b)",
        "see GET /api/lab.": "see GET /api/lab?machine=b.",
        "run POST /api/lab/scenarios/all-nodes": "run POST /api/lab/scenarios/all-nodes?machine=b",
        "already GET /api/lab?machine=b": "already GET /api/lab?machine=b",
        "list them with GET /api/recipes": "list them with GET /api/recipes",
        "POST /api/laboratory": "POST /api/laboratory",
        "Listening at ('198.18.1.2', 1060)": "Listening at ('198.18.1.2', 1060)",
    }
    assert {m: on_machine(m, "b") for m in said} == said
