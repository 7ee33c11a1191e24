"""An agent's event batches in order and each once: the dashboard's side of "nothing lost".

An agent numbers its batches 1, 2, 3… in each run (`boot`) and keeps its recent ones (see
agent.py). NATS keeps one publisher's order, so a batch numbered past the next one, or a hello
that counts more batches than have come, shows a gap: batches published while nats-server
was down (past the client's buffer) or lost in the reconnect. Then the batches after the gap
wait here while the agent is asked to publish the missing ones again (`replay`); they come
before its answer, and the waiting ones follow them: each worker's events enter the bus in
the order they happened, and a batch number is let in once (no event twice). What the agent
no longer has is counted exactly (each batch and hello says how many events the run has put
in batches so far, `total`) and said, with why.

No NATS here: the machine gives `ask` (the request) and `deliver` (onto the bus).
"""

import asyncio
import logging
from typing import Any, Awaitable, Callable

log = logging.getLogger("udplab.fleet")
ATTEMPTS = 3  # requests for a gap before its batches are given up
PAUSE = 1.0  # seconds between them (nats-server may be coming back)
# What an agent keeps (agent.py's REPLAY_BYTES), for saying why a batch is gone
KEPT = "it keeps its newest 32 MiB of batches"


class Sequence:
    """One agent's batches of its current run: in order, each once, gaps asked for again."""

    def __init__(self, name: str, *, deliver: Callable[[dict, bool], int],
                 ask: Callable[[int, int], Awaitable[dict]] | None,
                 say: Callable[[str], None], attempts: int = ATTEMPTS, pause: float = PAUSE):
        self.name = name
        self.deliver = deliver  # (batch, replayed) -> how many events entered the bus
        self.ask = ask  # (first, before) -> the agent's answer to `replay`; None: cannot ask
        self.say = say  # a line for the log (a `machine` event)
        self.attempts = attempts
        self.pause = pause
        self.boot: str | None = None
        self.batch = 0  # the last batch number delivered (or given up) in this run
        self.total: int | None = 0  # events of this run in batches up to `batch`, if known
        self.top = 0  # the highest batch number known to exist
        self.top_total: int | None = None  # `total` at `top`, if a hello said it
        self.held: dict[int, tuple[dict, bool]] = {}  # after a gap: batch, replayed?
        self.missed = 0  # batches that did not come live (a gap was seen)
        self.recovered = 0  # events that came again from the agent's buffer for a gap
        self.lost = 0  # events lost for good (batches, from an agent that does not count)
        self.duplicates = 0  # batches that came again and were let go
        self._episode: dict[str, Any] = {}
        self._task: asyncio.Task | None = None

    # --- what comes in (never awaits) -----------------------------------------------------

    def restart(self, boot: str, batch: int, total: int | None) -> None:
        """A run of the agent met: its batches up to `batch` (with `total` events) are not
        ours to get. What a previous run left held goes in, and its gaps are lost."""
        if self.batch < self.top:  # a gap of the previous run: what is held goes in
            self._give_up(self.top, lambda seq: f"{self.name} restarted: its new run does "
                                                "not have them")
            self._finish()
        self.cancel()
        self.boot, self.batch, self.total, self.top, self.top_total = \
            boot, batch, total, batch, total

    def live(self, batch: dict) -> None:
        """A batch as it was published (its `seq` is an int)."""
        seq = batch["seq"]
        if seq <= self.batch or seq in self.held:
            self.duplicates += 1
            return
        self.held[seq] = (batch, False)
        if seq >= self.top:
            self.top, self.top_total = seq, _int(batch.get("total"))
        self._advance()

    def replayed(self, batch: dict) -> None:
        """A batch the agent published again on our asking."""
        seq = batch.get("seq")
        if batch.get("boot") != self.boot or not isinstance(seq, int) \
                or not self.batch < seq <= self.top or seq in self.held:
            self.duplicates += 1
            return
        self.held[seq] = (batch, True)
        self._advance()

    def counted(self, batches: int, total: Any) -> None:
        """A hello: the run has published `batches` batches before it, and NATS keeps its
        order, so those that have not come by now will not."""
        if batches > self.top:
            self.top, self.top_total = batches, _int(total)
        self._advance()

    def cancel(self) -> "asyncio.Future | None":
        """Stop asking (closing, or a new run): something to await, or None."""
        task, self._task = self._task, None
        if task is None or task.done():
            return None
        task.cancel()
        return asyncio.wait([task])

    # --- in order --------------------------------------------------------------------------

    def _advance(self) -> None:
        """Deliver what is next in order; at a gap, ask for it (once at a time)."""
        self._deliver_ready()
        if self.batch >= self.top:
            return
        if self._task is not None and not self._task.done():
            return  # the asking in progress looks again after each answer
        if self.ask is None:
            self._give_up(self.top, lambda seq: "this dashboard cannot ask for them")
            self._finish()
            return
        self._task = asyncio.get_running_loop().create_task(
            self._recover(), name=f"recover {self.name}")

    def _deliver_ready(self) -> None:
        while self.batch + 1 in self.held:
            batch, replayed = self.held.pop(self.batch + 1)
            self.batch += 1
            self.total = _int(batch.get("total"))
            count = self.deliver(batch, replayed)
            if replayed:
                self.missed += 1
                self.recovered += count
                self._episode["recovered"] = self._episode.get("recovered", 0) + count

    async def _recover(self) -> None:
        """Ask the agent for the missing batches until none is missing; give up on what it
        cannot send (or after `attempts` requests that got no answer)."""
        failures: list[str] = []
        while self.batch < self.top:
            missing = [s for s in range(self.batch + 1, self.top + 1) if s not in self.held]
            if not missing:  # cannot be (the next one would have gone in): never spin
                break
            first, before = missing[0], missing[-1] + 1
            try:
                answer = await self.ask(first, before)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # nats-server away again, or the agent busy
                failures.append(str(exc))
                if len(failures) < self.attempts:
                    await asyncio.sleep(self.pause)
                    continue
                why = f"{self.name} did not answer when asked for them ({failures[-1]})"
                self._give_up(before - 1, lambda seq: why)
                failures = []
                continue
            failures = []
            # Its replayed batches came before its answer (one publisher's order): what is
            # still missing up to `before` it could not send.
            self._deliver_ready()
            self._give_up(before - 1, _why(self.name, self.boot, answer))
        self._finish()

    def _give_up(self, upto: int, why: Callable[[int], str]) -> None:
        """Deliver what is held up to `upto`, counting each gap before it as lost."""
        lost = self._episode.setdefault("lost", {})
        while self.batch < min(upto, self.top):
            seq = self.batch + 1
            if seq in self.held:
                self._deliver_ready()
                continue
            end = seq
            while end < self.top and end + 1 not in self.held:
                end += 1
            after = self._total_at(end)
            events = after - self.total if after is not None and self.total is not None \
                else None
            counts = lost.setdefault(why(seq), [0, 0, False])
            counts[0] += end - seq + 1
            self.missed += end - seq + 1
            if events is None:
                counts[2] = True
                self.lost += end - seq + 1
            else:
                counts[1] += events
                self.lost += events
            self.batch, self.total = end, after
        self._deliver_ready()

    def _total_at(self, seq: int) -> int | None:
        """The run's `total` at batch `seq` (one not here): from the next batch or a hello."""
        if seq == self.top:
            return self.top_total
        held = self.held.get(seq + 1)
        total = _int(held[0].get("total")) if held else None
        if total is None:
            return None
        return total - len(held[0].get("events") or ())

    def _finish(self) -> None:
        """Say what came of a gap: the events recovered, and those lost and why."""
        episode, self._episode = self._episode, {}
        recovered, lost = episode.get("recovered", 0), episode.get("lost", {})
        parts = []
        if recovered or not lost:
            parts.append(f"{recovered} event(s) of the outage recovered from {self.name}'s "
                         "buffer")
        for why, (batches, events, unknown) in lost.items():
            if unknown:
                parts.append(f"{batches} batch(es) of events lost ({self.name} is an older "
                             f"agent that does not count them): {why}")
            else:
                parts.append(f"{events} event(s) lost ({batches} batch(es)): {why}")
        line = f"Machine {self.name}: " + "; ".join(parts)
        log.info("%s", line)
        self.say(line)


def _why(name: str, boot: str | None, answer: Any) -> Callable[[int], str]:
    """Why the agent did not send batch `seq` again, from its answer to `replay`."""
    if not isinstance(answer, dict) or answer.get("boot") != boot:
        return lambda seq: f"{name} restarted: its new run does not have them"
    oldest = answer.get("oldest")

    def why(seq: int) -> str:
        if not isinstance(oldest, int) or seq < oldest:
            return f"{name}'s buffer no longer has them ({KEPT})"
        return f"{name} could not send them again (its connection's buffer was full)"
    return why


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None
