"""The supervisor: starts, lists and stops workers, and owns every worker task.

Use it as `async with Supervisor() as supervisor:`; leaving the block stops every worker
and closes every socket.
"""

import asyncio
import dataclasses
import socket
import time
from collections.abc import Callable
from typing import Any

from webapp.engine.bus import EventBus
from webapp.engine.errors import BadSpec, Conflict, TooMany, UnknownWorker
from webapp.engine.events import Address, Error, Event, Removed, Stopped
from webapp.engine.lab import Lab
from webapp.engine.policy import Policy
from webapp.engine.specs import Spec, SpooferSpec, kind_name, parse_spec
from webapp.engine.udp import Target, plain_ip, resolve
from webapp.engine.workers import WORKER_CLASSES, Worker


class Supervisor:
    """Owns the workers of one app: their tasks, sockets and event history."""

    def __init__(self, bus: EventBus | None = None, *, history: int = 1000,
                 policy: Policy | None = None, lab: Lab | None = None, keep_ended: int = 200):
        self.bus = bus or EventBus()
        self.policy = policy or Policy()
        self.lab = lab or Lab()
        self.history = history
        self.keep_ended = keep_ended  # ended workers kept listed, the newest; the rest forgotten
        self.workers: dict[str, Worker] = {}
        # Called with a worker just before it is forgotten (removed, or cleared past
        # `keep_ended`), so the history can take its final state first.
        self.on_forget: list[Callable[[Worker], None]] = []
        # Who else a broadcast may have reached (the fleet's: other machines' listeners),
        # each with the `id` and `heard_from` of a worker.
        self.other_peers: Callable[[], list] = list
        self._number = 0  # the last number an unnamed worker got ("server-3")
        # Starts between their checks and their insert: the slots and names they hold. The
        # checks and the reservation happen before the first `await`, so concurrent starts
        # can neither exceed the cap nor share a name.
        self._starting = 0
        self._names: set[str] = set()
        self._closing = False
        self._lab_lock = asyncio.Lock()
        self._group: asyncio.TaskGroup | None = None
        self._spawned: set[asyncio.Task] = set()

    async def __aenter__(self) -> "Supervisor":
        self._group = asyncio.TaskGroup()
        await self._group.__aenter__()
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        self._closing = True  # a start still resolving a name ends with an error, not a worker
        for task in self._spawned:
            task.cancel()
        await self.stop_all()
        async with self._lab_lock:  # a build in progress finishes first (it runs in a thread)
            if self.lab.built:
                await asyncio.get_running_loop().run_in_executor(None, self.lab.teardown)
        group, self._group = self._group, None
        await group.__aexit__(*exc_info)

    async def start(self, raw: Any) -> Worker:
        """Check `raw`, open the worker's socket and start it; raise `EngineError` if not."""
        if self._group is None:
            raise RuntimeError("use the supervisor inside 'async with'")
        spec = parse_spec(raw)
        self._reserve(spec)
        try:
            return await self._start(spec)
        finally:
            self._starting -= 1
            self._names.discard(spec.name)

    def _reserve(self, spec: Spec) -> None:
        """Hold a slot under the cap, and the name if there is one, for a start in progress.

        Nothing here awaits: the checks and the reservation happen as one step."""
        if self._closing:
            raise Conflict("UDP Lab is shutting down: it starts no more workers")
        alive = sum(1 for w in self.workers.values() if w.alive) + self._starting
        if alive >= self.policy.max_workers:
            raise TooMany(f"{alive} workers are running or starting, the most this app "
                          "allows: stop some (or Clear ended), or start udplab with a higher "
                          "--max-workers")
        if spec.name is not None and (spec.name in self.workers or spec.name in self._names):
            raise Conflict(
                f"A worker named {spec.name!r} already exists: pick another name, "
                "or stop and remove that one first",
                field="name",
            )
        self._starting += 1
        if spec.name is not None:
            self._names.add(spec.name)

    def _next_number(self, kind: str) -> int:
        """The number for an unnamed worker; taken for good only once it has started, so a
        refused start uses none up."""
        number = self._number + 1
        while f"{kind}-{number}" in self.workers or f"{kind}-{number}" in self._names:
            number += 1
        return number

    async def _start(self, spec: Spec) -> Worker:
        source, local = None, True
        if isinstance(spec, SpooferSpec) and spec.target:
            target, source = self._victim(spec.target, spec.where)
            if spec.forge and target.family == socket.AF_INET6:
                target, source = self._as_ipv4(target, source)
            self.policy.check(spec.kind, [target.address[0]], in_lab=bool(spec.where))
            if spec.forge and target.family != socket.AF_INET:
                raise BadSpec("Forging builds IPv4 packets only: aim at an IPv4 client, or "
                              "an IPv6 client of an IPv4 server (::ffff:a.b.c.d)",
                              field="forge")
        else:
            # A link-local scope (`%eth0`) names an interface of the host the socket lives on.
            netns = self.lab.host(spec.where).namespace if spec.where else None
            target = await resolve(spec.host, spec.port, netns=netns,
                                   passive=spec.kind in ("server", "listener"))
            local = self.policy.check(spec.kind, list(target.addresses or [target.address[0]]),
                                      in_lab=bool(spec.where),
                                      interface=getattr(spec, "interface", None),
                                      ttl=getattr(spec, "ttl", None))
            if spec.where:
                target = dataclasses.replace(target, netns=self.lab.host(spec.where).namespace)
        # From here to the insert nothing awaits: the id chosen is still free when it is used.
        if self._closing or self._group is None:
            raise Conflict("UDP Lab is shutting down: it starts no more workers")
        number = None if spec.name is not None else self._next_number(spec.kind)
        worker_id = spec.name if number is None else f"{spec.kind}-{number}"
        worker = WORKER_CLASSES[spec.kind](worker_id, spec, target, self.bus,
                                           history=self.history)
        worker.source = source
        worker.peers = lambda: [*self.workers.values(), *self.other_peers()]
        worker.policy = self.policy
        worker.throttle = None if local else self.policy.throttle()
        try:
            worker.open()
        except Conflict as exc:
            raise self._explain(exc, target, getattr(spec, "v6only", False)) from None
        worker.state = "running"
        if number is not None:
            self._number = number
        self.workers[worker_id] = worker
        worker.task = self._group.create_task(self._run(worker), name=f"worker {worker_id}")
        return worker

    def _explain(self, exc: Conflict, target: Target, v6only: bool = False) -> Conflict:
        """Add which of our workers holds the port, and why that overlaps, to a bind error."""
        if exc.field != "port":
            return exc
        host, port = target.address[0], target.address[1]
        for other in self.workers.values():
            if other.local is None or other.local[1] != port or not other.alive \
                    or other.kind not in ("server", "listener"):
                continue
            held = other.local[0]
            dual = self._dual_stack_clash(other, held, host, port, v6only)
            if dual is not None:
                why = dual
            elif ":" in held and ":" not in host or ":" in host and ":" not in held:
                continue  # other families share ports freely, but for a dual-stack ::
            elif held == host:
                why = f"{other.id} is bound to exactly {held} port {port}"
            elif held in ("0.0.0.0", "::"):
                why = (f"{other.id} is bound to {held}, every address of this machine, which "
                       f"already covers {host}")
            elif host in ("0.0.0.0", "::"):
                why = (f"{host} means every address of this machine, and {other.id} already "
                       f"holds {held} port {port}")
            else:
                continue
            return Conflict(f"{exc.message}. Here: {why}", field=exc.field)
        return exc

    @staticmethod
    def _dual_stack_clash(other: Worker, held: str, host: str, port: int,
                          v6only: bool) -> str | None:
        """Why a bind clashes across the families: a dual-stack `::` (IPV6_V6ONLY off)
        also takes the port on every IPv4 address. None when that is not the clash."""
        dual_other = held == "::" and not getattr(other.spec, "v6only", False)
        if dual_other and ":" not in host:
            return (f"{other.id} is bound to :: with v6only off: a dual-stack socket, which "
                    f"holds port {port} on every IPv4 address too; start it with v6only on "
                    "to share the port between the families")
        if host == "::" and not v6only and ":" not in held:
            return (f"{other.id} holds {held} port {port} (IPv4), and :: with v6only off "
                    f"is dual-stack: it wants port {port} on every IPv4 address as well. Turn "
                    "v6only on to bind IPv6 only beside it")
        return None

    def spawn(self, coro, *, name: str) -> asyncio.Task:
        """Run a coroutine that drives workers (an experiment) under this supervisor."""
        if self._group is None:
            raise RuntimeError("use the supervisor inside 'async with'")
        task = self._group.create_task(self._guard(coro, name), name=name)
        self._spawned.add(task)
        task.add_done_callback(self._spawned.discard)
        return task

    async def _guard(self, coro, name: str) -> None:
        # A failing experiment must not take the task group, and so every worker, down.
        try:
            await coro
        except asyncio.CancelledError:
            pass
        except Exception as exc:
            self.bus.publish(Error(seq=self.bus.next_seq(), time=time.time(), worker=name,
                                   message=f"The {name} failed: {exc}", error=repr(exc)))

    def _victim(self, client_id: str, where: str | None) -> tuple[Target, Address]:
        """Where to send an impostor's datagram for a client worker, and whom to pretend to be.

        The impostor must be where the client is: on the machine, or on a lab host."""
        client = self.workers.get(client_id)
        if client is None or client.kind != "client":
            raise BadSpec(f"There is no client worker {client_id!r} to target: start the "
                          "client first, or give host and port instead", field="target")
        if client.local is None or not client.alive:
            raise Conflict(f"Client {client_id} has no address to aim at yet (it has not "
                           "sent anything, or it has ended): start it, then the impostor",
                           field="target")
        host, port = client.local
        if bool(client.spec.where) != bool(where):
            place = (f"on a lab host (the client is on {client.spec.where})"
                     if client.spec.where else "on this machine, like the client")
            raise BadSpec(f"Put the impostor {place}: the machine and the virtual LAN cannot "
                          "reach each other", field="where")
        if client.spec.where:
            netns = self.lab.host(where).namespace
            lab_host = self.lab.host(client.spec.where)
            if host == "0.0.0.0":
                host = lab_host.address
            elif host == "::":  # an IPv6 socket: its own family's address
                host = lab_host.address6 or lab_host.address
        else:
            netns = None
            host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)
        return (Target(client.target.family, (host, port), client_id, netns=netns),
                client.server)

    def _as_ipv4(self, target: Target, source: Address) -> tuple[Target, Address]:
        """A forged impostor for an IPv6 client whose server is IPv4-mapped: the client's
        dual-stack socket takes IPv4 too, and sees an IPv4 source as the mapped address it
        compares with, so an IPv4 packet from the plain server address fools it the same."""
        server = plain_ip(source[0])
        if server is None or server.version != 4:
            return target, source
        host = target.address[0]
        if host == "::1":
            host = "127.0.0.1"
        elif plain_ip(host) is not None and plain_ip(host).version == 4:
            host = str(plain_ip(host))
        else:
            return target, source
        return (dataclasses.replace(target, family=socket.AF_INET,
                                    address=(host, target.address[1])),
                (str(server), source[1]))

    async def _run(self, worker: Worker) -> None:
        state = "failed"
        try:
            state = await worker.run()
        except asyncio.CancelledError:
            state = "stopped"  # stop() cancelled us; it awaits this task, so we end here
        except Exception as exc:
            worker.emit(Error, f"The worker failed: {exc!r}", error=repr(exc))
        finally:
            self._finish(worker, state)

    def _finish(self, worker: Worker, state: str) -> None:
        if not worker.alive:
            return
        worker.close()
        worker.state = state
        worker.ended = time.time()
        worker.emit(Stopped, f"{kind_name(worker.kind, first=True)} {worker.id} {state}",
                    state=state)
        self._clear_old()

    def _clear_old(self) -> None:
        """Forget the ended workers beyond the newest `keep_ended` (their history stays);
        a person running thousands of short clients must not fill memory and the page."""
        ended = [w for w in self.workers.values() if not w.alive]
        if len(ended) <= self.keep_ended:
            return
        ended.sort(key=lambda w: w.ended or 0.0)
        for worker in ended[:len(ended) - self.keep_ended]:
            self._forget(worker, f"{kind_name(worker.kind, first=True)} {worker.id} cleared "
                         f"from the dashboard (it keeps the newest {self.keep_ended} ended "
                         "workers); "
                         "the History page keeps it")

    def _forget(self, worker: Worker, message: str) -> None:
        for hook in self.on_forget:
            hook(worker)
        if self.workers.get(worker.id) is worker:
            del self.workers[worker.id]
            worker.emit(Removed, message)

    def get(self, worker_id: str) -> Worker:
        """The worker with this id, or `UnknownWorker`."""
        try:
            return self.workers[worker_id]
        except KeyError:
            raise UnknownWorker(
                f"There is no worker {worker_id!r}: it was removed, or never started"
            ) from None

    def pause(self, worker_id: str) -> Worker:
        """Pause a server: it stops reading and datagrams queue in the kernel."""
        return self._server(worker_id, "pause")

    def resume(self, worker_id: str) -> Worker:
        """Resume a paused server."""
        return self._server(worker_id, "resume")

    def _server(self, worker_id: str, action: str) -> Worker:
        worker = self.get(worker_id)
        if worker.kind != "server":
            raise Conflict(f"Only servers can {action}; {worker_id} is a {worker.kind}")
        getattr(worker, action)()
        return worker

    async def stop(self, worker_id: str) -> Worker:
        """Stop a worker (cancel its task, close its socket) and return it; idempotent."""
        return await self._stop(self.get(worker_id))

    async def _stop(self, worker: Worker) -> Worker:
        # By object, not id: while this awaits, the worker may be cleared from the list.
        task = worker.task
        if task is not None and not task.done():
            task.cancel()
            await asyncio.wait([task])
        self._finish(worker, "stopped")  # a task cancelled before its first step ran no finally
        return worker

    async def remove(self, worker_id: str) -> Worker:
        """Stop a worker and forget it, events and all."""
        worker = await self.stop(worker_id)
        self._forget(worker, f"{kind_name(worker.kind, first=True)} {worker_id} removed")
        return worker

    async def remove_ended(self) -> list[str]:
        """Forget every worker that has ended; their ids."""
        ended = [w for w in self.workers.values() if not w.alive]
        for worker in ended:
            self._forget(worker, f"{kind_name(worker.kind, first=True)} {worker.id} removed")
        return [w.id for w in ended]

    async def build_lab(self) -> Lab:
        """Build the virtual LAN (off the event loop: it runs `ip` commands)."""
        # One build or teardown at a time: two builds in two threads would each make the same
        # namespaces, and the loser's clean-up would delete the winner's.
        async with self._lab_lock:
            await asyncio.get_running_loop().run_in_executor(None, self.lab.build)
            self.policy.lab_networks = tuple(self.lab.networks())
        return self.lab

    async def teardown_lab(self) -> list[str]:
        """Stop the workers placed on the lab, then delete its namespaces."""
        async with self._lab_lock:
            for worker in list(self.workers.values()):
                if worker.spec.where:
                    await self._stop(worker)
            removed = await asyncio.get_running_loop().run_in_executor(None,
                                                                       self.lab.teardown)
            self.policy.lab_networks = ()
        return removed

    async def stop_all(self) -> None:
        """Stop every worker."""
        for worker in list(self.workers.values()):
            await self._stop(worker)

    def events(self, worker_id: str) -> list[Event]:
        """A worker's kept events, oldest first."""
        return list(self.get(worker_id).history)
