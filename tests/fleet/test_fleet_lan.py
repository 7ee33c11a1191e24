"""Agents as separate `udplab agent` processes, each in its own network namespace on a bridge
this test made, driven from an in-process `Fleet` (the dashboard's side) over nats-server."""

import asyncio
import contextlib
import dataclasses
import ipaddress
import signal
import subprocess
import time
from pathlib import Path

import pytest

from webapp.engine import BadSpec, Conflict, Refused, Supervisor, UnknownWorker
from webapp.fleet.connection import Connection
from webapp.fleet.fleet import Fleet
from webapp.fleet.machine import LocalMachine
from webapp.fleet.remote import RemoteMachine, Unreachable


async def until(predicate, what: str, timeout: float = 10.0, state=lambda: "") -> None:
    try:
        async with asyncio.timeout(timeout):
            while not predicate():
                await asyncio.sleep(0.05)
    except TimeoutError:
        pytest.fail(f"timed out after {timeout} s waiting for {what} {state()}")


@pytest.fixture
async def dashboard(lan_fleet):
    """The dashboard's side: a supervisor, its bus, and a fleet that joined nats-server."""
    lan, server = lan_fleet
    async with Supervisor() as supervisor:
        fleet = Fleet(LocalMachine(supervisor))
        connection = Connection(server.url, server.creds("dashboard"), name="test dashboard")
        await connection.open()
        try:
            await fleet.join(connection)
            await until(lambda: {"a", "b"} <= set(fleet.machines), "hellos from a and b")
            yield fleet
        finally:
            for worker in await fleet.workers():
                if worker["machine"] != "local" and worker["state"] in ("running", "paused"):
                    await fleet.remove(worker["id"])
            await fleet.close()


async def test_agents_say_hello_with_their_addresses(dashboard, lan_fleet):
    lan, _ = lan_fleet
    status = {m["name"]: m for m in dashboard.status()}
    assert status["local"]["local"] is True and status["local"]["state"] == "up"
    for name in ("a", "b"):
        machine = status[name]
        assert machine["state"] == "up" and machine["local"] is False
        assert machine["version"] and time.time() - machine["seen"] < 5
        assert {"interface": "eth0", "address": lan.hosts[name], "prefix": 24} \
            in machine["interfaces"], machine["interfaces"]
    # and its own interfaces, asked over request/reply, are its namespace's: eth0 and lo
    names = {i["name"] for i in await dashboard.machine("b").interfaces()}
    assert names == {"lo", "eth0"}


async def test_a_round_trip_across_machines(dashboard, lan_fleet):
    """udp_remote.py's server on machine a, its client on machine b, to a's LAN address."""
    lan, _ = lan_fleet
    bus = dashboard.bus
    with bus.subscribe() as sub:
        server = await dashboard.start({"machine": "a", "kind": "server",
                                        "host": lan.hosts["a"], "port": 1060})
        assert server["id"].startswith("a:server-") and server["machine"] == "a"
        assert server["local"] == [lan.hosts["a"], 1060] and server["state"] == "running"
        client = await dashboard.start({"machine": "b", "kind": "client", "host": lan.hosts["a"],
                                        "port": 1060, "count": 3, "interval": 0.05})
        assert client["id"].startswith("b:client-")
        seen = []

        def replies() -> int:
            events, _ = sub.drain()
            seen.extend(events)
            return sum(1 for e in seen if e.type == "reply" and e.worker == client["id"])

        await until(lambda: replies() >= 3, "three replies on machine b")
    received = [e for e in seen if e.type == "received" and e.worker == server["id"]]
    assert len(received) == 3 and all(e.machine == "a" for e in received)
    # the server saw the client's LAN address: they really are two machines
    assert {e.peer[0] for e in received} == {lan.hosts["b"]}
    reply = next(e for e in seen if e.type == "reply")
    assert reply.machine == "b" and reply.peer == (lan.hosts["a"], 1060)
    assert reply.text == "Your data was 38 bytes long" or reply.text.startswith("Your data was")
    seqs = [e.seq for e in seen]
    assert seqs == sorted(seqs), "events from agents are numbered by the dashboard's bus"
    # the worker and its kept events, asked by fleet-wide id
    assert (await dashboard.get(client["id"]))["state"] in ("running", "finished")
    kept = await dashboard.events(client["id"])
    assert [e["type"] for e in kept].count("reply") == 3
    assert all(e["machine"] == "b" and e["worker"] == client["id"] for e in kept)
    stopped = await dashboard.stop(server["id"])
    assert stopped["state"] == "stopped" and stopped["id"] == server["id"]


