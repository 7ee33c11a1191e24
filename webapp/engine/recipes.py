"""Recipes: the chapter as one-click experiments, read from data files a teacher can edit.

A recipe is a JSON file: a title, the book section, and steps. Each step says something
(`say`), does something (`do`: start, pause, resume, stop, wait, impostor, binding,
lab-build, lab-scenario), names what the book prints (`expect`) and where to look for it
(`look`: a worker, an event type, text it contains). Worker names in a recipe are short
("server"); a run prefixes them with its own id, and `$server.port` stands for the port
that worker got. The runner plays steps one by one (`next`) or all, reports each as an
event, and stops the run's workers at the end.
"""

import asyncio
import itertools
import json
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from webapp.engine.errors import BadSpec, Conflict, EngineError, UnknownWorker
from webapp.engine.events import Step

RECIPES_DIR = Path(__file__).resolve().parent.parent / "recipes"
_REF = re.compile(r"\$([a-z0-9_-]+)\.(port|host|address)")


def load(directory: Path = RECIPES_DIR) -> dict[str, dict[str, Any]]:
    """Every recipe in `directory`, by file name (without .json), in file-name order."""
    recipes = {}
    for path in sorted(directory.glob("*.json")):
        try:
            recipe = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise BadSpec(f"The recipe file {path.name} is not valid JSON: {exc}") from None
        if not isinstance(recipe, dict) or not isinstance(recipe.get("steps"), list):
            raise BadSpec(f"The recipe file {path.name} needs a 'steps' list")
        recipes[path.stem] = recipe
    return recipes


@dataclass
class RecipeRun:
    """One run of a recipe: its steps' outcomes and the workers it made."""

    id: str
    name: str
    recipe: dict[str, Any]
    index: int = 0
    results: list[dict[str, Any]] = field(default_factory=list)
    workers: dict[str, str] = field(default_factory=dict)  # short name -> worker id
    done: bool = False
    plays: int = 0  # calls of next() and play_all() in progress
    stopping: bool = False

    def to_dict(self) -> dict[str, Any]:
        """The run as JSON."""
        return {"id": self.id, "name": self.name, "title": self.recipe.get("title", self.name),
                "section": self.recipe.get("section"), "about": self.recipe.get("about"),
                "index": self.index, "total": len(self.recipe["steps"]), "done": self.done,
                "ok": self.done and not self.stopping and all(r["ok"] for r in self.results),
                "stopped": self.stopping, "steps": self.results, "workers": self.workers}


