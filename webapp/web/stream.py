"""The two live streams: JSON events for scripts, HTML fragments for the page.

Each stream kind has one `Hub`: one bus subscription, drained at most once per
`flush_interval` (JSON) or `page_flush_interval` (page), encoded (JSON) or rendered (HTML)
once, and the same text handed to every connection. A connection that cannot keep up never
slows the hub or the UDP path: its small outbox overflows, and it gets what it missed
counted (JSON) or a fresh snapshot (page).
On the page stream read-only viewers (a class) get one message per
`viewer_flush_interval`: their outboxes hold the flushes in between and send them merged,
half a flush after the token holders' (the teacher's page), who get every flush, first.
A receive loop runs beside each send loop so a closed page is noticed at once (a handler
stuck on its queue would hang uvicorn's shutdown).
"""

import asyncio
import json
import math
import time
from collections import deque
from collections.abc import Callable, Iterator
from operator import attrgetter
from typing import Any

from starlette.responses import JSONResponse
from starlette.websockets import WebSocket, WebSocketDisconnect

from webapp.engine import Supervisor
from webapp.engine.events import Event
from webapp.engine.experiments import Experiments
from webapp.engine.history.datagrams import DATAGRAM_TYPES
from webapp.engine.recipes import Recipes
from webapp.web.fleetpage import RemoteCards
from webapp.web.render import Renderer
from webapp.web.settings import Settings

LADDER_TYPES = frozenset({"sent", "received", "dropped", "timeout", "gave-up", "rejected",
                          "reply", "error"})
# events after which the forms' worker pickers are drawn again (a worker ended or its
# machine was lost or is back: the socket options picker lists live ones only)
PICKED_TYPES = frozenset({"stopped", "machine"})
LADDER_EVERY = 0.25  # seconds: the ladder is redrawn at most this often
MACHINES_EVERY = 3.0  # seconds: the Machines panel's "last seen" is updated this often
MACHINES_CHECK = 1.0  # seconds: how often the Machines panel's rows are compared to the fleet
OUTBOX = 8  # messages a connection may fall behind before it is caught up the hard way
# Characters in one merged message: far below the 1 MiB a client takes by default
# (websockets' max_size), which piled-up batches of a flood went past (the client closed, 1009).
MERGED_MAX = 256 * 1024
JSON_EVENTS = 500  # events in one JSON stream message at most (an event is under ~500 bytes)
# Events that only move a card's numbers. A card that has only these is redrawn at most every
# CARD_EVERY seconds (every redraw is a morph of the whole card in every browser, the
# costliest part of a flush for the page), and once more when they stop, so its counters end
# exact; any other event (paused, stopped, error, ...) redraws it in the next flush.
COUNTING_TYPES = frozenset({"sent", "received", "dropped", "reply", "rejected", "waiting",
                            "timeout", "stream", "progress", "sampled", "queued", "throttled"})
CARD_EVERY = 0.1
# Events of one datagram or one request each (a flood brings thousands a second): the page's
# log lists each worker's at most `page_rows_per_second` (`PageHub._rows`); the summaries
# (sampled, stream, progress, queued, throttled) and the state changes are always listed.
BUDGETED_ROWS = frozenset(DATAGRAM_TYPES) | {"waiting", "timeout"}
# Another machine's card: a fleet of 40 busy agents had the page morph ~25 cards a flush.
REMOTE_CARD_EVERY = 0.5
SLACK = 0.005  # seconds: a flush this early for a slower connection still wakes it (timer jitter)


class RowBudget:
    """Per-worker token buckets for the page's log rows: `rate` rows a second, after a burst
    of `burst`. A bucket left alone long enough to be full again is forgotten (as good as a
    new one), so workers that come and go leave nothing behind."""

    def __init__(self, rate: float, burst: int):
        self.rate, self.burst = rate, burst
        self.full_after = burst / rate if rate > 0 else math.inf  # seconds to refill
        self.buckets: dict[str, tuple[float, float]] = {}  # worker: (tokens, when counted)

    def take(self, wanted: dict[str, int], now: float) -> dict[str, int]:
        """How many of the rows each worker `wanted` may be listed at `now` (the newest)."""
        buckets, granted = self.buckets, {}
        for worker, count in wanted.items():
            tokens, at = buckets.get(worker, (self.burst, now))
            tokens = min(self.burst, tokens + (now - at) * self.rate)
            granted[worker] = min(count, int(tokens))
            buckets[worker] = (tokens - granted[worker], now)
        for worker in [w for w, (_, at) in buckets.items() if now - at >= self.full_after]:
            del buckets[worker]
        return granted


