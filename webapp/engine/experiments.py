"""Experiments that take several workers, run as one: the impostor line-up.

The impostor experiment puts the four client modes side by side under the same impostor,
as the book does by hand: pause the server so the clients wait, send each client a `FAKE`
reply from a third socket (or forged with the server's own address), resume the server,
then see who was fooled.
"""

import asyncio
import itertools
from dataclasses import dataclass, field
from typing import Any

from webapp.engine.errors import EngineError, Refused, UnknownWorker
from webapp.engine.forge import NEEDS_RAW, can_forge
from webapp.engine.specs import CLIENT_MODES

SPOOF_AFTER = 0.3  # seconds: the clients have sent and wait
RESUME_AFTER = 0.5  # seconds after the spoofing: the real answers come


@dataclass
class Experiment:
    """The workers of one impostor run and what the impostor said."""

    id: str
    forge: bool
    message: str
    server: str
    clients: dict[str, str]  # mode -> client worker id
    spoofers: list[str] = field(default_factory=list)
    done: bool = False

    @property
    def workers(self) -> set[str]:
        """Every worker this experiment started."""
        return {self.server, *self.clients.values(), *self.spoofers}


class Experiments:
    """Starts impostor experiments on a supervisor and judges their clients."""

    def __init__(self, supervisor):
        self.supervisor = supervisor
        self.runs: dict[str, Experiment] = {}
        self._numbers = itertools.count(1)

    async def impostor(self, *, forge: bool = False, message: str = "FAKE") -> Experiment:
        """Start the line-up; the timed part (spoof, resume) goes on in the background."""
        sup = self.supervisor
        if forge and not can_forge():
            raise Refused(NEEDS_RAW, field="forge")
        run_id = f"impostor-{next(self._numbers)}"
        server = await sup.start({"kind": "server", "name": f"{run_id}-server", "port": 0})
        sup.pause(server.id)
        clients = {}
        for mode in CLIENT_MODES:
            client = await sup.start({
                "kind": "client", "name": f"{run_id}-{mode}", "port": server.local[1],
                "mode": mode, "timeout": 1.5, "give_up_after": 3.0,
            })
            clients[mode] = client.id
        run = Experiment(run_id, forge, message, server.id, clients)
        self.runs[run_id] = run
        sup.spawn(self._play(run), name=f"experiment {run_id}")
        return run

    async def _play(self, run: Experiment) -> None:
        sup = self.supervisor
        try:
            await asyncio.sleep(SPOOF_AFTER)
            for mode, client_id in run.clients.items():
                spoofer = await sup.start({
                    "kind": "spoofer", "name": f"{run.id}-impostor-{mode}", "target": client_id,
                    "message": run.message, "forge": run.forge,
                })
                run.spoofers.append(spoofer.id)
            await asyncio.sleep(RESUME_AFTER)
            if sup.workers.get(run.server) and sup.workers[run.server].state == "paused":
                sup.resume(run.server)
        finally:
            run.done = True

    def get(self, run_id: str) -> Experiment:
        """The run with this id, or `UnknownWorker` (404)."""
        try:
            return self.runs[run_id]
        except KeyError:
            raise UnknownWorker(f"There is no experiment {run_id!r}: list them with "
                                "GET /api/experiments") from None

    def to_dict(self, run: Experiment) -> dict[str, Any]:
        """A run and its verdicts as JSON."""
        return {"id": run.id, "forge": run.forge, "message": run.message, "server": run.server,
                "clients": run.clients, "spoofers": run.spoofers, "done": run.done,
                "verdicts": self.verdicts(run)}

    def verdicts(self, run: Experiment) -> list[dict[str, Any]]:
        """For each client: `fooled`, `refused`, `unseen` or `waiting`, and why."""
        rows = []
        for mode, client_id in run.clients.items():
            client = self.supervisor.workers.get(client_id)
            if client is None:
                continue
            history = list(client.history)
            took = [e for e in history if e.type == "reply" and e.text == run.message]
            refused = [e for e in history if e.type == "rejected" and e.text == run.message]
            real = [e for e in history if e.type == "reply" and e.text != run.message]
            if took:
                verdict, why = "fooled", f"accepted {run.message!r} as the server's reply"
            elif refused:
                verdict, why = "refused", refused[0].reason
            elif real or run.done and run.spoofers:
                verdict, why = "unseen", (
                    "never saw it: the kernel drops datagrams from other addresses "
                    "for a connected socket" if mode == "connected"
                    else "never saw the impostor's datagram")
            else:
                verdict, why = "waiting", "waiting for its reply"
            rows.append({"client": client_id, "mode": mode, "verdict": verdict, "why": why,
                         "answer": real[0].text if real else None})
        return rows