class Recipes:
    """Loads recipes and plays them on a supervisor (and its experiments)."""

    def __init__(self, supervisor, experiments=None, binding=None, lab_scenarios=None,
                 directory: Path = RECIPES_DIR, actions=None):
        self.supervisor = supervisor
        # More `do` actions, from outside the engine (the fleet's, from the web layer): each an
        # object with `async do(run, step, result)` and `async clean_up(run)`.
        self.actions = dict(actions or {})
        self.experiments = experiments
        self.binding = binding
        self.lab_scenarios = lab_scenarios
        self.directory = directory
        self.runs: dict[str, RecipeRun] = {}
        # The run being played. One at a time: Play pressed twenty times must not start
        # twenty overlapping runs. Claimed by start() (the route plays it right after),
        # released when no call of next() or play_all() of that run is in progress.
        self.playing: RecipeRun | None = None
        self._numbers = itertools.count(1)
        self._lock = asyncio.Lock()

    def catalogue(self) -> list[dict[str, Any]]:
        """Every recipe: name, title, section, about, number of steps."""
        return [{"name": name, "title": r.get("title", name), "section": r.get("section"),
                 "about": r.get("about"), "steps": len(r["steps"]), "lab": r.get("lab", False)}
                for name, r in load(self.directory).items()]

    def start(self, name: str) -> RecipeRun:
        """A new run of recipe `name`, not yet played."""
        recipes = load(self.directory)
        if name not in recipes:
            raise UnknownWorker(f"There is no recipe {name!r}: list them with GET /api/recipes")
        self._check_free(None)
        run = RecipeRun(f"{name}-{next(self._numbers)}", name, recipes[name])
        self.runs[run.id] = run
        self.playing = run
        return run

    def _check_free(self, run: RecipeRun | None) -> None:
        """Refuse to play anything but the run being played (no await: check and claim
        happen together)."""
        busy = self.playing
        if busy is not None and busy is not run:
            title = busy.recipe.get("title", busy.name)
            raise Conflict(f"A recipe is already running ({title}, step {busy.index} of "
                           f"{len(busy.recipe['steps'])} done): wait for it or stop it")

    def _begin(self, run: RecipeRun) -> None:
        self._check_free(run)
        self.playing = run
        run.plays += 1

    def _end(self, run: RecipeRun) -> None:
        run.plays -= 1
        if run.plays == 0 and self.playing is run:
            self.playing = None

    async def stop(self, run: RecipeRun) -> RecipeRun:
        """Stop a run: its workers now, its steps after the one in progress."""
        if not run.done:
            run.stopping = True
            await self._clean_up(run)
            if run.plays == 0:
                self._finish_stopped(run)
        return run

    def _finish_stopped(self, run: RecipeRun) -> None:
        run.done = True
        if self.playing is run:
            self.playing = None
        bus = self.supervisor.bus
        bus.publish(Step(seq=bus.next_seq(), time=time.time(), worker=run.id,
                         message=f"Recipe stopped after step {run.index}.",
                         recipe=run.name, index=max(run.index - 1, 0)))

    def get(self, run_id: str) -> RecipeRun:
        """A run by id, or 404."""
        try:
            return self.runs[run_id]
        except KeyError:
            raise UnknownWorker(f"There is no recipe run {run_id!r}") from None

    @property
    def latest(self) -> RecipeRun | None:
        """The newest run, for the page's side panel."""
        return next(reversed(self.runs.values()), None)

    async def play_all(self, run: RecipeRun) -> RecipeRun:
        """Play every remaining step, then stop the run's workers."""
        self._begin(run)
        try:
            while not run.done:
                await self.next(run)
        finally:
            self._end(run)
        return run

    async def next(self, run: RecipeRun) -> RecipeRun:
        """Play the next step (the last one also cleans up)."""
        if run.done:
            return run
        self._begin(run)
        try:
            return await self._next(run)
        finally:
            self._end(run)

    async def _next(self, run: RecipeRun) -> RecipeRun:
        async with self._lock:
            if run.done:
                return run
            if run.stopping:
                self._finish_stopped(run)
                return run
            step = run.recipe["steps"][run.index]
            bus = self.supervisor.bus
            bus.publish(Step(seq=bus.next_seq(), time=time.time(), worker=run.id,
                             message=f"Step {run.index + 1}: {step.get('say', '')}",
                             recipe=run.name, index=run.index))
            result = {"say": step.get("say", ""), "expect": step.get("expect"), "ok": True,
                      "actual": None}
            try:
                await self._do(run, step, result)
            except EngineError as exc:
                result["actual"] = exc.message
                want = step.get("expect_error")
                result["ok"] = bool(want) and want.lower() in exc.message.lower()
            else:
                if step.get("expect_error"):
                    result["ok"] = False
                    result["actual"] = result["actual"] or "no error (one was expected)"
            if step.get("look") and result["ok"]:
                await self._look(run, step["look"], result)
            run.results.append(result)
            run.index += 1
            if run.index >= len(run.recipe["steps"]):
                await self._clean_up(run)
                run.done = True
            # Say how the step went: the page redraws the recipe on these events.
            verdict = "matched the book" if result["ok"] else "did not match the book"
            ending = ""
            if run.done:
                ending = (" Recipe finished: all steps matched the book." if run.to_dict()["ok"]
                          else " Recipe finished: some steps did not match.")
            bus.publish(Step(seq=bus.next_seq(), time=time.time(), worker=run.id,
                             message=f"Step {run.index}: {verdict}.{ending}",
                             recipe=run.name, index=run.index - 1))
        return run

    def _resolve(self, run: RecipeRun, value: Any) -> Any:
        """Prefix worker names and fill in `$name.port` references."""
        if isinstance(value, str):
            def port_of(match: re.Match) -> str:
                worker = self.supervisor.get(run.workers.get(match.group(1), match.group(1)))
                if match.group(2) == "port":
                    return str(worker.local[1])
                return str(worker.local[0])
            full = _REF.fullmatch(value)
            if full and full.group(2) == "port":
                return int(port_of(full))
            return _REF.sub(port_of, value)
        if isinstance(value, dict):
            return {k: self._resolve(run, v) for k, v in value.items()}
        if isinstance(value, list):
            return [self._resolve(run, v) for v in value]
        return value

    def _worker(self, run: RecipeRun, short: str) -> str:
        return run.workers.get(short, f"{run.id}-{short}")

    async def _do(self, run: RecipeRun, step: dict[str, Any], result: dict[str, Any]) -> None:
        action = step.get("do", "wait")
        sup = self.supervisor
        if action == "start":
            spec = self._resolve(run, dict(step["spec"]))
            short = spec.get("name", spec.get("kind", "worker"))
            spec["name"] = f"{run.id}-{short}"
            if "target" in spec:
                spec["target"] = self._worker(run, spec["target"])
            worker = await sup.start(spec)
            run.workers[short] = worker.id
            result["actual"] = f"started {worker.id}" + (
                f" on {worker.local[0]}:{worker.local[1]}" if worker.local else "")
        elif action in ("pause", "resume", "stop", "remove"):
            worker_id = self._worker(run, step["worker"])
            if action in ("pause", "resume"):
                getattr(sup, action)(worker_id)
            else:
                await getattr(sup, action)(worker_id)
            result["actual"] = f"{action}d {worker_id}".replace("stopd", "stopped")
        elif action == "wait":
            if "worker" in step:
                worker = sup.get(self._worker(run, step["worker"]))
                await asyncio.wait([worker.task], timeout=float(step.get("seconds", 10)))
                result["actual"] = f"{worker.id} is {worker.state}"
            else:
                await asyncio.sleep(min(float(step.get("seconds", 0.5)), 30))
        elif action == "impostor":
            experiment = await self.experiments.impostor(forge=bool(step.get("forge")))
            await asyncio.sleep(1.5)
            verdicts = self.experiments.verdicts(experiment)
            result["actual"] = "; ".join(f"{v['mode']}: {v['verdict']}" for v in verdicts)
            want = step.get("verdicts", {})
            result["ok"] = all(v["verdict"] == want.get(v["mode"], v["verdict"])
                               for v in verdicts)
        elif action == "binding":
            outcome = await self.binding.run()
            result["actual"] = "; ".join(f"{s['action']}: {s['outcome']}"
                                         for s in outcome["steps"])
            result["ok"] = "conflict" in result["actual"]
        elif action == "lab-build":
            if not sup.lab.built:
                await sup.build_lab()
            result["actual"] = "the virtual LAN is built"
        elif action == "lab-scenario":
            outcome = await self.lab_scenarios.run(step["scenario"])
            result["actual"] = "; ".join(s["outcome"] for s in outcome["steps"])
            result["ok"] = all(s["ok"] for s in outcome["steps"])
        elif action in self.actions:
            await self.actions[action].do(run, step, result)
        else:
            raise BadSpec(f"Unknown recipe action {action!r}", field="do")

    async def _look(self, run: RecipeRun, look: dict[str, Any], result: dict[str, Any]) -> None:
        """Find the event the book's output corresponds to (waiting up to `within` s)."""
        worker_id = self._worker(run, look["worker"])
        kinds = look.get("type")
        kinds = {kinds} if isinstance(kinds, str) else set(kinds or ())
        text = look.get("contains", "")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + float(look.get("within", 5))
        while True:
            worker = self.supervisor.workers.get(worker_id)
            found = next((e for e in (worker.history if worker else ())
                          if (not kinds or e.type in kinds) and text in e.message), None)
            if found or loop.time() >= deadline:
                break
            await asyncio.sleep(0.05)
        result["actual"] = found.message if found else f"nothing like {text!r} from {worker_id}"
        result["ok"] = found is not None

    async def _clean_up(self, run: RecipeRun) -> None:
        for worker_id in run.workers.values():
            if worker_id in self.supervisor.workers:
                await self.supervisor.stop(worker_id)
        for extra in self.actions.values():
            await extra.clean_up(run)
