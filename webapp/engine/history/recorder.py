"""The recorder: feeds the history store from the event bus, off the UDP path.

A bus subscription collects events without ever making a worker wait; every `interval`
seconds (≤ 1 s) the recorder drains it, notes each worker's state and counters, and writes it
all in one transaction in its own thread, so the event loop never blocks on the disk. A crash
or SIGKILL loses at most the last interval.
"""

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable

from webapp.engine.history.store import HistoryStore, WorkerRecord
from webapp.engine.supervisor import Supervisor
from webapp.engine.workers import Worker

log = logging.getLogger("udplab.history")

# Events that say a worker's state changed, and to what.
STATE_OF = {"paused": lambda e: "paused", "resumed": lambda e: "running",
            "stopped": lambda e: e.state}


class _Tracked:
    """What the recorder remembers of one live worker between flushes."""

    __slots__ = ("worker", "record", "seen")

    def __init__(self, worker: Worker, record: WorkerRecord):
        self.worker = worker
        self.record = record
        self.seen: tuple = ()


class Recorder:
    """Records one session (this app run) of a supervisor into a store."""

    def __init__(self, supervisor: Supervisor, store: HistoryStore, *, interval: float = 0.5,
                 queue: int = 200_000):
        self.supervisor = supervisor
        self.store = store
        self.interval = interval
        self.queue = queue
        self.session: int | None = None
        self._tracked: dict[str, _Tracked] = {}
        self._forgotten: dict[int, _Tracked] = {}  # dropped by the supervisor, not yet written
        # Workers of other machines of the fleet, by fleet-wide id (`b:client-1`): their
        # events come through the bus with a `machine`; `describe` (set by the fleet) says
        # what it last knew of such a worker (kind, spec, state, counters), or None.
        self.describe: Callable[[str], dict | None] | None = None
        self._remote: dict[str, WorkerRecord] = {}
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="udplab-history")
        self._lock = asyncio.Lock()
        self._subscription = None
        self._task: asyncio.Task | None = None

    async def call(self, fn, *args: Any) -> Any:
        """Run a store method in the store's own thread (one at a time) and await it."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    async def __aenter__(self) -> "Recorder":
        self.session = await self.call(self.store.new_session, time.time())
        self._subscription = self.supervisor.bus.subscribe(maxlen=self.queue)
        self.supervisor.on_forget.append(self._forget)
        self._task = asyncio.create_task(self._run(), name="history recorder")
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        self._task.cancel()
        self.supervisor.on_forget.remove(self._forget)
        await asyncio.wait([self._task])
        try:
            await self.flush()
            await self.call(self.store.end_session, self.session, time.time())
        finally:
            self._subscription.close()
            await self.call(self.store.close)
            self._executor.shutdown(wait=True)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.flush()
            except Exception:  # a full disk must not take the app (or its workers) down
                log.exception("could not write the history to %s", self.store.path)

    async def flush(self) -> None:
        """Write everything that happened since the last flush (now, not at the next tick)."""
        async with self._lock:
            events, lost = self._subscription.drain()
            records = self._collect(events)
            if records or lost:
                await self.call(self.store.write, self.session, records, lost)
            for record in records:
                record.states, record.events, record.dropped = [], [], 0

    async def history_id(self, worker: Worker) -> int | None:
        """The history id of a live (or recent) worker, after saving what is pending."""
        await self.flush()
        tracked = self._tracked.get(worker.id)
        return tracked.record.id if tracked is not None and tracked.worker is worker else None

    async def remote_history_id(self, worker_id: str) -> int | None:
        """The history id of another machine's worker (its fleet-wide id, `b:client-1`) in
        this session, after saving what is pending; None if none of its events came yet.
        Read from the store, not the agent: it answers while that machine is lost."""
        await self.flush()

        def query() -> int | None:
            return self.store.db.execute(
                "SELECT max(id) FROM workers WHERE session = ? AND worker = ?",
                (self.session, worker_id)).fetchone()[0]
        return await self.call(query)

    def _track(self, worker: Worker) -> _Tracked:
        tracked = self._tracked.get(worker.id)
        if tracked is None or tracked.worker is not worker:  # new, or an id used again
            record = WorkerRecord(id=None, worker=worker.id, kind=worker.kind,
                                  spec=worker.spec.to_dict(), state="running", local=None,
                                  target=None, counters={}, started=worker.started, ended=None,
                                  states=[(worker.started, "running")])
            tracked = self._tracked[worker.id] = _Tracked(worker, record)
        return tracked

    def _forget(self, worker: Worker) -> None:
        """The supervisor is about to drop `worker`: keep hold of it, so the next write has
        its final state even if it started and ended between two flushes. (Its record is
        filled in then, not now: a write in progress may be reading it.)"""
        tracked = self._track(worker)
        self._forgotten[id(tracked)] = tracked

    def _refresh(self, tracked: _Tracked) -> bool:
        """Copy a worker's state, address and counters into its record; whether they changed."""
        worker, record = tracked.worker, tracked.record
        seen = (worker.state, worker.local, tuple(worker.counters.items()), worker.ended)
        if seen == tracked.seen and record.id is not None:
            return False
        tracked.seen = seen
        if worker.state != record.state:
            record.state = worker.state
            record.states.append((worker.ended or time.time(), worker.state))
        record.local = list(worker.local) if worker.local else None
        record.target = list(worker.target.address[:2])
        record.counters = dict(worker.counters)
        record.ended = worker.ended
        return True

    def _collect(self, events: list) -> list[WorkerRecord]:
        """The records to write: every worker with news since the last flush."""
        dirty: dict[int, _Tracked] = {}
        remote: dict[str, WorkerRecord] = {}
        live = self.supervisor.workers
        for event in events:
            worker = live.get(event.worker)
            tracked = self._track(worker) if worker is not None else \
                self._tracked.get(event.worker)
            if tracked is None:
                record = self._remote_record(event)
                if record is not None:
                    record.events.append(event)
                    remote[event.worker] = record
                continue  # else not a worker's (an experiment's own error): nothing to file
            record = tracked.record
            record.events.append(event)
            if event.type in STATE_OF:
                state = STATE_OF[event.type](event)
                if state != record.state:
                    record.state = state
                    record.states.append((event.time, state))
            dirty[id(tracked)] = tracked
        forgotten, self._forgotten = self._forgotten, {}
        for key, tracked in forgotten.items():
            self._refresh(tracked)
            dirty[key] = tracked
        for worker in list(live.values()):
            tracked = self._track(worker)
            if self._refresh(tracked):
                dirty[id(tracked)] = tracked
        self._refresh_remote(remote.values())
        cap = self.store.cap
        for record in [t.record for t in dirty.values()] + list(remote.values()):
            if len(record.events) > cap:  # the store keeps only the newest anyway
                record.dropped += len(record.events) - cap
                del record.events[:-cap]
        # Forget workers that are gone from the supervisor and have nothing more to say.
        for worker_id in [i for i, t in self._tracked.items()
                          if i not in live and id(t) not in dirty]:
            del self._tracked[worker_id]
        return [t.record for t in dirty.values()] + list(remote.values())

    def _remote_record(self, event) -> WorkerRecord | None:
        """The record of another machine's worker (its id names the machine), made at its
        first event; None for an event of no worker (a machine's own `machine` events)."""
        if self.describe is None or getattr(event, "machine", None) is None \
                or ":" not in event.worker:
            return None
        record = self._remote.get(event.worker)
        if record is None:
            if len(self._remote) >= 10_000:  # forget the oldest ended ones first
                for key in [k for k, r in self._remote.items() if r.ended][:1000]:
                    del self._remote[key]
            record = self._remote[event.worker] = WorkerRecord(
                id=None, worker=event.worker, kind="?", spec={"machine": event.machine},
                state="running", local=None, target=None, counters={}, started=event.time,
                ended=None, states=[(event.time, "running")])
        return record

    def _refresh_remote(self, records) -> None:
        """What the fleet knows of these remote workers, and the state their events said."""
        for record in records:
            info = self.describe(record.worker) or {}
            if info.get("kind"):
                record.kind = info["kind"]
                record.spec = {**(info.get("spec") or {}), "machine": record.spec["machine"]}
                record.started = min(record.started, info.get("started") or record.started)
                record.local = info.get("local") or record.local
                record.target = info.get("target") or record.target
                record.counters = info.get("counters") or record.counters
            for event in record.events:
                state = STATE_OF[event.type](event) if event.type in STATE_OF else None
                if state is not None and state != record.state:
                    record.state = state
                    record.states.append((event.time, state))
                    if state not in ("running", "paused"):
                        record.ended = event.time
                if event.type == "removed":
                    self._remote.pop(record.worker, None)

    async def last_origin(self, machine: str, boot: str) -> int:
        """The agent's own number of the newest event of `machine`'s run `boot` that an
        earlier session of this history holds (0: none): where a restarted dashboard asks
        that agent to replay from."""
        def query() -> int:
            row = self.store.db.execute(
                "SELECT max(json_extract(data, '$.origin')) FROM events WHERE worker IN "
                "(SELECT id FROM workers WHERE session != ? AND worker LIKE ?) "
                "AND json_extract(data, '$.boot') = ?",
                (self.session, f"{machine}:%", boot)).fetchone()
            return int(row[0] or 0)
        return await self.call(query)
