"""The fleet: every machine the dashboard can drive, its own first.

The web layer asks the fleet, never NATS: a spec's `machine` picks where a worker starts
(default: the dashboard's own), and a worker id says where it lives (`b:client-1` is
`client-1` on machine b; an id without a machine is local).
"""

import asyncio
import ipaddress
import logging
import time
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, AsyncIterator

from webapp.engine import BadSpec, Conflict, EngineError, EventBus, Supervisor, UnknownWorker
from webapp.fleet import wire
from webapp.fleet.broadcasts import Broadcasts
from webapp.fleet.config import APP, Creds, FleetError, check_machine, subject
from webapp.fleet.machine import LocalMachine, Machine
from webapp.fleet.remote import LOST_AFTER, RemoteMachine, Unreachable, decode

if TYPE_CHECKING:  # the dashboard without --nats never loads the NATS client
    from nats.aio.msg import Msg

    from webapp.engine.history.recorder import Recorder
    from webapp.fleet.connection import Connection

log = logging.getLogger("udplab.fleet")


class UnknownMachine(EngineError):
    """An address names a machine the fleet does not have (`?machine=zz`)."""

    status = 404


class Fleet:
    """The local machine and every agent that has said hello."""

    def __init__(self, local: LocalMachine, *, lost_after: float = LOST_AFTER,
                 recorder: "Recorder | None" = None):
        self.local = local
        # The history records other machines' workers too (what the fleet knows of them),
        # and a restarted dashboard asks each agent to replay from what it already has.
        self.recorder = recorder
        if recorder is not None:
            recorder.describe = self.describe
        self.bus: EventBus = local.supervisor.bus
        self.lost_after = lost_after
        self.machines: dict[str, Machine] = {local.name: local}
        self.connection: Connection | None = None
        self._states: dict[str, str] = {}  # what the log last said of each machine
        self.broadcasts = Broadcasts(self.bus, self._addresses, local=local.name,
                                     count=self._count_reached)
        # a local broadcast's `reached` names the other machines' listeners that heard it
        local.supervisor.other_peers = lambda: self.broadcasts.remote_listeners(local.name)
        self._watch: asyncio.Task | None = None
        self._hear: asyncio.Task | None = None
        self._checks: set[asyncio.Task] = set()

    async def join(self, connection: "Connection") -> None:
        """Listen to every agent's hellos and events on an open connection."""
        self.connection = connection
        nc = connection.nc
        await nc.subscribe(subject("*", "hello"), cb=self._hello)
        await nc.subscribe(subject("*", "events"), cb=self._events)
        await nc.flush()
        await connection.check_refused()
        connection.on_reconnect.append(self._reconnected)
        self._watch = asyncio.create_task(self._watch_machines(), name="fleet watch")
        self._hear = asyncio.create_task(self.broadcasts.hear_local(), name="fleet broadcasts")

    async def _watch_machines(self, every: float = 1.0) -> None:
        """Say in the log when a machine goes silent or comes back (its state itself is
        computed whenever asked, from when it was last heard)."""
        while True:
            await asyncio.sleep(every)
            self.note_changes()

    def note_changes(self) -> None:
        """Publish a `machine` event for each machine whose state changed since last time."""
        for name, machine in list(self.machines.items()):
            state = machine.status()["state"]
            if self._states.get(name) == state:
                continue
            self._states[name] = state
            if state == "lost":
                message = (f"Machine {name} is lost: nothing heard from it for "
                           f"{self.lost_after:g} s; its workers' state is unknown")
            else:
                message = f"Machine {name} is up"
            self.bus.publish(wire.MachineChanged(seq=self.bus.next_seq(), time=time.time(),
                                                 worker=name, message=message,
                                                 machine=name, state=state))

    def _count_reached(self, worker_id: str, more: int) -> None:
        """A broadcast was heard by `more` listeners its worker did not count (of other
        machines, or whose report came late): its `reached` counter counts them too."""
        name, _ = wire.split_id(worker_id)
        if name is None:
            worker = self.local.supervisor.workers.get(worker_id)
            if worker is not None and "reached" in worker.counters:
                worker.counters["reached"] += more
        elif isinstance(machine := self.machines.get(name), RemoteMachine):
            machine.add_reached(worker_id, more)

    def _reconnected(self) -> None:
        """Connected again to nats-server: ask every agent how far it got, so batches it
        published meanwhile (while this dashboard was away) are asked for at once."""
        for machine in list(self.machines.values()):
            if isinstance(machine, RemoteMachine):
                task = asyncio.create_task(machine.check_in(), name=f"check {machine.name}")
                self._checks.add(task)
                task.add_done_callback(self._checks.discard)

    def _remote(self, msg: "Msg") -> RemoteMachine | None:
        # The subject is what nats-server let the sender publish on: it names the machine,
        # whatever the body says.
        parts = msg.subject.split(".")
        if len(parts) != 3 or parts[0] != APP:
            return None
        name = parts[1]
        machine = self.machines.get(name)
        if machine is None:
            try:
                check_machine(name)
            except FleetError:
                return None
            machine = self.machines[name] = RemoteMachine(
                name, self.connection.nc, self.bus, lost_after=self.lost_after)
            machine.hold = self.broadcasts.hold
            if self.recorder is not None:
                machine.resume_from = self.recorder.last_origin
            log.info("machine %s joined the fleet", name)
            self._states[name] = "lost"  # so that its first hello says it is up
        return machine if isinstance(machine, RemoteMachine) else None

    async def _hello(self, msg: "Msg") -> None:
        machine, body = self._remote(msg), decode(msg.data)
        if machine is not None and body is not None:
            machine.receive_hello(body)
            self.note_changes()  # back at once, not at the next watch

    async def _events(self, msg: "Msg") -> None:
        machine, body = self._remote(msg), decode(msg.data)
        if machine is not None and body is not None:
            machine.receive_events(body)

    def _addresses(self, name: str) -> set[str]:
        machine = self.machines.get(name)
        return {i["address"] for i in machine.status()["interfaces"]} if machine else set()

    def describe(self, worker_id: str) -> dict | None:
        """What the fleet last knew of another machine's worker (for the history)."""
        name, _ = wire.split_id(worker_id)
        machine = self.machines.get(name) if name is not None else None
        return machine.known(worker_id) if isinstance(machine, RemoteMachine) else None

    def machine(self, name: Any) -> Machine:
        """The machine called `name` (None: the local one); `BadSpec` if there is none."""
        if name is None or name == "":
            return self.local
        machine = self.machines.get(name) if isinstance(name, str) else None
        if machine is None:
            known = ", ".join(sorted(self.machines))
            raise BadSpec(f"There is no machine {name!r} in the fleet (machines: {known}); "
                          "start 'udplab agent' there first", field="machine")
        return machine

    def named(self, name: Any) -> Machine:
        """The machine an address names (`?machine=b`; None or "": the local one), with
        `machine()`'s sentence when there is none, as a 404: the address names nothing."""
        try:
            return self.machine(name)
        except BadSpec as exc:
            raise UnknownMachine(exc.message, field="machine") from None

    def locate(self, worker_id: str) -> tuple[Machine, str]:
        """The machine a fleet-wide worker id lives on, and its id there."""
        name, local_id = wire.split_id(worker_id)
        if name is None:
            return self.local, local_id
        machine = self.machines.get(name)
        if machine is None or machine is self.local:
            raise UnknownWorker(f"There is no worker {worker_id!r}: list them with "
                                "GET /api/workers")
        return machine, local_id

    async def start(self, spec: Any) -> dict[str, Any]:
        """Start a worker on the machine its spec names (`machine`, default local)."""
        if not isinstance(spec, dict):
            raise BadSpec("A worker spec must be a JSON object with a 'kind'")
        spec = dict(spec)
        machine = self.machine(spec.pop("machine", None))
        worker = await machine.start(await self._aim(machine, spec))
        return dict(worker, machine=machine.name)

    async def _aim(self, machine: Machine, spec: dict[str, Any]) -> dict[str, Any]:
        """An impostor's `target` names a client by its fleet-wide id: on the impostor's own
        machine the engine aims at it; on another, aim at that client's address there."""
        target = spec.get("target")
        if spec.get("kind") != "spoofer" or not isinstance(target, str) \
                or (wire.SEP not in target and machine is self.local):
            return spec
        # an id without a machine is this dashboard's own client, wherever the impostor goes
        where, client_id = self.locate(target)
        if where is machine:
            return {**spec, "target": client_id}
        if spec.get("forge"):
            raise BadSpec("Forging works only beside the client, on its own machine: put the "
                          f"impostor on {where.name}, or leave forge off", field="forge")
        client = await where.get(client_id)
        if client["kind"] != "client":
            raise BadSpec(f"{target} is a {client['kind']}, not a client to fool",
                          field="target")
        if not client["local"] or client["state"] not in ("running", "paused"):
            raise Conflict(f"Client {target} has no address to aim at yet (it has not sent "
                           "anything, or it has ended): start it, then the impostor",
                           field="target")
        host, port = client["local"]
        if host in ("0.0.0.0", "::", ""):
            host = self._address_of(where)
        elif _loopback(host):
            raise Conflict(f"Client {target} is bound to {host}, the loopback of machine "
                           f"{where.name}: no other machine can reach it. Put the impostor "
                           f"on {where.name}, or bind the client to an address of its LAN",
                           field="target")
        rest = {k: v for k, v in spec.items() if k != "target"}
        return {**rest, "host": host, "port": port}

    @staticmethod
    def _address_of(machine: Machine) -> str:
        """The machine's first IPv4 address that another machine can reach."""
        for address in machine.status()["interfaces"]:
            if "." in address["address"] and not address["address"].startswith("127."):
                return address["address"]
        raise Conflict(f"Machine {machine.name} has no address another machine can reach",
                       field="target")

    async def call(self, worker_id: str, method: str, *args: Any) -> Any:
        """Call a `Machine` method for a worker, on the machine that worker lives on."""
        machine, local_id = self.locate(worker_id)
        result = await getattr(machine, method)(local_id, *args)
        if isinstance(result, dict) and "id" in result:
            result = dict(result, machine=machine.name)
        return result

    async def stop(self, worker_id: str) -> dict[str, Any]:
        return await self.call(worker_id, "stop")

    async def remove(self, worker_id: str) -> dict[str, Any]:
        return await self.call(worker_id, "remove")

    async def get(self, worker_id: str) -> dict[str, Any]:
        return await self.call(worker_id, "get")

    async def events(self, worker_id: str) -> list[dict[str, Any]]:
        return await self.call(worker_id, "events")

    async def workers(self, *, local: bool = True) -> list[dict[str, Any]]:
        """Every worker of every machine that answers (a lost one's from memory); only the
        other machines' with `local=False`."""
        out = []
        for machine in list(self.machines.values()):
            if machine is self.local and not local:
                continue
            try:
                workers = await machine.workers()
            except Unreachable:
                continue  # it went silent between its hello and now: it is lost
            out.extend(dict(w, machine=machine.name) for w in workers)
        return out

    def status(self) -> list[dict[str, Any]]:
        """`GET /api/machines`: each machine's name, state, last seen, workers, addresses."""
        return [machine.status() for machine in self.machines.values()]

    async def close(self) -> None:
        """Leave the fleet (the local machine's workers are the supervisor's to stop)."""
        for task in (self._watch, self._hear, *self._checks):
            if task is not None:
                task.cancel()
                await asyncio.wait([task])
        tasks = [m.catching_up() for m in self.machines.values()
                 if isinstance(m, RemoteMachine)]
        await asyncio.gather(*[t for t in tasks if t is not None])
        if self.connection is not None:
            await self.connection.close()


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@asynccontextmanager
async def running(supervisor: Supervisor, url: str | None = None,
                  creds: Path | None = None, *,
                  recorder: "Recorder | None" = None) -> AsyncIterator[Fleet]:
    """The fleet of an app: just the local machine, or (with `url` and `creds`) joined to
    nats-server so that every agent's machine is in it too. `FleetError` if refused."""
    fleet = Fleet(LocalMachine(supervisor), recorder=recorder)
    if url is None and creds is None:
        yield fleet
        return
    if url is None or creds is None:
        raise FleetError("joining a fleet needs both --nats URL and --creds FILE")
    from webapp.fleet.connection import Connection

    loaded = Creds.load(creds)
    if loaded.machine is not None:
        raise FleetError(f"{creds} holds the credentials of machine {loaded.user!r}: the "
                         "dashboard needs dashboard.creds from fleet init")
    connection = Connection(url, loaded, name="udplab-dashboard",
                            say=lambda line: log.warning("%s", line))
    await connection.open()
    try:
        await fleet.join(connection)
        log.info("joined the fleet at %s", url)
        yield fleet
    finally:
        await fleet.close()
