"""One interface for what the dashboard asks of a machine, and the local machine behind it.

Like httpx's transports: `LocalMachine` calls the in-process supervisor, `RemoteMachine`
(remote.py) asks an agent over NATS, and whoever holds a `Machine` cannot tell them apart.
Workers and events come back as the JSON API shows them (dicts), with ids unique in the
fleet. Every method raises the engine's `EngineError` subclasses on misuse, whichever side.
"""

import time
from typing import Any, Protocol, runtime_checkable

from webapp import __version__
from webapp.engine import BadSpec, Supervisor, interfaces, ports, sockopts
from webapp.engine.lab.scenarios import LabScenarios
from webapp.fleet.config import LOCAL


@runtime_checkable
class Machine(Protocol):
    """A machine of the fleet: the dashboard's own, or an agent."""

    name: str
    local: bool

    async def start(self, spec: dict[str, Any]) -> dict[str, Any]:
        """Start a worker from a spec (without `machine`); the worker."""

    async def stop(self, worker_id: str) -> dict[str, Any]:
        """Stop a worker (idempotent); the worker."""

    async def remove(self, worker_id: str) -> dict[str, Any]:
        """Stop and forget a worker; the worker."""

    async def pause(self, worker_id: str) -> dict[str, Any]:
        """Pause a server."""

    async def resume(self, worker_id: str) -> dict[str, Any]:
        """Resume a paused server."""

    async def workers(self) -> list[dict[str, Any]]:
        """Every worker of this machine."""

    async def get(self, worker_id: str) -> dict[str, Any]:
        """One worker, or `UnknownWorker`."""

    async def events(self, worker_id: str) -> list[dict[str, Any]]:
        """A worker's kept events, oldest first."""

    async def interfaces(self) -> list[dict[str, Any]]:
        """The machine's interfaces and addresses."""

    async def ports(self, query: str) -> dict[str, Any]:
        """A port or service name looked up on that machine."""

    async def options(self, worker_id: str) -> list[dict[str, Any]]:
        """A live worker's socket options."""

    async def set_option(self, worker_id: str, name: str, value: Any) -> dict[str, Any]:
        """Set one socket option on a live worker's socket."""

    async def lab(self) -> dict[str, Any]:
        """The machine's virtual LAN, as `GET /api/lab` shows it."""

    async def build_lab(self) -> dict[str, Any]:
        """Build the machine's virtual LAN (seconds: it runs `ip` commands); the lab."""

    async def teardown_lab(self) -> dict[str, Any]:
        """Stop the workers on the lab, delete its namespaces; the lab, with `removed`."""

    async def lab_scenario(self, name: str) -> dict[str, Any]:
        """Run a one-click lab scenario on the machine's lab; its steps."""

    def status(self) -> dict[str, Any]:
        """`{"name", "state", "local", "seen", "workers", "interfaces", "version"}`."""


class LocalMachine:
    """The dashboard's own machine: the in-process supervisor (also what an agent serves)."""

    local = True

    def __init__(self, supervisor: Supervisor, name: str = LOCAL,
                 scenarios: LabScenarios | None = None):
        self.supervisor = supervisor
        self.name = name
        self.scenarios = scenarios  # made at the first scenario when not given

    async def start(self, spec: dict[str, Any]) -> dict[str, Any]:
        return (await self.supervisor.start(spec)).to_dict()

    async def stop(self, worker_id: str) -> dict[str, Any]:
        return (await self.supervisor.stop(worker_id)).to_dict()

    async def remove(self, worker_id: str) -> dict[str, Any]:
        return (await self.supervisor.remove(worker_id)).to_dict()

    async def pause(self, worker_id: str) -> dict[str, Any]:
        return self.supervisor.pause(worker_id).to_dict()

    async def resume(self, worker_id: str) -> dict[str, Any]:
        return self.supervisor.resume(worker_id).to_dict()

    async def workers(self) -> list[dict[str, Any]]:
        return [w.to_dict() for w in self.supervisor.workers.values()]

    async def get(self, worker_id: str) -> dict[str, Any]:
        return self.supervisor.get(worker_id).to_dict()

    async def events(self, worker_id: str) -> list[dict[str, Any]]:
        return [e.to_dict() for e in self.supervisor.events(worker_id)]

    async def interfaces(self) -> list[dict[str, Any]]:
        return [i.to_dict() for i in interfaces.interfaces()]

    async def ports(self, query: str) -> dict[str, Any]:
        if not isinstance(query, str):
            raise BadSpec("Give a port number or a service name to look up", field="query")
        return ports.lookup(query)

    async def options(self, worker_id: str) -> list[dict[str, Any]]:
        return sockopts.read_all(self.supervisor.get(worker_id).sock)

    async def set_option(self, worker_id: str, name: str, value: Any) -> dict[str, Any]:
        return sockopts.set_option(self.supervisor.get(worker_id).sock, name, value)

    async def lab(self) -> dict[str, Any]:
        return self.supervisor.lab.to_dict()

    async def build_lab(self) -> dict[str, Any]:
        return (await self.supervisor.build_lab()).to_dict()

    async def teardown_lab(self) -> dict[str, Any]:
        removed = await self.supervisor.teardown_lab()
        return {**self.supervisor.lab.to_dict(), "removed": removed}

    async def lab_scenario(self, name: str) -> dict[str, Any]:
        if not isinstance(name, str):
            raise BadSpec("Give the name of a lab scenario", field="scenario")
        if self.scenarios is None:
            self.scenarios = LabScenarios(self.supervisor)
        return await self.scenarios.run(name)

    def status(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "state": "up",
            "local": True,
            "seen": time.time(),
            "workers": sum(1 for w in self.supervisor.workers.values() if w.alive),
            "interfaces": addresses(),
            "version": __version__,
        }


def addresses() -> list[dict[str, str]]:
    """This machine's addresses, short: `[{"interface", "address", "prefix"}]`."""
    return [{"interface": i.name, "address": a.address, "prefix": a.prefix}
            for i in interfaces.interfaces() for a in i.addresses]