async def test_events_come_in_batches_not_one_message_per_datagram(dashboard, lan_fleet):
    lan, _ = lan_fleet
    machine: RemoteMachine = dashboard.machine("a")
    await dashboard.start({"machine": "a", "kind": "server", "host": "127.0.0.1",
                           "port": 1070, "name": "batch-server"})
    before_events, before_batches = machine.received, machine.batch
    await dashboard.start({"machine": "a", "kind": "client", "host": "127.0.0.1", "port": 1070,
                           "count": 200, "interval": 0, "name": "batch-client"})
    await until(lambda: machine.received - before_events >= 4 * 200, "800 events from a")
    batches = machine.batch - before_batches
    assert 1 <= batches <= (machine.received - before_events) / 10, batches
    assert machine.missed == 0


async def test_mistakes_come_back_as_the_engines_errors(dashboard, lan_fleet):
    lan, _ = lan_fleet
    with pytest.raises(BadSpec, match="no machine 'z'") as exc:
        await dashboard.start({"machine": "z", "kind": "server"})
    assert exc.value.field == "machine"
    with pytest.raises(BadSpec) as exc:
        await dashboard.start({"machine": "a", "kind": "server", "port": "no such port!"})
    assert exc.value.field == "port"
    await dashboard.start({"machine": "a", "kind": "server", "host": lan.hosts["a"],
                           "port": 1061, "name": "taken"})
    with pytest.raises(Conflict, match="already"):
        await dashboard.start({"machine": "a", "kind": "server", "host": lan.hosts["a"],
                               "port": 1061})
    # the agent's own flags bound its workers: only its LAN was allowed (--allow-net)
    with pytest.raises(Refused):
        await dashboard.start({"machine": "b", "kind": "client", "host": "192.0.2.1",  # refused
                               "port": 9})
    with pytest.raises(UnknownWorker):
        await dashboard.get("a:nobody")
    with pytest.raises(UnknownWorker):
        await dashboard.get("z:nobody")
    with pytest.raises(Unreachable, match="not connected"):
        await RemoteMachine("c", dashboard.connection.nc, dashboard.bus).get("server-1")


def test_wrong_or_borrowed_credentials_end_the_agent_with_one_line(lan_fleet, tmp_path):
    lan, server = lan_fleet
    # c's own name with b's file: refused before connecting
    agent = lan.agent(server, "c", creds="b", wait=False)
    assert agent.proc.wait(timeout=20) != 0
    assert "holds the credentials of 'b', not of 'c'" in agent.stderr()
    # a wrong secret: nats-server refuses it
    wrong = server.dir / "wrong.creds"
    creds = server.creds("c")
    wrong.write_text(creds.to_json().replace(creds.password, creds.password[:-2] + "zz"))
    (server.dir / "c.creds").rename(server.dir / "c-good.creds")
    try:
        wrong.rename(server.dir / "c.creds")
        agent = lan.agent(server, "c", wait=False)
        assert agent.proc.wait(timeout=20) != 0
    finally:
        (server.dir / "c-good.creds").replace(server.dir / "c.creds")
    err = agent.stderr()
    assert "refused the credentials of 'c'" in err and "Authorization Violation" in err
    for text in (err, lan.agents[-2].stderr()):
        assert "Traceback" not in text and len(text.strip().splitlines()) == 1, text