class Outbox:
    """One connection's pending batches: (encoded text, what merging needs, events in it).

    `every`: the connection is woken at most once per this many seconds (0: every flush);
    batches offered in between are held and go out merged when it is."""

    def __init__(self, every: float = 0.0):
        self.messages: deque[tuple[str, Any, int]] = deque()
        self.ready = asyncio.Event()
        self.lost = 0  # events in batches dropped because the connection was slow
        self.overflowed = False
        self.every = every
        self.woken = -math.inf  # when it was last woken (the loop's clock)
        self.held = False  # batches wait for its next turn

    def offer(self, text: str, parts: Any, events: int, now: float | None = None) -> None:
        """Queue a batch; wake the connection at `now` (None: hold it for a later `wake`)."""
        if len(self.messages) >= OUTBOX:
            self.lost += self.messages.popleft()[2]
            self.overflowed = True
        self.messages.append((text, parts, events))
        if now is None:
            self.held = True
        else:
            self.wake(now)

    def wake(self, now: float) -> None:
        """Let the connection send what it holds, if its turn has come."""
        if now - self.woken >= self.every - SLACK:
            self.woken, self.held = now, False
            self.ready.set()
        else:
            self.held = True


class Hub:
    """Drains one subscription per flush and hands the encoded batch to every outbox."""

    keeps_state = False  # True: encode even with no watcher (the encoder tracks state)

    def __init__(self, supervisor: Supervisor,
                 encode: Callable[[list[Event], int], tuple[str, Any] | None], interval: float,
                 merge: Callable[[list[Any]], str] = lambda parts: "".join(parts),
                 max_events: int | None = None, viewer_interval: float | None = None):
        self.merge = merge
        self.max_events = max_events  # events per message at most (None: a flush is one)
        self.subscription = supervisor.bus.subscribe(maxlen=100_000)
        self.encode = encode
        self.interval = interval  # between flushes, when a token holder watches
        # between one read-only viewer's messages (their outboxes hold the flushes between)
        self.viewer_interval = max(interval, viewer_interval or interval)
        self.outboxes: set[Outbox] = set()
        supervisor.spawn(self._run(), name="stream hub")

    def outbox(self, viewer: bool) -> Outbox:
        """A new connection's outbox: a viewer's is woken once per `viewer_interval`."""
        return Outbox(self.viewer_interval if viewer and self.viewer_interval > self.interval
                      else 0.0)

    def _timeout(self, now: float) -> float | None:
        """Seconds until the hub must flush with no new event (None: it need not)."""
        held = [o.woken + o.every for o in self.outboxes if o.held]
        return max(0.0, min(held) - now) if held else None

    async def _wait(self) -> None:
        timeout = self._timeout(asyncio.get_running_loop().time())
        if timeout is None:
            return await self.subscription.wait()
        try:
            async with asyncio.timeout(timeout):
                await self.subscription.wait()
        except TimeoutError:
            pass

    def _parts(self, events: list[Event]) -> list[list[Event]]:
        # A flush late on a busy machine can hold thousands of events: one message of them
        # passed the 1 MiB a websockets client takes by default (it closed, 1009).
        if self.max_events is None or len(events) <= self.max_events:
            return [events]
        return [events[i:i + self.max_events] for i in range(0, len(events), self.max_events)]

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while True:
                await self._wait()
                started = loop.time()
                events, dropped = self.subscription.drain()
                if not self.outboxes and not self.keeps_state:
                    continue  # nobody watches: nothing to encode
                # Token holders (the teacher's page: every 0) first: their copy is written
                # before a class's hundred, not after half of them.
                outboxes = sorted(self.outboxes, key=attrgetter("every"))
                drivers = any(o.every == 0 for o in outboxes)
                for part in self._parts(events):
                    encoded = self.encode(part, dropped)
                    dropped = 0
                    if encoded:
                        for outbox in outboxes:
                            outbox.offer(*encoded, len(part),
                                         started if outbox.every == 0 or not drivers else None)
                # no token holder watching: the viewers' pace is enough
                pace = self.interval if drivers else self.viewer_interval
                if drivers:
                    # Viewers' copies half a flush later: a class's hundred writes (and its
                    # clients' reads) then do not take both CPUs while the teacher's browser
                    # receives and draws the same rows.
                    await asyncio.sleep(max(0.0, pace / 2 - (loop.time() - started)))
                now = loop.time()
                for outbox in outboxes:
                    if outbox.held:
                        outbox.wake(now)  # what it held, now that its turn has come
                await asyncio.sleep(max(0.0, pace - (loop.time() - started)))
        finally:
            self.subscription.close()


