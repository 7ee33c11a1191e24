"""A machine reached over NATS: an `udplab agent` on another computer (or namespace).

Commands are NATS requests answered by the agent; its event batches and hellos come in
through the `Fleet`, which hands them to `receive_events()` and `receive_hello()`. Events
enter the dashboard's own bus, so history, streams and sampling see them like local ones.
"""

import asyncio
import json
import logging
import time
from typing import TYPE_CHECKING, Any, Awaitable, Callable

from webapp.engine import EngineError, EventBus
from webapp.fleet import wire
from webapp.fleet.config import subject

if TYPE_CHECKING:  # the dashboard without --nats never loads the NATS client
    import nats

LOST_AFTER = 10.0  # seconds of silence before a machine is `lost`
REQUEST_TIMEOUT = 5.0  # seconds an agent gets to answer a command
# Building or tearing down a lab runs some 40 `ip` commands on the agent (a second or two on
# an idle machine, more on a loaded one), and a scenario waits for its datagrams: those get
# longer. The agent runs them aside, so its other commands still answer meanwhile.
LAB_TIMEOUT = 60.0
log = logging.getLogger("udplab.fleet")


class Unreachable(EngineError):
    """A machine of the fleet does not answer (lost, or its agent is not running)."""

    status = 503


class RemoteMachine:
    """One agent, seen from the dashboard; implements `Machine`."""

    local = False

    def __init__(self, name: str, nc: "nats.NATS", bus: EventBus, *,
                 lost_after: float = LOST_AFTER, timeout: float = REQUEST_TIMEOUT):
        self.name = name
        self.nc = nc
        self.bus = bus
        self.lost_after = lost_after
        self.timeout = timeout
        self.seen = 0.0  # when we last heard from it (hello, events or a reply)
        self.hello: dict[str, Any] = {}
        self.boot: str | None = None
        self.batch = 0  # the last event batch's number in this boot
        self.missed = 0  # event batches that never arrived (a gap in the numbers)
        self.received = 0  # events received
        self._workers: dict[str, dict] = {}  # the last known state of its workers
        # Where a restarted dashboard resumes: `resume_from(machine, boot)` is the agent's number
        # of the newest event of that run the history already has (set by the fleet).
        self.resume_from: Callable[[str, str], Awaitable[int]] | None = None
        self.floor = 0  # replayed events numbered up to this are in the history already
        self.replayed = 0  # events received again from the agent's buffer
        self._catching_up: asyncio.Task | None = None
        self.hold: Callable[[Any], bool] | None = None  # the fleet's (see broadcasts.py)

    @property
    def state(self) -> str:
        """`up`, or `lost` after `lost_after` seconds of silence."""
        return "up" if time.time() - self.seen <= self.lost_after else "lost"

    # --- what the agent sends unasked ------------------------------------------------------

    def receive_hello(self, hello: dict[str, Any]) -> None:
        """A heartbeat: the agent is alive, which run of it, its addresses."""
        self.seen = time.time()
        self.hello = hello
        batches = hello.get("batches")
        if isinstance(batches, int):
            self._new_boot(hello.get("boot"), batches)
            # NATS keeps one publisher's order: every batch numbered up to `batches` that was
            # sent has arrived before this hello, so the rest never will
            self._arrived(batches)

    def receive_events(self, batch: dict[str, Any]) -> None:
        """A batch of events: each enters the bus as an event of this machine (never awaits)."""
        self.seen = time.time()
        seq = batch.get("seq")
        bus = self.bus
        if batch.get("replay"):
            self._receive_replayed(batch)
            return
        if isinstance(seq, int):
            self._new_boot(batch.get("boot"), seq - 1)
            self._arrived(seq - 1)
            self.batch = max(self.batch, seq)
        for raw in batch.get("events") or ():
            if isinstance(raw, dict):
                event = wire.event_from_agent(raw, self.name, bus.next_seq(), self.boot or "")
                if self.hold is None or not self.hold(event):
                    bus.publish(event)
                self.received += 1
                self._track(event)

    def _receive_replayed(self, batch: dict[str, Any]) -> None:
        """A batch sent again on our asking: its events that the history does not have."""
        if batch.get("boot") != self.boot:
            return
        bus = self.bus
        for raw in batch.get("events") or ():
            if isinstance(raw, dict) and isinstance(raw.get("seq"), int) \
                    and raw["seq"] > self.floor:
                event = wire.event_from_agent(raw, self.name, bus.next_seq(), self.boot)
                bus.publish(event)
                self.replayed += 1
                self._track(event)

    async def _catch_up(self, boot: str, before: int) -> None:
        """This dashboard has just met this run of the agent (it started, or restarted):
        learn its workers, then ask for its kept batches before `before` (the first one
        heard live) from which the history lacks events."""
        try:
            await self.workers()
            self.floor = await self.resume_from(self.name, boot) if self.resume_from else 0
            answer = await self.request("replay", boot=boot, first=1, before=before)
            log.info("machine %s: %d batch(es) replayed", self.name, answer["replayed"])
        except Exception as exc:  # an older agent, or gone again: live events still come
            log.warning("machine %s: could not replay its recent events: %s", self.name, exc)

    def catching_up(self) -> "asyncio.Future | None":
        """The replay in progress, cancelled (for closing): something to await, or None."""
        task = self._catching_up
        if task is None or task.done():
            return None
        task.cancel()
        return asyncio.wait([task])

    def _arrived(self, last: int) -> None:
        """Batches up to `last` are in (or never will be): count and say any gap."""
        if last <= self.batch:
            return
        gap, self.batch = last - self.batch, last
        self.missed += gap
        bus = self.bus
        bus.publish(wire.MachineChanged(
            seq=bus.next_seq(), time=time.time(), worker=self.name, machine=self.name,
            state="up", message=f"Machine {self.name}: {gap} batch(es) of events never "
            "arrived (it was cut off from nats-server for a while); its counters still "
            "count everything"))

    def _new_boot(self, boot: Any, sent_before: int) -> None:
        """Gaps count from the first batch heard (what an agent sent before the dashboard
        joined is not missed), and from 0 again when the agent restarts (a new boot)."""
        if not isinstance(boot, str) or boot == self.boot:
            return
        first = self.boot is None
        self.batch = sent_before if first else 0
        self.boot = boot
        if first and sent_before > 0 and self.nc is not None:
            self._catching_up = asyncio.create_task(self._catch_up(boot, sent_before + 1),
                                                    name=f"catch up {self.name}")

    def _track(self, event) -> None:
        known = self._workers.get(event.worker)
        if known is None:
            return
        if event.type == "stopped":
            known["state"] = event.state
        elif event.type == "paused":
            known["state"] = "paused"
        elif event.type == "resumed":
            known["state"] = "running"
        elif event.type == "removed":
            self._workers.pop(event.worker, None)

    # --- commands --------------------------------------------------------------------------

    async def request(self, verb: str, *, timeout: float | None = None, **args: Any) -> Any:
        """Ask the agent; its answer, or its engine error raised here, or `Unreachable`
        (no answer within `timeout` seconds, default `self.timeout`)."""
        from nats.errors import NoRespondersError
        from nats.errors import TimeoutError as NatsTimeout

        timeout = self.timeout if timeout is None else timeout
        try:
            msg = await self.nc.request(subject(self.name, "cmd", verb), wire.dumps(args),
                                        timeout=timeout)
        except NoRespondersError:
            raise Unreachable(f"Machine {self.name} is not connected (its agent is not "
                              "running): start 'udplab agent' there", field="machine") from None
        except NatsTimeout:
            raise Unreachable(f"Machine {self.name} did not answer within {timeout:g} s",
                              field="machine") from None
        self.seen = time.time()
        try:
            return wire.unpack(msg.data)
        except (ValueError, KeyError):
            raise EngineError(f"Machine {self.name} sent an answer this dashboard cannot "
                              "read: is its agent another version?") from None

    def known(self, worker_id: str) -> dict | None:
        """What this dashboard last heard of a worker (fleet-wide id), without asking."""
        return self._workers.get(worker_id)

    def _worker(self, raw: dict) -> dict:
        worker = wire.worker_from_agent(raw, self.name)
        self._workers[worker["id"]] = worker
        return worker

    async def start(self, spec: dict[str, Any]) -> dict[str, Any]:
        return self._worker(await self.request("start", spec=spec))

    async def stop(self, worker_id: str) -> dict[str, Any]:
        return self._worker(await self.request("stop", id=worker_id))

    async def remove(self, worker_id: str) -> dict[str, Any]:
        worker = self._worker(await self.request("remove", id=worker_id))
        self._workers.pop(worker["id"], None)
        return worker

    async def pause(self, worker_id: str) -> dict[str, Any]:
        return self._worker(await self.request("pause", id=worker_id))

    async def resume(self, worker_id: str) -> dict[str, Any]:
        return self._worker(await self.request("resume", id=worker_id))

    async def workers(self) -> list[dict[str, Any]]:
        """Its workers; from memory, each `lost`, while the machine is lost."""
        if self.state == "lost":
            return [dict(w, state="lost") for w in self._workers.values()
                    if w["state"] in ("running", "paused", "lost")]
        workers = [wire.worker_from_agent(w, self.name) for w in await self.request("workers")]
        self._workers = {w["id"]: w for w in workers}
        return workers

    async def get(self, worker_id: str) -> dict[str, Any]:
        return self._worker(await self.request("get", id=worker_id))

    async def events(self, worker_id: str) -> list[dict[str, Any]]:
        raws = await self.request("events", id=worker_id)
        return [wire.event_from_agent(raw, self.name, raw.get("seq", 0)).to_dict()
                for raw in raws]

    async def interfaces(self) -> list[dict[str, Any]]:
        return await self.request("interfaces")

    async def ports(self, query: str) -> dict[str, Any]:
        return await self.request("ports", query=query)

    async def options(self, worker_id: str) -> list[dict[str, Any]]:
        return await self.request("options", id=worker_id)

    async def set_option(self, worker_id: str, name: str, value: Any) -> dict[str, Any]:
        return await self.request("set-option", id=worker_id, name=name, value=value)

    async def lab(self) -> dict[str, Any]:
        return await self.request("lab")

    async def build_lab(self) -> dict[str, Any]:
        return await self.request("lab-build", timeout=LAB_TIMEOUT)

    async def teardown_lab(self) -> dict[str, Any]:
        return await self.request("lab-teardown", timeout=LAB_TIMEOUT)

    async def lab_scenario(self, name: str) -> dict[str, Any]:
        return await self.request("lab-scenario", name=name, timeout=LAB_TIMEOUT)

    def status(self) -> dict[str, Any]:
        hello = self.hello
        return {"name": self.name, "state": self.state, "local": False,
                "seen": self.seen or None, "workers": hello.get("workers", 0),
                "interfaces": hello.get("interfaces", []), "version": hello.get("version")}


def decode(data: bytes) -> dict[str, Any] | None:
    """A message body as a JSON object, or None if it is not one."""
    try:
        value = json.loads(data)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None