async def test_a_killed_agent_is_lost_then_up_again_when_it_returns(dashboard, lan_fleet):
    lan, server = lan_fleet
    agent = lan.agent(server, "c")
    await until(lambda: "c" in dashboard.machines, "a hello from c")
    worker = await dashboard.start({"machine": "c", "kind": "server", "host": lan.hosts["c"],
                                    "port": 1062})
    assert [m["state"] for m in dashboard.status() if m["name"] == "c"] == ["up"]
    sub = dashboard.bus.subscribe()
    agent.proc.send_signal(signal.SIGKILL)
    agent.proc.wait(timeout=5)
    killed = time.monotonic()
    await until(lambda: dashboard.machine("c").status()["state"] == "lost", "c lost",
                timeout=15)
    assert 8 < time.monotonic() - killed < 15
    said = []

    def heard(count: int) -> bool:
        said.extend(e for e in sub.drain()[0] if e.type == "machine")
        return len(said) >= count

    await until(lambda: heard(1), "the log saying c is lost", timeout=3)
    assert [(e.machine, e.state) for e in said] == [("c", "lost")]
    assert "Machine c is lost" in said[0].message and said[0].to_dict()["machine"] == "c"
    lost = [w for w in await dashboard.workers() if w["id"] == worker["id"]]
    assert lost and lost[0]["state"] == "lost"  # not `running`: nobody knows
    with pytest.raises(Unreachable):
        await dashboard.get(worker["id"])
    lan.agent(server, "c")
    await until(lambda: dashboard.machine("c").status()["state"] == "up", "c up again",
                timeout=10)
    await until(lambda: heard(2), "the log saying c is up", timeout=3)
    sub.close()
    assert [(e.machine, e.state) for e in said] == [("c", "lost"), ("c", "up")]
    assert await dashboard.machine("c").workers() == []  # a new run: its old workers died


async def test_sigterm_stops_an_agent_and_its_workers(dashboard, lan_fleet):
    lan, server = lan_fleet
    for old in [a for a in lan.agents if a.name == "c"]:
        old.stop()
    agent = lan.agent(server, "c")
    await until(lambda: "c" in dashboard.machines
                and dashboard.machine("c").boot is not None
                and dashboard.machine("c").status()["state"] == "up", "c up")
    await dashboard.start({"machine": "c", "kind": "server", "host": lan.hosts["c"],
                           "port": 1063})
    with dashboard.bus.subscribe() as sub:
        agent.proc.send_signal(signal.SIGTERM)
        assert agent.proc.wait(timeout=10) == 0
        await asyncio.sleep(0.3)
        events, _ = sub.drain()
    err = agent.stderr()
    assert "stopped: every worker's socket is closed" in err and "Traceback" not in err, err
    # its last batch said so before it left
    assert any(e.type == "stopped" and e.worker.startswith("c:server-") for e in events)


async def test_a_cut_cable_makes_a_machine_lost_and_its_workers_are_adopted_back(
        dashboard, lan_fleet):
    """The agent keeps running while its machine is cut off; when it is back, so is its
    still-running worker."""
    lan, _ = lan_fleet
    server = await dashboard.start({"machine": "b", "kind": "server", "host": lan.hosts["b"],
                                    "port": 1064})
    machine = dashboard.machine("b")
    try:
        subprocess.run(["ip", "-n", lan.ns("b"), "link", "set", "eth0", "down"], check=True,
                       timeout=10)
        await until(lambda: machine.state == "lost", "b lost", timeout=15)
        assert [w["state"] for w in await dashboard.workers()
                if w["id"] == server["id"]] == ["lost"]
    finally:
        subprocess.run(["ip", "-n", lan.ns("b"), "link", "set", "eth0", "up"], check=True,
                       timeout=10)
    await until(lambda: machine.state == "up", "b up again", timeout=20)
    adopted = [w for w in await dashboard.workers() if w["id"] == server["id"]]
    assert adopted and adopted[0]["state"] == "running", adopted
    assert (await dashboard.stop(server["id"]))["state"] == "stopped"


