"""A machine reached over NATS: an `udplab agent` on another computer (or namespace).

Commands are NATS requests answered by the agent; its event batches and hellos come in
through the `Fleet`, which hands them to `receive_events()` and `receive_hello()`. Events
enter the dashboard's own bus, so history, streams and sampling see them like local ones.
"""

import asyncio
import json
import logging
import re
import time
from typing import TYPE_CHECKING, Any, Awaitable, Callable

from webapp.engine import EngineError, EventBus
from webapp.fleet import wire
from webapp.fleet.config import subject
from webapp.fleet.sequence import Sequence

if TYPE_CHECKING:  # the dashboard without --nats never loads the NATS client
    import nats

LOST_AFTER = 10.0  # seconds of silence before a machine is `lost`
REQUEST_TIMEOUT = 5.0  # seconds an agent gets to answer a command
# Building or tearing down a lab runs some 40 `ip` commands on the agent (a second or two on
# an idle machine, more on a loaded one), and a scenario waits for its datagrams: those get
# longer. The agent runs them aside, so its other commands still answer meanwhile.
LAB_TIMEOUT = 60.0
log = logging.getLogger("udplab.fleet")
# The engine's messages name the call that mends them ("build it first (POST /api/lab, or
# the Lab panel)"), for the machine the engine runs on. An agent's engine is another
# machine's, so on the dashboard its calls get `?machine=<name>`, and the Lab panel (which
# shows this dashboard's own lab until another is picked) is named with the machine to pick.
# The engine stays web-free: only this fleet layer knows the API's and the page's shape.
_MACHINE_CALL = re.compile(r"\b((?:GET|POST|DELETE) /api/lab(?:/[\w-]+)*)(?![\w/?])")
_LAB_PANEL = re.compile(r"\bthe Lab panel\b")


