"""The supervisor: starts, lists and stops workers, and owns every worker task.

Use it as `async with Supervisor() as supervisor:`; leaving the block stops every worker
and closes every socket.
"""

import asyncio
import itertools
import time
from typing import Any

from webapp.engine.bus import EventBus
from webapp.engine.errors import Conflict, UnknownWorker
from webapp.engine.events import Error, Event, Removed, Stopped
from webapp.engine.specs import parse_spec
from webapp.engine.udp import resolve
from webapp.engine.workers import WORKER_CLASSES, Worker


class Supervisor:
    """Owns the workers of one app: their tasks, sockets and event history."""

    def __init__(self, bus: EventBus | None = None, *, history: int = 1000):
        self.bus = bus or EventBus()
        self.history = history
        self.workers: dict[str, Worker] = {}
        self._numbers = itertools.count(1)
        self._group: asyncio.TaskGroup | None = None

    async def __aenter__(self) -> "Supervisor":
        self._group = asyncio.TaskGroup()
        await self._group.__aenter__()
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        await self.stop_all()
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
        if worker_id in self.workers:
            raise Conflict(
                f"A worker named {worker_id!r} already exists: pick another name, "
                "or stop and remove that one first",
                field="name",
            )
        target = await resolve(spec.host, spec.port, passive=spec.kind == "server")
        worker = WORKER_CLASSES[spec.kind](worker_id, spec, target, self.bus,
                                           history=self.history)
        worker.open()
        worker.state = "running"
        self.workers[worker_id] = worker
        worker.task = self._group.create_task(self._run(worker), name=f"worker {worker_id}")
        return worker

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
        worker.emit(Stopped, f"{worker.kind.capitalize()} {worker.id} {state}", state=state)

    def get(self, worker_id: str) -> Worker:
        """The worker with this id, or `UnknownWorker`."""
        try:
            return self.workers[worker_id]
        except KeyError:
            raise UnknownWorker(
                f"There is no worker {worker_id!r}: list them with GET /api/workers"
            ) from None

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
        worker.emit(Removed, f"{worker.kind.capitalize()} {worker_id} removed")
        return worker

    async def stop_all(self) -> None:
        """Stop every worker."""
        for worker_id in list(self.workers):
            await self.stop(worker_id)

    def events(self, worker_id: str) -> list[Event]:
        """A worker's kept events, oldest first."""
        return list(self.get(worker_id).history)
