"""HTML rendering: the page, and the fragments pushed to it over the WebSocket.

Every pushed fragment carries `hx-swap-oob`, so htmx places it by id and never replaces the
WebSocket's own element.
"""

import time
from collections.abc import Iterable

import jinja2
from markupsafe import Markup

from webapp.engine.events import Event, host_port
from webapp.engine.specs import kind_name
from webapp.engine.workers import Worker
from webapp.web.fleetpage import dom_id, shown_id
from webapp.web.ladder import layout


def make_environment(templates_dir) -> jinja2.Environment:
    """The Jinja2 environment for pages and partials, autoescaping everything."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(templates_dir)),
        autoescape=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["clock"] = lambda t: time.strftime("%H:%M:%S", time.localtime(t)) + (
        f".{int(t % 1 * 1000):03d}"
    )
    env.filters["addr"] = host_port  # 127.0.0.1:1060, [::1]:1060
    env.filters["kind_name"] = kind_name  # spoofer → impostor, as the panels say
    env.filters["who"] = shown_id
    env.filters["dom_id"] = dom_id
    env.globals["backoff_steps"] = backoff_steps
    return env


def backoff_steps(worker: Worker, limit: int = 12) -> list[dict]:
    """A client's newest waits, for its backoff timeline: each wait's length and how it
    ended (a reply, a timeout, or giving up)."""
    steps: list[dict] = []
    for event in worker.history:
        if event.type == "waiting":
            steps.append({"delay": event.delay, "end": "waiting"})
        elif event.type in ("reply", "timeout") and steps and steps[-1]["end"] == "waiting":
            steps[-1]["end"] = event.type
        elif event.type == "gave-up" and steps:
            steps[-1]["end"] = "gave-up"
    steps = steps[-limit:]
    longest = max((s["delay"] for s in steps), default=1) or 1
    for step in steps:
        step["width"] = max(2, round(100 * step["delay"] / longest))
    return steps


class Renderer:
    """Renders the page's fragments from engine objects."""

    def __init__(self, env: jinja2.Environment):
        self.env = env
        self.card = env.get_template("partials/_worker_card.html")
        self.rows = env.get_template("partials/_event_rows.html")
        self.batch = env.get_template("partials/_batch.html")
        self.experiments = env.get_template("partials/_experiments.html")
        self.recipe = env.get_template("partials/_recipe.html")
        self.ladder = env.get_template("partials/_ladder.html")
        self.machines = env.get_template("partials/_machines.html")
        self.pickers = env.get_template("partials/_pickers.html")
        self.machine_seen = env.get_template("partials/_machine_seen.html")

    # Both return Markup: the HTML is escaped already (autoescape), so `{{ rows }}` in a page
    # must not escape it a second time.
    def render_card(self, worker: Worker, *, oob: bool = False) -> Markup:
        """One worker's card."""
        return Markup(self.card.render(w=worker, oob=oob))

    def render_rows(self, events: Iterable[Event]) -> Markup:
        """Event-log rows, newest first."""
        return Markup(self.rows.render(events=reversed(list(events))))

    def render_experiments(self, experiments, *, oob: bool = False) -> Markup:
        """The "Who was fooled?" tables, newest run first (the last three)."""
        runs = [experiments.to_dict(run) for run in list(experiments.runs.values())[-3:]]
        return Markup(self.experiments.render(runs=reversed(runs), oob=oob))

    def render_recipe(self, recipes, *, oob: bool = False, viewer: bool = False) -> Markup:
        """The newest recipe run's steps: the book's words beside what happened here."""
        run = recipes.latest
        return Markup(self.recipe.render(run=run.to_dict() if run else None, oob=oob,
                                         viewer=viewer))

    def render_ladder(self, supervisor, *, oob: bool = False, remote=None) -> Markup:
        """The ladder diagram of the newest datagrams (`remote`: other machines' cards)."""
        kinds = {w.id: w.kind for w in supervisor.workers.values()}
        kinds.update((i, c.kind) for i, c in (remote or {}).items())
        return Markup(self.ladder.render(ladder=layout(supervisor.bus.recent, kinds), oob=oob))

    def render_machines(self, fleet, *, oob: bool = False, machines=None) -> Markup:
        """The Machines panel's body: each machine of the fleet, and its addresses
        (`machines`: the fleet's status, if the caller has it already)."""
        machines = fleet.status() if machines is None else machines
        return Markup(self.machines.render(machines=machines, oob=oob))

    def render_machines_seen(self, machines) -> Markup:
        """Each machine's "last seen" alone, for a Machines panel whose rows are current."""
        return Markup(self.machine_seen.render(machines=machines))

    def render_pickers(self, workers: Iterable, *, oob: bool = False) -> Markup:
        """The forms' worker pickers (impostor target, socket options): every machine's."""
        return Markup(self.pickers.render(workers=list(workers), oob=oob))

    def snapshot(self, workers: Iterable[Worker], recent: Iterable[Event], extra: str = "") -> str:
        """Everything the live parts of the page show, for a page that (re)connects."""
        return self.batch.render(
            snapshot=True,
            extra=extra,
            cards="".join(self.render_card(w) for w in workers),
            rows=self.render_rows(recent),
            hidden=0,
        )

    def update(self, new: list[Worker], changed: list[Worker], removed: list[str],
               events: list[Event], hidden: int, extra: str = "") -> str:
        """One batched update: new and changed cards, removed cards, the newest rows."""
        return self.batch.render(
            snapshot=False,
            new_cards="".join(self.render_card(w) for w in new),
            changed_cards="".join(self.render_card(w, oob=True) for w in changed),
            removed=removed,
            rows=self.render_rows(events),
            hidden=hidden,
            extra=extra,
        )