def on_machine(message: str, machine: str) -> str:
    """An agent's engine message as the dashboard must say it: the API calls it names act on
    `machine` (`POST /api/lab?machine=b`)."""
    if "/api/" not in message:
        return message
    message = _LAB_PANEL.sub(f"the Lab panel with {machine} picked", message)
    return _MACHINE_CALL.sub(lambda call: f"{call.group(1)}?machine={machine}", message)


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
        # this run's batches in order and each once; gaps asked for again (sequence.py)
        self.sequence = Sequence(name, deliver=self._deliver, say=self._say,
                                 ask=self._ask if nc is not None else None)
        self.met = 0  # batches of this run published before this dashboard met it
        self.received = 0  # events received
        self._workers: dict[str, dict] = {}  # the last known state of its workers
        # listeners the fleet added to a broadcast worker's `reached` (its agent counts only
        # its own machine's, by its own wait): added to the worker's counter here
        self._reached: dict[str, int] = {}
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

    @property
    def batch(self) -> int:
        """The last of this run's batches that went in (or was given up)."""
        return self.sequence.batch

    @property
    def missed(self) -> int:
        """This run's batches that did not come when published (recovered or lost)."""
        return self.sequence.missed

    def receive_hello(self, hello: dict[str, Any]) -> None:
        """A heartbeat (or the answer to `hello`): the agent is alive, which run of it, its
        addresses, and how many batches it has published."""
        self.seen = time.time()
        self.hello = hello
        batches = hello.get("batches")
        if isinstance(batches, int):
            self._new_boot(hello.get("boot"), batches, hello.get("total"))
            if hello.get("boot") == self.boot:
                self.sequence.counted(batches, hello.get("total"))

    def receive_events(self, batch: dict[str, Any]) -> None:
        """A batch of events: in order, its events enter the bus as events of this machine
        (never awaits)."""
        self.seen = time.time()
        seq = batch.get("seq")
        if not isinstance(seq, int):  # not numbered: nothing to order it by
            self._deliver(batch, False)
            return
        if batch.get("replay"):
            if seq > self.met:
                self.sequence.replayed(batch)  # asked for, to fill a gap
            else:
                self._receive_replayed(batch)  # from before we met: what the history lacks
            return
        total = batch.get("total")
        if isinstance(total, int):
            total -= len(batch.get("events") or ())
        self._new_boot(batch.get("boot"), seq - 1, total)
        if batch.get("boot") == self.boot:
            self.sequence.live(batch)

    def _deliver(self, batch: dict[str, Any], replayed: bool) -> int:
        """A batch's events onto the bus, in order; how many."""
        bus = self.bus
        count = 0
        for raw in batch.get("events") or ():
            if isinstance(raw, dict):
                event = wire.event_from_agent(raw, self.name, bus.next_seq(), self.boot or "")
                if self.hold is None or not self.hold(event):
                    bus.publish(event)
                count += 1
                self._track(event)
        self.received += count
        return count

    def _say(self, line: str) -> None:
        bus = self.bus
        bus.publish(wire.MachineChanged(seq=bus.next_seq(), time=time.time(), worker=self.name,
                                        machine=self.name, state=self.state, message=line))

    async def _ask(self, first: int, before: int) -> dict[str, Any]:
        """Ask this run of the agent to publish its batches `first` ≤ seq < `before` again."""
        return await self.request("replay", boot=self.sequence.boot, first=first,
                                  before=before)

    async def check_in(self) -> None:
        """Ask how it is (after this dashboard reconnected): a gap shows, and is asked for."""
        try:
            self.receive_hello(await self.request("hello"))
        except Exception as exc:  # gone (or disconnected) again: its hellos will tell
            log.info("machine %s: no answer after reconnecting: %s", self.name, exc)

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
        """The replays in progress, cancelled (for closing): something to await, or None."""
        waits = [w for w in (self.sequence.cancel(),) if w is not None]
        task = self._catching_up
        if task is not None and not task.done():
            task.cancel()
            waits.append(asyncio.wait([task]))
        return asyncio.gather(*waits) if waits else None

    def _new_boot(self, boot: Any, sent_before: int, total: Any) -> None:
        """Gaps count from the first batch heard (what an agent sent before the dashboard
        joined is not missed, but replayed from what the history lacks), and from 0 again
        when the agent restarts (a new boot)."""
        if not isinstance(boot, str) or boot == self.boot:
            return
        first = self.boot is None
        self.met = sent_before if first else 0
        self.boot = boot
        self._reached.clear()  # a new run numbers its workers from 1 again
        self.sequence.restart(boot, self.met, total if first else 0)
        if first and sent_before > 0 and self.nc is not None:
            self._catching_up = asyncio.create_task(self._catch_up(boot, sent_before + 1),
                                                    name=f"catch up {self.name}")

    def _track(self, event) -> None:
        if event.type == "removed":
            self._reached.pop(event.worker, None)
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
        except EngineError as exc:  # the agent's engine refused: said for this machine
            raise type(exc)(on_machine(exc.message, self.name), field=exc.field) from None
        except (ValueError, KeyError):
            raise EngineError(f"Machine {self.name} sent an answer this dashboard cannot "
                              "read: is its agent another version?") from None

    def known(self, worker_id: str) -> dict | None:
        """What this dashboard last heard of a worker (fleet-wide id), without asking."""
        return self._workers.get(worker_id)

    def _worker(self, raw: dict) -> dict:
        worker = self._from_agent(raw)
        self._workers[worker["id"]] = worker
        return worker

    def _from_agent(self, raw: dict) -> dict:
        worker = wire.worker_from_agent(raw, self.name)
        more = self._reached.get(worker["id"])
        counters = worker.get("counters")
        if more and isinstance(counters, dict) and isinstance(counters.get("reached"), int):
            worker["counters"] = dict(counters, reached=counters["reached"] + more)
        return worker

    def add_reached(self, worker_id: str, more: int) -> None:
        """The fleet found `more` listeners (of other machines, or late) that heard a
        broadcast of `worker_id`: its `reached` counter counts them from now on."""
        self._reached[worker_id] = self._reached.get(worker_id, 0) + more
        counters = (self._workers.get(worker_id) or {}).get("counters")
        if isinstance(counters, dict) and isinstance(counters.get("reached"), int):
            counters["reached"] += more

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
        workers = [self._from_agent(w) for w in await self.request("workers")]
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
        result = await self.request("lab-scenario", name=name, timeout=LAB_TIMEOUT)
        steps = result.get("steps") if isinstance(result, dict) else None
        for step in steps or ():  # a step that stopped says the engine's why: for this machine
            if isinstance(step, dict) and isinstance(step.get("why"), str):
                step["why"] = on_machine(step["why"], self.name)
        return result

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
