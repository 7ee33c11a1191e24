"""The agent: one lab machine's engine, driven over NATS instead of HTTP.

It answers request/reply commands on `udplab.<name>.cmd.<verb>` with JSON, publishes its
workers' events in batches on `udplab.<name>.events` (one message per flush, at most every
`FLUSH` seconds, never one per datagram) and says it is alive on `udplab.<name>.hello` every
`HEARTBEAT` seconds. Publishing only hands bytes to the client's buffer: a slow or absent
dashboard never makes a worker wait.
"""

import asyncio
import collections
import json
import logging
import secrets
import time
from typing import Any, Awaitable, Callable

import nats
from nats.aio.msg import Msg
from nats.errors import Error as NatsError

from webapp import __version__
from webapp.engine import BadSpec, EngineError
from webapp.fleet import wire
from webapp.fleet.config import subject
from webapp.fleet.machine import LocalMachine, addresses

log = logging.getLogger("udplab.agent")
FLUSH = 0.05  # seconds between event batches at most
HEARTBEAT = 2.0  # seconds between hellos; the dashboard calls a machine lost after 10 s
BATCH_BYTES = 256 * 1024  # a message's events at most (nats-server's max_payload is 1 MiB)
# A restarted dashboard, or one that sees a gap in the batch numbers (nats-server was away),
# asks for the batches it missed (`replay`): the agent keeps its recent ones. Agent-side buffers rather than JetStream: the plain nats-server 2.9 config that
# `fleet init` writes needs no stream, storage or extra permissions, and the agent, which
# numbers its own batches, already knows what to resend. The buffer is bounded by bytes.
REPLAY_BYTES = 32 * 1024 * 1024
# Commands that take seconds (a lab's build runs some 40 `ip` commands): answered from a task
# of their own, since the NATS client hands one subscription's messages over one at a time
# and every other command would wait behind them.
SLOW = frozenset({"lab-build", "lab-teardown", "lab-scenario"})