async def test_agents_and_dashboard_reconnect_after_nats_server_restarts(dashboard, lan_fleet):
    lan, server = lan_fleet
    # a fresh run of c: the flood's kept batches stay out of a's memory (its RSS is measured)
    for old in [a for a in lan.agents if a.name == "c"]:
        old.stop()
    agent = lan.agent(server, "c")
    await until(lambda: "c" in dashboard.machines
                and dashboard.machine("c").status()["state"] == "up", "c up")
    machine = dashboard.machine("c")
    await until(lambda: machine.hello.get("boot") == machine.boot is not None, "c's new run")
    boot = machine.boot
    # workers keep talking meanwhile, more than the client's 2 MiB buffer holds offline
    # (two floods through the outage: ~2.5 MB/s of rows, and the CPU is shared)
    for port in (1068, 1069):
        await dashboard.start({"machine": "c", "kind": "server", "host": "127.0.0.1",
                               "port": port, "reply": "none"})
    for port in (1068, 1069):
        await dashboard.start({"machine": "c", "kind": "spoofer", "host": "127.0.0.1",
                               "port": port, "count": 8000, "interval": 0.001,
                               "message": "z" * 300})
    server.stop()
    await asyncio.sleep(3)
    server.start()
    # commands work again once both sides are back (each retries every second)
    deadline = time.monotonic() + 20
    while True:
        try:
            workers = await machine.workers()
            break
        except Unreachable:
            assert time.monotonic() < deadline, "c never answered after the restart"
            await asyncio.sleep(0.5)
    assert isinstance(workers, list)
    seen = machine.seen
    await until(lambda: machine.seen > seen + 1, "a hello from c after the restart")
    assert machine.boot == boot and machine.state == "up"  # the same run of the agent
    assert agent.proc.poll() is None, agent.stderr()
    # what could not be sent while offline is a gap the dashboard asks c for again: none lost
    sequence = machine.sequence
    await until(lambda: machine.missed > 0 and machine.batch >= sequence.top,
                "the gap in c's batches filled", timeout=10,
                state=lambda: f"missed {sequence.missed}, batch {sequence.batch}, top "
                f"{sequence.top}, held {sorted(sequence.held)[:5]}…, recovered "
                f"{sequence.recovered}, lost {sequence.lost}")
    assert machine.sequence.recovered > 0 and machine.sequence.lost == 0
    logged = agent.stderr()
    assert "reconnecting" in logged and "connected again" in logged, logged


async def test_an_impostor_on_one_machine_fools_a_client_on_another(dashboard, lan_fleet):
    """The book's unwelcome reply across machines: the server on a is paused, the
    promiscuous client on b waits, and an impostor on a (not the server's port) answers."""
    lan, _ = lan_fleet
    server = await dashboard.start({"machine": "a", "kind": "server", "host": lan.hosts["a"],
                                    "port": 1066})
    await dashboard.call(server["id"], "pause")
    with dashboard.bus.subscribe() as sub:
        client = await dashboard.start({"machine": "b", "kind": "client",
                                        "host": lan.hosts["a"], "port": 1066,
                                        "mode": "promiscuous", "timeout": 5.0,
                                        "give_up_after": 5.0})
        seen = []

        def saw(kind: str) -> bool:
            seen.extend(sub.drain()[0])
            return any(e.type == kind and e.worker == client["id"] for e in seen)

        await until(lambda: saw("waiting"), "the client on b to wait")
        impostor = await dashboard.start({"machine": "a", "kind": "spoofer",
                                          "target": client["id"]})
        assert impostor["id"].startswith("a:spoofer-")
        assert impostor["target"] == [lan.hosts["b"], client_port(await dashboard.get(
            client["id"]))]
        await until(lambda: saw("reply"), "the impostor's FAKE on b")
    reply = next(e for e in seen if e.type == "reply" and e.worker == client["id"])
    assert reply.text == "FAKE" and reply.expected is False and reply.machine == "b"
    assert reply.peer[0] == lan.hosts["a"] and reply.peer[1] != 1066
    with pytest.raises(BadSpec, match="Forging works only beside the client"):
        await dashboard.start({"machine": "a", "kind": "spoofer", "target": client["id"],
                               "forge": True})
    await dashboard.stop(server["id"])


def client_port(client: dict) -> int:
    return client["local"][1]