def merged_groups(pending: list[tuple[str, Any, int]]) -> Iterator[list[tuple[str, Any, int]]]:
    """Consecutive batches to merge into one message each, in order, each group's texts adding
    up to at most `MERGED_MAX` characters (a batch bigger than that goes alone)."""
    group: list[tuple[str, Any, int]] = []
    size = 0
    for batch in pending:
        if group and size + len(batch[0]) > MERGED_MAX:
            yield group
            group, size = [], 0
        group.append(batch)
        size += len(batch[0])
    if group:
        yield group


async def serve(websocket: WebSocket, hub: Hub, first: Callable[[], str],
                caught_up: Callable[[Outbox], str]) -> None:
    """Send `first()`, then the hub's messages until the peer goes. After an overflow the
    connection gets `caught_up(outbox)` before the newest message."""
    async def receive() -> None:
        while (await websocket.receive())["type"] != "websocket.disconnect":
            pass  # the streams take no commands; anything sent is ignored

    async def pump() -> None:
        await websocket.send_text(first())
        while True:
            await outbox.ready.wait()
            outbox.ready.clear()
            if outbox.overflowed:
                outbox.overflowed = False
                newest = outbox.messages.pop()
                outbox.messages.clear()
                await websocket.send_text(caught_up(outbox))
                outbox.lost = 0
                outbox.messages.append(newest)
            # Still one message per flush: batches that piled up while this connection
            # was sending go out merged.
            pending = list(outbox.messages)
            outbox.messages.clear()
            for group in merged_groups(pending):
                if len(group) == 1:
                    await websocket.send_text(group[0][0])
                else:
                    await websocket.send_text(hub.merge([parts for _, parts, _ in group]))

    state = websocket.app.state
    viewer = getattr(websocket.state, "udplab_auth", None) == "viewer"
    address = websocket.client.host if websocket.client else ""
    # Check and count with no await between: 150 handshakes at once cannot slip past a cap.
    refusal = _refusal(state, viewer, address)
    if refusal:
        await websocket.send_denial_response(JSONResponse({"error": refusal}, status_code=429))
        return
    kind = "viewers" if viewer else "drivers"
    outbox = hub.outbox(viewer)
    state.watchers += 1
    state.watcher_kinds[kind] += 1
    state.watcher_addresses[address] = state.watcher_addresses.get(address, 0) + 1
    tasks: list[asyncio.Task] = []
    try:
        await websocket.accept()
        hub.outboxes.add(outbox)
        tasks = [asyncio.create_task(receive()), asyncio.create_task(pump())]
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        state.watchers -= 1
        state.watcher_kinds[kind] -= 1
        left = state.watcher_addresses.pop(address) - 1
        if left:
            state.watcher_addresses[address] = left
        hub.outboxes.discard(outbox)
        for task in tasks:
            task.cancel()
        for outcome in await asyncio.gather(*tasks, return_exceptions=True):
            if isinstance(outcome, Exception) and not isinstance(
                outcome, WebSocketDisconnect | RuntimeError | OSError
            ):
                raise outcome