class BindingExplorer:
    """Which binds on one port conflict, which coexist, and which server a client reaches.

    Binds only on this machine; sends only to loopback (127.0.0.1, 127.0.0.2, ::1), so it is safe
    anywhere. The interface address, when there is one, is bound but never sent to.
    """

    def __init__(self, supervisor):
        self.supervisor = supervisor
        self._numbers = itertools.count(1)

    async def run(self, interface: str | None = None) -> dict[str, Any]:
        """Run the sequence and return its steps; every worker it made is removed after."""
        sup = self.supervisor
        run_id = f"binding-{next(self._numbers)}"
        made: list[str] = []
        steps: list[dict[str, Any]] = []

        async def bind(label: str, host: str, port: int, why_ok: str, **more: Any) -> Any:
            name = f"{run_id}-{len(made) + 1}"
            try:
                worker = await sup.start({"kind": "server", "name": name, "host": host,
                                          "port": port, "reply": "echo", **more})
            except EngineError as exc:
                steps.append({"action": label, "outcome": "conflict", "why": exc.message})
                return None
            made.append(worker.id)
            steps.append({"action": label, "outcome": "bound", "why": why_ok,
                          "worker": worker.id})
            return worker

        async def reach(host: str, port: int, servers: dict[str, Any], note: str = "") -> None:
            client = await sup.start({"kind": "client", "name": f"{run_id}-c{len(made)}",
                                      "host": host, "port": port, "message": f"hello {host}",
                                      "timeout": 0.2, "give_up_after": 0.2})
            made.append(client.id)
            await asyncio.wait([client.task], timeout=2)
            got = [name for name, w in servers.items() if w and w.counters["received"]]
            why = ("the kernel delivers to the socket bound most specifically to the "
                   "destination address" if got else "no socket is bound there")
            outcome = f"reached {', '.join(got)}" if got else "no reply"
            seen = [e.peer[0] for w in servers.values() if w for e in w.history
                    if e.type == "received" and e.text == f"hello {host}"]
            if seen and ":" in seen[-1] and ":" not in host:
                outcome += f" as {seen[-1]}"  # an IPv4 client seen by a dual-stack socket
                why = ("a dual-stack :: socket takes IPv4 datagrams too, and sees their "
                       "sources as IPv4-mapped IPv6 addresses")
            steps.append({"action": f"a client sends to {host} port {port}{note}",
                          "outcome": outcome, "why": why})
            for w in servers.values():
                if w:
                    w.counters["received"] = 0

        try:
            first = await bind("bind 127.0.0.1 (port chosen by the OS)", "127.0.0.1", 0,
                               "nothing else uses the port yet")
            port = first.local[1]
            second = await bind(f"bind 127.0.0.2 port {port}", "127.0.0.2", port,
                                "a different address of this machine: the two coexist")
            await bind(f"bind 0.0.0.0 port {port}", "0.0.0.0", port, "")
            if interface:
                await bind(f"bind {interface} port {port}", interface, port,
                           f"{interface} is yet another address: it coexists too")
            servers = {"the 127.0.0.1 server": first, "the 127.0.0.2 server": second}
            await reach("127.0.0.1", port, servers)
            await reach("127.0.0.2", port, servers)
            for worker_id in list(made):
                await sup.remove(worker_id)
            made.clear()
            wild = await bind(f"bind 0.0.0.0 port {port} (the others stopped)", "0.0.0.0",
                              port, "now nobody holds the port, so the wildcard bind succeeds")
            await bind(f"bind 127.0.0.1 port {port}", "127.0.0.1", port, "")
            await reach("127.0.0.1", port, {"the 0.0.0.0 server": wild})
            for worker_id in list(made):
                await sup.remove(worker_id)
            made.clear()
            await self._ipv6_rows(port, bind, reach, made)
            refused = await sup.start({
                "kind": "client", "name": f"{run_id}-closed", "mode": "connected",
                "host": "127.0.0.1", "port": port, "timeout": 0.1, "give_up_after": 0.1,
            })
            made.append(refused.id)
            await asyncio.wait([refused.task], timeout=2)
            error = next((e for e in refused.history if e.type == "error"), None)
            steps.append({
                "action": f"a connected client sends to the now closed 127.0.0.1 port {port}",
                "outcome": "Connection refused" if error else "no error",
                "why": "the kernel answered with ICMP port unreachable, which a connected "
                       "socket reports as [Errno 111] Connection refused" if error else
                       "an unconnected socket would never hear of it",
            })
        finally:
            for worker_id in made:
                await sup.remove(worker_id)
        return {"id": run_id, "port": port, "steps": steps}

    async def _ipv6_rows(self, port: int, bind, reach, made: list[str]) -> None:
        """IPv6 on the same port: beside an IPv4 wildcard, then dual stack on its own."""
        sup = self.supervisor
        wild = await bind(f"bind 0.0.0.0 port {port} (again, for IPv6 beside it)", "0.0.0.0",
                          port, "nobody holds the port")
        six = await bind(f"bind ::1 port {port}", "::1", port,
                         "IPv6 loopback is an address of the other family: it coexists with "
                         "0.0.0.0")
        await bind(f"bind :: port {port} (v6only off: dual-stack)", "::", port, "",
                   v6only=False)
        await reach("::1", port, {"the ::1 server": six, "the 0.0.0.0 server": wild})
        for worker_id in list(made):
            await sup.remove(worker_id)
        made.clear()
        dual = await bind(f"bind :: port {port} (v6only off, alone)", "::", port,
                          "dual-stack: it holds the port for IPv6 and IPv4 both", v6only=False)
        await reach("127.0.0.1", port, {"the :: server": dual}, " (dual-stack :: alone)")
        for worker_id in list(made):
            await sup.remove(worker_id)
        made.clear()