async def test_a_flood_of_long_rows_crosses_in_messages_nats_server_accepts(dashboard,
                                                                             lan_fleet):
    """Every datagram shown (--events-per-second 0) with 300-byte payloads: more than 1 MiB
    of rows in one flush, so batches are cut by size (nats-server refuses bigger messages);
    none is lost and the agent lives."""
    lan, server = lan_fleet
    for old in [a for a in lan.agents if a.name == "c"]:
        old.stop()
    agent = lan.agent(server, "c", extra=("--events-per-second", "0"))
    await until(lambda: "c" in dashboard.machines
                and dashboard.machine("c").status()["state"] == "up", "c up")
    machine = dashboard.machine("c")
    await until(lambda: machine.hello.get("boot") == machine.boot is not None, "c's new run")
    # A big receive buffer: the server reads on its own thread, as another program would, so
    # on a loaded machine a default buffer (~200 of these datagrams) can overflow while that
    # thread waits for a core; what this test is about is the rows' way to the dashboard.
    target = await dashboard.start({"machine": "c", "kind": "server", "host": "127.0.0.1",
                                    "port": 1067, "reply": "none", "rcvbuf": 4 << 20})
    batches = machine.batch
    seen = []

    def rows(worker: dict, kind: str) -> int:
        return sum(1 for e in seen if e.worker == worker["id"] and e.type == kind)

    def every_row_came() -> bool:
        seen.extend(sub.drain()[0])
        return rows(flood, "sent") == 10000

    with dashboard.bus.subscribe(maxlen=100_000) as sub:
        # 10000 datagrams as fast as they go: a `sent` and a `received` row of ~700 bytes each
        flood = await dashboard.start({"machine": "c", "kind": "spoofer", "host": "127.0.0.1",
                                       "port": 1067, "count": 10000, "interval": 0,
                                       "message": "y" * 300})
        await until(every_row_came, "every sent row from c", timeout=40)
    assert agent.proc.poll() is None, agent.stderr()
    assert machine.missed == 0
    counters = (await dashboard.get(target["id"]))["counters"]
    received = counters["received"]
    assert received > 9000 and rows(target, "received") == received, counters
    assert machine.batch - batches >= 5  # cut by size: several messages a flush


async def test_a_subnet_broadcast_reaches_listeners_on_every_machine(dashboard, lan_fleet):
    """Listing 2-4 across the LAN: a broadcast from machine a to the subnet's broadcast
    address is heard by listeners on a, b and c, and its `reached` names all three."""
    lan, server = lan_fleet
    for old in [a for a in lan.agents if a.name == "c"]:
        old.stop()
    lan.agent(server, "c")
    await until(lambda: "c" in dashboard.machines
                and dashboard.machine("c").status()["state"] == "up", "c up")
    listeners = [await dashboard.start({"machine": m, "kind": "listener", "port": 1071})
                 for m in ("a", "b", "c")]
    # a listener on another port of c hears nothing: it must not be named
    deaf = await dashboard.start({"machine": "c", "kind": "listener", "port": 1072})
    with dashboard.bus.subscribe() as sub:
        sender = await dashboard.start({"machine": "a", "kind": "broadcast",
                                        "host": f"{lan.hosts['a'].rsplit('.', 1)[0]}.255",
                                        "port": 1071, "count": 2, "interval": 0.2,
                                        "message": "to every machine"})
        seen = []

        def sent() -> list:
            seen.extend(sub.drain()[0])
            return [e for e in seen if e.worker == sender["id"] and e.type == "sent"]

        await until(lambda: len(sent()) == 2, "both broadcasts", timeout=10)
    names = sorted(w["id"] for w in listeners)
    assert [e.reached for e in sent()] == [names, names]
    # a's worker counted its own listener twice; the fleet counts b's and c's too
    assert (await dashboard.get(sender["id"]))["counters"]["reached"] == 6
    assert all(e.machine == "a" for e in sent())
    assert names[1] in sent()[0].message and names[2] in sent()[0].message
    heard = [e for e in seen if e.type == "received" and e.worker in names]
    assert len(heard) == 6 and not [e for e in seen if e.worker == deaf["id"]
                                    and e.type == "received"]
    seqs = [e.seq for e in seen]
    assert seqs == sorted(seqs), "a held broadcast is numbered when it enters the bus"