def _refusal(state: Any, viewer: bool, address: str) -> str | None:
    """Why one more watcher may not connect, naming the flag that allows it; None: it may.

    Read-only viewers (a class) and token holders (the teacher's tabs and scripts) are
    counted apart, so a full class never locks the teacher out; one address may hold only a
    few, so one runaway tab or script cannot take every slot."""
    settings = state.settings
    if viewer and state.watcher_kinds["viewers"] >= settings.max_viewers:
        return (f"{state.watcher_kinds['viewers']} read-only viewers are connected, the most "
                "this dashboard allows: close a viewer tab, or start udplab with a higher "
                "--max-viewers")
    if not viewer and state.watcher_kinds["drivers"] >= settings.max_watchers:
        return (f"{state.watcher_kinds['drivers']} watchers with the token are connected, the "
                "most this dashboard allows: close a tab, or start udplab with a higher "
                "--max-watchers")
    per_address = settings.max_watchers_per_address
    if per_address and state.watcher_addresses.get(address, 0) >= per_address:
        return (f"{state.watcher_addresses[address]} watchers are connected from {address}, "
                "the most one address may have: close a tab there, or start udplab with a "
                "higher --max-watchers-per-address")
    return None


def json_hub(supervisor: Supervisor, settings: Settings) -> Hub:
    """The hub of `WS /api/events`: `{"events": [...], "dropped": N}` per batch."""

    def encode(events: list[Event], dropped: int) -> tuple[str, Any]:
        parts = ([e.to_dict() for e in events], dropped)
        return json.dumps({"events": parts[0], "dropped": dropped}), parts

    def merge(batches: list[Any]) -> str:
        return json.dumps({"events": [e for events, _ in batches for e in events],
                           "dropped": sum(dropped for _, dropped in batches)})

    return Hub(supervisor, encode, settings.flush_interval, merge, max_events=JSON_EVENTS)


async def json_stream(websocket: WebSocket, supervisor: Supervisor, hub: Hub) -> None:
    """`WS /api/events`; the first message adds `workers`, a snapshot."""

    def first() -> str:
        return json.dumps({"events": [], "dropped": 0,
                           "workers": [w.to_dict() for w in supervisor.workers.values()]})

    def caught_up(outbox: Outbox) -> str:
        return json.dumps({"events": [], "dropped": outbox.lost})

    await serve(websocket, hub, first, caught_up)