class Agent:
    """Serves a `LocalMachine` (its supervisor) to the fleet over one NATS connection."""

    def __init__(self, machine: LocalMachine, nc: nats.NATS, *, flush: float = FLUSH,
                 heartbeat: float = HEARTBEAT):
        self.machine = machine
        self.name = machine.name
        self.nc = nc
        self.flush_every = flush
        self.heartbeat = heartbeat
        self.boot = secrets.token_hex(8)  # tells the dashboard this is a new run of the agent
        self.batches = 0
        self.total = 0  # events put in batches: lets the dashboard count exactly what it lost
        self.unsent = 0  # batches that could not be handed to NATS (its buffer full, offline)
        self.started = time.time()
        self._subscription = machine.supervisor.bus.subscribe(maxlen=100_000)
        self.kept: collections.deque[tuple[int, bytes]] = collections.deque()  # (seq, body)
        self.kept_bytes = 0
        self.replay_bytes = REPLAY_BYTES
        self._aside: set[asyncio.Task] = set()  # slow commands in progress
        self.commands: dict[str, Callable[[dict], Awaitable[Any]]] = {
            "start": lambda a: machine.start(a.get("spec")),
            "stop": lambda a: machine.stop(_id(a)),
            "remove": lambda a: machine.remove(_id(a)),
            "pause": lambda a: machine.pause(_id(a)),
            "resume": lambda a: machine.resume(_id(a)),
            "workers": lambda a: machine.workers(),
            "get": lambda a: machine.get(_id(a)),
            "events": lambda a: machine.events(_id(a)),
            "interfaces": lambda a: machine.interfaces(),
            "ports": lambda a: machine.ports(a.get("query")),
            "options": lambda a: machine.options(_id(a)),
            "set-option": lambda a: machine.set_option(_id(a), a.get("name"), a.get("value")),
            # the lab, built by this agent's own supervisor under its own flags
            "lab": lambda a: machine.lab(),
            "lab-build": lambda a: machine.build_lab(),
            "lab-teardown": lambda a: machine.teardown_lab(),
            "lab-scenario": lambda a: machine.lab_scenario(a.get("name")),
            "hello": lambda a: _value(self.hello()),
            "replay": self.replay,
        }

    def hello(self) -> dict[str, Any]:
        """What the heartbeat says: who, which run, how many workers, which addresses."""
        status = self.machine.status()
        return {"machine": self.name, "boot": self.boot, "version": __version__,
                "started": self.started, "time": time.time(), "batches": self.batches,
                "total": self.total,
                "workers": status["workers"], "interfaces": status["interfaces"]}

    async def subscribe(self) -> None:
        """Take this machine's commands (nats-server may refuse: see `Connection`)."""
        await self.nc.subscribe(subject(self.name, "cmd", ">"), cb=self._dispatch)
        # Subscribe, then flush: a request sent before the server knows our subscription
        # would find no responder.
        await self.nc.flush()

    async def serve(self) -> None:
        """Publish events and hellos until cancelled (after `subscribe()`)."""
        await self.nc.publish(subject(self.name, "hello"), wire.dumps(self.hello()))
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(self._publish_events(), name="agent events")
                group.create_task(self._beat(), name="agent heartbeat")
        finally:
            self._subscription.close()

    async def _dispatch(self, msg: Msg) -> None:
        """A command now, or a slow one in a task of its own (see `SLOW`)."""
        if msg.subject.rsplit(".", 1)[-1] not in SLOW:
            await self._command(msg)
            return
        task = asyncio.create_task(self._command(msg), name=f"agent {msg.subject}")
        self._aside.add(task)
        task.add_done_callback(self._aside.discard)

    async def _command(self, msg: Msg) -> None:
        verb = msg.subject.rsplit(".", 1)[-1]
        try:
            args = json.loads(msg.data) if msg.data else {}
            if not isinstance(args, dict):
                raise BadSpec("A command's body must be a JSON object")
            handler = self.commands.get(verb)
            if handler is None:
                raise BadSpec(f"This agent does not know the command {verb!r}: is it older "
                              "than the dashboard?")
            reply = wire.ok(await handler(args))
        except EngineError as exc:
            reply = wire.failure(exc)
        except ValueError:
            reply = wire.failure(BadSpec("A command's body must be JSON"))
        except Exception as exc:  # one bad command must not end the agent
            log.exception("command %s failed", verb)
            reply = wire.failure(EngineError(f"The agent {self.name} failed: {exc!r}"))
        if msg.reply:
            await msg.respond(reply)

    async def _publish_events(self) -> None:
        sub = self._subscription
        while True:
            await sub.wait()
            await self.publish_pending()
            await asyncio.sleep(self.flush_every)  # what comes meanwhile goes in the next one

    async def publish_pending(self) -> None:
        """Publish what the workers said since the last batch: one message, or a few of at
        most `BATCH_BYTES` when there is a lot. While nats-server is away the client buffers
        a little; past that a batch is not sent, and the gap in the numbers says so."""
        events, dropped = self._subscription.drain()
        chunk: list[bytes] = []
        size = 0
        for event in events:
            encoded = wire.dumps(event.to_dict())
            if chunk and size + len(encoded) > BATCH_BYTES:
                await self._publish_batch(chunk, dropped)
                chunk, size, dropped = [], 0, 0
            chunk.append(encoded)
            size += len(encoded) + 1
        if chunk or dropped:
            await self._publish_batch(chunk, dropped)

    async def _publish_batch(self, events: list[bytes], dropped: int) -> None:
        self.batches += 1
        self.total += len(events)
        head = wire.dumps({"machine": self.name, "boot": self.boot, "seq": self.batches,
                           "total": self.total, "dropped": dropped})
        body = head[:-1] + b',"events":[' + b",".join(events) + b"]}"
        self.kept.append((self.batches, body))
        self.kept_bytes += len(body)
        while self.kept_bytes > self.replay_bytes and len(self.kept) > 1:
            self.kept_bytes -= len(self.kept.popleft()[1])
        try:
            await self.nc.publish(subject(self.name, "events"), body)
        except NatsError:  # offline with a full buffer, or closing: this batch is lost
            self.unsent += 1

    async def replay(self, args: dict) -> dict[str, Any]:
        """Publish again the kept batches numbered `first` ≤ seq < `before` of run `boot`
        (marked `replay`), in order; how many, and the oldest kept. The dashboard asks when
        it met this run late (it restarted) and whenever it sees a gap in the numbers."""
        first, before = args.get("first"), args.get("before")
        if not isinstance(first, int) or not isinstance(before, int):
            raise BadSpec("replay needs the numbers 'first' and 'before'")
        sent = 0
        if args.get("boot") == self.boot:
            for seq, body in list(self.kept):
                if first <= seq < before:
                    try:
                        await self.nc.publish(subject(self.name, "events"),
                                              b'{"replay":true,' + body[1:])
                    except NatsError:  # the client's buffer is full: the rest stays lost
                        break
                    sent += 1
        return {"replayed": sent, "oldest": self.kept[0][0] if self.kept else None,
                "boot": self.boot}

    async def finish(self) -> None:
        """After its workers stopped: send their last events, and make sure they left."""
        await self.publish_pending()
        await self.nc.flush(timeout=2)

    async def _beat(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat)
            if self.nc.is_connected:
                try:
                    await self.nc.publish(subject(self.name, "hello"),
                                          wire.dumps(self.hello()))
                except NatsError:  # gone again meanwhile: the next beat will tell
                    pass


def _id(args: dict) -> str:
    worker_id = args.get("id")
    if not isinstance(worker_id, str):
        raise BadSpec("The command needs the worker's id")
    return worker_id


async def _value(value: Any) -> Any:
    return value