def test_an_agent_loads_no_web_library(lan_fleet):
    """`udplab agent` dispatches before the dashboard's web stack is imported: a lab PC's
    agent stays small (FastAPI's pydantic core is a shared library: its mapping shows it)."""
    lan, _ = lan_fleet
    agent = next(a for a in lan.agents if a.name == "a" and a.proc.poll() is None)
    maps = Path(f"/proc/{agent.proc.pid}/maps").read_text()
    assert "python" in maps
    assert "pydantic_core" not in maps
    status = Path(f"/proc/{agent.proc.pid}/status").read_text()
    rss = int(next(line for line in status.splitlines() if line.startswith("VmRSS:")).split()[1])
    assert rss < 45 * 1024, f"agent RSS {rss} KiB"


async def test_a_remote_broadcast_names_the_dashboards_own_listeners(dashboard, lan_fleet):
    """The dashboard's machine is on the agents' subnet (the bridge): its own listener on
    0.0.0.0 hears machine a's subnet broadcast, and `reached` names it beside b's."""
    lan, _ = lan_fleet
    text = f"to the teacher too {time.monotonic_ns()}"  # told apart from any other run's
    # a's addresses (from its hello: its first message here may be a late batch of events)
    await until(lambda: dashboard.machine("a").status()["interfaces"], "a hello from a")
    remote = await dashboard.start({"machine": "b", "kind": "listener", "port": 1073})
    local = await dashboard.start({"kind": "listener", "port": 1073})
    assert local["machine"] == "local"
    with dashboard.bus.subscribe() as sub:
        sender = await dashboard.start({"machine": "a", "kind": "broadcast",
                                        "host": f"{lan.hosts['a'].rsplit('.', 1)[0]}.255",
                                        "port": 1073, "count": 1, "message": text})
        seen = []

        def sent() -> list:
            seen.extend(sub.drain()[0])
            return [e for e in seen if e.worker == sender["id"] and e.type == "sent"]

        await until(lambda: len(sent()) == 1, "the broadcast", timeout=10)
    heard = [e for e in seen if e.type == "received" and e.worker == local["id"]]
    assert [e.peer[0] for e in heard] == [lan.hosts["a"]], "the bridge did not carry it"
    assert sent()[0].reached == sorted([remote["id"], local["id"]])
    assert local["id"] in sent()[0].message
    await dashboard.remove(local["id"])


@contextlib.asynccontextmanager
async def listening_on_the_bridge(dashboard, lan, port: int):
    """The set-up of a broadcast from the dashboard's own machine: hellos from a and b, a
    listener on each at `port`, and the dashboard's policy widened to the test's bridge (as
    `udplab --allow-net` would) while the block runs. Yields the subnet's broadcast address
    and the two listeners (a's first)."""
    subnet = lan.hosts["a"].rsplit(".", 1)[0]
    await until(lambda: dashboard.machine("a").status()["interfaces"]
                and dashboard.machine("b").status()["interfaces"], "hellos from a and b")
    listeners = [await dashboard.start({"machine": m, "kind": "listener", "port": port})
                 for m in ("a", "b")]
    supervisor = dashboard.local.supervisor
    policy = supervisor.policy
    supervisor.policy = dataclasses.replace(policy, allowed_networks=(
        ipaddress.ip_network(f"{subnet}.0/24"),))
    try:
        yield f"{subnet}.255", listeners
    finally:
        supervisor.policy = policy


async def test_a_local_broadcast_names_the_listeners_of_other_machines(dashboard, lan_fleet):
    """The dashboard's own machine broadcasts on the bridge's subnet: `reached` names the
    listeners of a and b that heard it (their agents said so within the sender's wait)."""
    lan, _ = lan_fleet
    text = f"from the teacher {time.monotonic_ns()}"
    async with listening_on_the_bridge(dashboard, lan, 1074) as (broadcast, listeners):
        with dashboard.bus.subscribe() as sub:
            sender = await dashboard.start({"kind": "broadcast", "port": 1074, "count": 1,
                                            "host": broadcast, "message": text})
            seen = []

            def sent() -> list:
                seen.extend(sub.drain()[0])
                return [e for e in seen if e.worker == sender["id"] and e.type == "sent"]

            await until(lambda: len(sent()) == 1, "the broadcast", timeout=10)
    assert sent()[0].reached == sorted(w["id"] for w in listeners)
    assert listeners[0]["id"] in sent()[0].message
    await dashboard.remove(sender["id"])


