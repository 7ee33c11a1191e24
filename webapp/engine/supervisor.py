"""The supervisor: starts, lists and stops workers, and owns every worker task.

Use it as `async with Supervisor() as supervisor:`; leaving the block stops every worker
and closes every socket.
"""

import asyncio
import dataclasses
import itertools
import socket
import time
from typing import Any

from webapp.engine.bus import EventBus
from webapp.engine.errors import BadSpec, Conflict, TooMany, UnknownWorker
from webapp.engine.events import Address, Error, Event, Removed, Stopped
from webapp.engine.lab import Lab
from webapp.engine.policy import Policy
from webapp.engine.specs import SpooferSpec, kind_name, parse_spec
from webapp.engine.udp import Target, resolve
from webapp.engine.workers import WORKER_CLASSES, Worker


class Supervisor:
    """Owns the workers of one app: their tasks, sockets and event history."""

    def __init__(self, bus: EventBus | None = None, *, history: int = 1000,
                 policy: Policy | None = None, lab: Lab | None = None):
        self.bus = bus or EventBus()
        self.policy = policy or Policy()
        self.lab = lab or Lab()
        self.history = history
        self.workers: dict[str, Worker] = {}
        self._numbers = itertools.count(1)
        self._group: asyncio.TaskGroup | None = None
        self._spawned: set[asyncio.Task] = set()

    async def __aenter__(self) -> "Supervisor":
        self._group = asyncio.TaskGroup()
        await self._group.__aenter__()
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        for task in self._spawned:
            task.cancel()
        await self.stop_all()
        if self.lab.built:
            await asyncio.get_running_loop().run_in_executor(None, self.lab.teardown)
        group, self._group = self._group, None
        await group.__aexit__(*exc_info)

    async def start(self, raw: Any) -> Worker:
        """Check `raw`, open the worker's socket and start it; raise `EngineError` if not."""
        if self._group is None:
            raise RuntimeError("use the supervisor inside 'async with'")
        spec = parse_spec(raw)
        worker_id = spec.name or f"{spec.kind}-{next(self._numbers)}"
        while spec.name is None and worker_id in self.workers:
            worker_id = f"{spec.kind}-{next(self._numbers)}"
        alive = sum(1 for w in self.workers.values() if w.alive)
        if alive >= self.policy.max_workers:
            raise TooMany(f"{alive} workers are running, the most this app allows: stop some "
                          "(or Clear ended), or start udplab with a higher --max-workers")
        if worker_id in self.workers:
            raise Conflict(
                f"A worker named {worker_id!r} already exists: pick another name, "
                "or stop and remove that one first",
                field="name",
            )
        source, local = None, True
        if isinstance(spec, SpooferSpec) and spec.target:
            target, source = self._victim(spec.target, spec.where)
            self.policy.check(spec.kind, [target.address[0]], in_lab=bool(spec.where))
            if spec.forge and target.family != socket.AF_INET:
                raise BadSpec("Forging builds IPv4 packets only: aim at an IPv4 client",
                              field="forge")
        else:
            target = await resolve(spec.host, spec.port, passive=spec.kind in ("server", "listener"))
            local = self.policy.check(spec.kind, list(target.addresses or [target.address[0]]),
                                      in_lab=bool(spec.where))
            if spec.where:
                target = dataclasses.replace(target, netns=self.lab.host(spec.where).namespace)
        worker = WORKER_CLASSES[spec.kind](worker_id, spec, target, self.bus,
                                           history=self.history)
        worker.source = source
        worker.peers = self.workers.values
        worker.policy = self.policy
        worker.throttle = None if local else self.policy.throttle()
        try:
            worker.open()
        except Conflict as exc:
            raise self._explain(exc, target) from None
        worker.state = "running"
        self.workers[worker_id] = worker
        worker.task = self._group.create_task(self._run(worker), name=f"worker {worker_id}")
        return worker

    def _explain(self, exc: Conflict, target: Target) -> Conflict:
        """Add which of our workers holds the port, and why that overlaps, to a bind error."""
        if exc.field != "port":
            return exc
        host, port = target.address[0], target.address[1]
        for other in self.workers.values():
            if other.local is None or other.local[1] != port or not other.alive \
                    or other.kind not in ("server", "listener"):
                continue
            held = other.local[0]
            if held == host:
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
            if host in ("0.0.0.0", "::"):
                host = self.lab.host(client.spec.where).address
        else:
            netns = None
            host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)
        return (Target(client.target.family, (host, port), client_id, netns=netns),
                client.server)

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

    @staticmethod
    def _finish(worker: Worker, state: str) -> None:
        if not worker.alive:
            return
        worker.close()
        worker.state = state
        worker.ended = time.time()
        worker.emit(Stopped, f"{kind_name(worker.kind, first=True)} {worker.id} {state}",
                    state=state)

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
        worker = self.get(worker_id)
        task = worker.task
        if task is not None and not task.done():
            task.cancel()
            await asyncio.wait([task])
        self._finish(worker, "stopped")  # a task cancelled before its first step ran no finally
        return worker

    async def remove(self, worker_id: str) -> Worker:
        """Stop a worker and forget it, events and all."""
        worker = await self.stop(worker_id)
        del self.workers[worker_id]
        worker.emit(Removed, f"{kind_name(worker.kind, first=True)} {worker_id} removed")
        return worker

    async def remove_ended(self) -> list[str]:
        """Forget every worker that has ended; their ids."""
        ended = [w.id for w in self.workers.values() if not w.alive]
        for worker_id in ended:
            await self.remove(worker_id)
        return ended

    async def build_lab(self) -> Lab:
        """Build the virtual LAN (off the event loop: it runs `ip` commands)."""
        await asyncio.get_running_loop().run_in_executor(None, self.lab.build)
        self.policy.lab_networks = tuple(self.lab.networks())
        return self.lab

    async def teardown_lab(self) -> list[str]:
        """Stop the workers placed on the lab, then delete its namespaces."""
        for worker in list(self.workers.values()):
            if worker.spec.where:
                await self.stop(worker.id)
        removed = await asyncio.get_running_loop().run_in_executor(None, self.lab.teardown)
        self.policy.lab_networks = ()
        return removed

    async def stop_all(self) -> None:
        """Stop every worker."""
        for worker_id in list(self.workers):
            await self.stop(worker_id)

    def events(self, worker_id: str) -> list[Event]:
        """A worker's kept events, oldest first."""
        return list(self.get(worker_id).history)