class PageHub(Hub):
    """The hub of `WS /ws/page`: card and row fragments rendered once per flush.

    Every connection sees the same updates, so a new connection's snapshot shows the workers
    as of the hub's last flush (`shown`): the next update then fits it exactly."""

    keeps_state = True

    def __init__(self, supervisor: Supervisor, renderer: Renderer, settings: Settings,
                 experiments: Experiments, recipes: Recipes, fleet: Any = None):
        self.supervisor, self.renderer, self.settings = supervisor, renderer, settings
        self.experiments, self.recipes = experiments, recipes
        # with --nats: the Machines panel, and cards of other machines' workers
        self.fleet = fleet if fleet is not None and fleet.connection is not None else None
        self.remote = RemoteCards(self.fleet.describe if self.fleet is not None else None)
        self.machines_at = 0.0  # when the Machines panel's rows were last compared
        self.seen_at = 0.0  # when its "last seen" was last sent
        self.machines_shown: Any = None  # what its rows say (not "last seen"), as last sent
        self.shown: set[str] = set(supervisor.workers)
        self.last_seq = supervisor.bus.recent[-1].seq if supervisor.bus.recent else 0
        self.hidden_total = 0
        self.row_budget = RowBudget(settings.page_rows_per_second, settings.page_row_burst)
        self.runs_shown = len(experiments.runs)
        self.ladder_at, self.ladder_due = 0.0, None  # when the ladder was last redrawn / is due
        self.card_at: dict[str, float] = {}  # when each card was last drawn (the loop's clock)
        self.cards_due: dict[str, float] = {}  # cards with counts not shown yet: when to draw
        super().__init__(supervisor, self._update, settings.page_flush_interval,
                         viewer_interval=settings.viewer_flush_interval)

    def _timeout(self, now: float) -> float | None:
        # a ladder or card redraw is due, or the Machines panel's "last seen" ages: wake up
        # for it even if nothing else happens
        timeouts = [t for t in (super()._timeout(now),
                                LADDER_EVERY if self.ladder_due else None,
                                MACHINES_EVERY if self.fleet is not None else None,
                                max(0.0, min(self.cards_due.values()) - now)
                                if self.cards_due else None) if t is not None]
        return min(timeouts, default=None)

    def snapshot(self, viewer: bool = False) -> str:
        """Everything the live parts show, consistent with the next update."""
        workers = [w for i, w in self.supervisor.workers.items() if i in self.shown]
        workers += [c for i, c in self.remote.cards.items() if i in self.shown]
        recent = [e for e in self.supervisor.bus.recent if e.seq <= self.last_seq]
        renderer = self.renderer
        return renderer.snapshot(
            workers, recent[-self.settings.page_rows:],
            renderer.render_experiments(self.experiments, oob=True)
            + renderer.render_recipe(self.recipes, oob=True, viewer=viewer)
            + renderer.render_ladder(self.supervisor, oob=True, remote=self.remote.cards)
            + (renderer.render_machines(self.fleet, oob=True) if self.fleet else "")
            + renderer.render_pickers(workers, oob=True))

    def _machines(self, events: list[Event]) -> str:
        """The Machines panel's part of an update: the whole panel only when what a row says
        changed (a state, a worker count, an address), else each "last seen" alone every few
        seconds. (Every hello and batch moves a "last seen": redrawing the whole panel for
        that made a page of 40 machines lay it all out again every 3 s.)"""
        now = time.monotonic()
        if now - self.machines_at < MACHINES_CHECK and \
                not any(e.type == "machine" for e in events):
            return ""
        self.machines_at = now
        machines = self.fleet.status()
        rows = [(m["name"], m["state"], m["workers"],
                 [(a.get("interface"), a.get("address")) for a in m["interfaces"]])
                for m in machines]
        if rows != self.machines_shown:
            self.machines_shown, self.seen_at = rows, now
            return self.renderer.render_machines(self.fleet, oob=True, machines=machines)
        if now - self.seen_at >= MACHINES_EVERY:
            self.seen_at = now
            return self.renderer.render_machines_seen(machines)
        return ""

    def _throttle(self, changed: list, new: list, removed: list[str], events: list[Event],
                  dropped: int, cards: dict) -> list:
        """The changed cards to draw in this flush: a card whose events only counted is drawn
        at most every CARD_EVERY seconds (another machine's: REMOTE_CARD_EVERY), and once more
        when its counts stop (`cards_due`)."""
        now = asyncio.get_running_loop().time()
        counting: set[str] = set()
        urgent: set[str] = set()
        if not dropped:
            for e in events:
                (counting if e.type in COUNTING_TYPES else urgent).add(e.worker)
        card_at, due, remote = self.card_at, self.cards_due, self.remote.cards
        drawn = []
        for card in changed:
            every = REMOTE_CARD_EVERY if card.id in remote else CARD_EVERY
            if card.id in counting and card.id not in urgent and \
                    now - card_at.get(card.id, -math.inf) < every:
                due.setdefault(card.id, card_at[card.id] + every)
            else:
                drawn.append(card)
        late = {i for i, t in due.items() if t <= now} - {c.id for c in drawn}
        drawn += [cards[i] for i in late if i in cards and i in self.shown]
        for card in drawn + new:
            card_at[card.id] = now
            due.pop(card.id, None)
        for worker_id in removed + [i for i in due if i not in cards]:
            card_at.pop(worker_id, None)
            due.pop(worker_id, None)
        return drawn

    def _rows(self, events: list[Event]) -> list[Event]:
        """The events the log lists, in order (the newest `rows_per_flush` at most): every
        event but those of one datagram or request each (`BUDGETED_ROWS`), and of each
        worker's of those (a datagram received, a reply, ...) the newest its budget allows:
        `page_rows_per_second`, after a burst of `page_row_burst`. A broadcast heard by 30
        listeners lists 30 rows; a flood of 1 000 datagrams/s lists 200 a second. Nobody reads
        a flood row by row, but every row costs each browser a layout and a paint: a flood
        listed in full kept the teacher's Chromium so busy that the rows it listed were
        90-120 ms old (issue 17). The history and the downloads keep every event; the cards'
        counters stay exact."""
        budgeted: dict[str, list[int]] = {}  # worker: indices of its budgeted events
        for i, e in enumerate(events):
            if e.type in BUDGETED_ROWS:
                budgeted.setdefault(e.worker, []).append(i)
        granted = self.row_budget.take({w: len(i) for w, i in budgeted.items()},
                                       asyncio.get_running_loop().time())
        skipped = {i for worker, indices in budgeted.items()
                   for i in indices[:len(indices) - granted[worker]]}
        kept = [e for i, e in enumerate(events) if i not in skipped] if skipped else events
        return kept[-self.settings.rows_per_flush:]

    def _update(self, events: list[Event], dropped: int) -> str | None:
        workers, shown = self.supervisor.workers, self.shown
        if events:
            self.last_seq = events[-1].seq
        touched = set(workers) if dropped else {e.worker for e in events}
        new = [w for w in workers.values() if w.id not in shown]
        changed = [workers[i] for i in touched if i in workers and i in shown]
        if self.fleet is not None:
            cards = self.remote.cards
            touched_remote = self.remote.apply(events) | (set(cards) if dropped else set())
            new += [c for c in cards.values() if c.id not in shown]
            changed += [cards[i] for i in touched_remote if i in cards and i in shown]
            removed = sorted(shown - set(workers) - set(cards))
            every_card = {**workers, **cards}
        else:
            removed = sorted(shown - set(workers))
            every_card = workers
        shown.difference_update(removed)
        shown.update(w.id for w in new)
        changed = self._throttle(changed, new, removed, events, dropped, every_card)
        rows = self._rows(events)
        hidden = dropped + len(events) - len(rows)
        self.hidden_total += hidden
        if not self.outboxes:
            return None  # nobody watches: the state above is kept, nothing is rendered
        extra = ""
        runs = self.experiments.runs.values()
        if len(runs) != self.runs_shown or any(touched & run.workers for run in runs):
            self.runs_shown = len(runs)
            extra = self.renderer.render_experiments(self.experiments, oob=True)
        if self.fleet is not None:
            extra += self._machines(events)
        if new or removed or self.remote.learned \
                or any(e.type in PICKED_TYPES for e in events):
            # the forms' worker pickers follow the cards (a new client is a target at once)
            extra += self.renderer.render_pickers(
                [w for i, w in workers.items() if i in shown]
                + [c for c in self.remote.cards.values() if c.id in shown], oob=True)
        run = self.recipes.latest
        if run and any(e.type == "step" or e.worker in run.workers.values() for e in events):
            extra += self.renderer.render_recipe(self.recipes, oob=True)
        now = asyncio.get_running_loop().time()
        if self.ladder_due is not None and now >= self.ladder_due or \
                any(e.type in LADDER_TYPES for e in events):
            if now - self.ladder_at >= LADDER_EVERY:  # a redrawn SVG costs the browser most
                extra += self.renderer.render_ladder(self.supervisor, oob=True,
                                                      remote=self.remote.cards)
                self.ladder_at, self.ladder_due = now, None
            else:
                self.ladder_due = self.ladder_at + LADDER_EVERY
        if not (new or changed or removed or rows or hidden or extra):
            return None
        text = self.renderer.update(new, changed, removed, rows,
                                    self.hidden_total if hidden else 0, extra)
        return text, text  # fragments merge by simple concatenation


async def page_stream(websocket: WebSocket, hub: PageHub, viewer: bool = False) -> None:
    """`WS /ws/page`: a full snapshot on connect, then the hub's fragments."""
    await serve(websocket, hub, lambda: hub.snapshot(viewer), lambda _: hub.snapshot(viewer))