@contextlib.asynccontextmanager
async def stopped(agent, seconds: float):
    """The agent's process stopped (SIGSTOP) while the block runs and `seconds` after it
    began: a loaded machine whose listener reads, and reports, late."""
    began = time.monotonic()
    agent.proc.send_signal(signal.SIGSTOP)
    try:
        yield
        await asyncio.sleep(max(0.0, seconds - (time.monotonic() - began)))
    finally:
        agent.proc.send_signal(signal.SIGCONT)


def running_agent(lan, name: str):
    return next(a for a in lan.agents if a.name == name and a.proc.poll() is None)


async def test_a_listener_that_reports_late_is_named_in_reached_in_the_end(dashboard,
                                                                          lan_fleet):
    """b's agent is stopped for 1 s around a's subnet broadcast, so a's `sent` enters the
    bus before b's listener has read the datagram; when b's report comes, a `reached` event
    completes the broadcast: it names b's listener too, and the whole list."""
    lan, _ = lan_fleet
    text = f"heard late {time.monotonic_ns()}"
    await until(lambda: dashboard.machine("a").status()["interfaces"], "a hello from a")
    listeners = [await dashboard.start({"machine": m, "kind": "listener", "port": 1076})
                 for m in ("a", "b")]
    names = sorted(w["id"] for w in listeners)
    seen = []

    def of_sender(kind: str) -> list:
        seen.extend(sub.drain()[0])
        return [e for e in seen if e.worker == sender["id"] and e.type == kind]

    with dashboard.bus.subscribe() as sub:
        async with stopped(running_agent(lan, "b"), 1.0):
            sender = await dashboard.start({"machine": "a", "kind": "broadcast",
                                            "host": f"{lan.hosts['a'].rsplit('.', 1)[0]}.255",
                                            "port": 1076, "count": 1, "message": text})
            await until(lambda: of_sender("sent"), "a's broadcast", timeout=5)
        await until(lambda: of_sender("reached"), "b's late report", timeout=5)
        await asyncio.sleep(0.3)
        of_sender("reached")
    [sent] = of_sender("sent")
    assert sent.reached == [listeners[0]["id"]], "b's report was not late: nothing tested"
    [late] = of_sender("reached")
    assert late.reached == names and late.added == [listeners[1]["id"]]
    assert late.of == sent.seq and late.machine == "a" and late.text == text
    assert late.seq > sent.seq and late.to_dict()["reached"] == names
    assert listeners[1]["id"] in late.message and "said so late" in late.message
    # a counted its own listener; the fleet counts b's too
    assert (await dashboard.get(sender["id"]))["counters"]["reached"] == 2


async def test_a_local_broadcast_names_a_late_listener_of_another_machine(dashboard, lan_fleet):
    """The dashboard's own broadcast, b's agent stopped for 1 s: its worker's `sent` names
    a's listener; b's late report adds b's and counts it on the worker."""
    lan, _ = lan_fleet
    text = f"from the teacher, heard late {time.monotonic_ns()}"
    seen = []

    def of_sender(kind: str) -> list:
        seen.extend(sub.drain()[0])
        return [e for e in seen if e.worker == sender["id"] and e.type == kind]

    async with listening_on_the_bridge(dashboard, lan, 1077) as (broadcast, listeners):
        with dashboard.bus.subscribe() as sub:
            async with stopped(running_agent(lan, "b"), 1.0):
                sender = await dashboard.start({"kind": "broadcast", "port": 1077, "count": 1,
                                                "host": broadcast, "message": text})
                await until(lambda: of_sender("sent"), "the broadcast", timeout=5)
            await until(lambda: of_sender("reached"), "b's late report", timeout=5)
    [sent] = of_sender("sent")
    assert sent.reached == [listeners[0]["id"]], "b's report was not late: nothing tested"
    [late] = of_sender("reached")
    assert late.reached == sorted(w["id"] for w in listeners)
    assert late.added == [listeners[1]["id"]] and not hasattr(late, "machine")
    assert (await dashboard.get(sender["id"]))["counters"]["reached"] == 2
    await dashboard.remove(sender["id"])
