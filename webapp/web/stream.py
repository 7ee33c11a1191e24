"""The two live streams: JSON events for scripts, HTML fragments for the page.

Each connection has its own bounded subscription and sends at most one message per
`flush_interval`. A receive loop runs beside the send loop so a closed page is noticed at
once (a handler stuck on its queue would hang uvicorn's shutdown).
"""

import asyncio
import json
from collections.abc import Callable

from starlette.responses import JSONResponse
from starlette.websockets import WebSocket, WebSocketDisconnect

from webapp.engine import Subscription, Supervisor
from webapp.engine.events import Event
from webapp.engine.experiments import Experiments
from webapp.engine.recipes import Recipes
from webapp.web.render import Renderer
from webapp.web.settings import Settings


async def serve(websocket: WebSocket, subscription: Subscription, first: str,
                flush: Callable[[list[Event], int], str | None], interval: float) -> None:
    """Send `first`, then one `flush(events, dropped)` message per batch until the peer goes."""

    async def receive() -> None:
        while (await websocket.receive())["type"] != "websocket.disconnect":
            pass  # the streams take no commands; anything sent is ignored

    async def pump() -> None:
        await websocket.send_text(first)
        loop = asyncio.get_running_loop()
        while True:
            await subscription.wait()
            started = loop.time()
            message = flush(*subscription.drain())
            if message:
                await websocket.send_text(message)
            await asyncio.sleep(max(0.0, interval - (loop.time() - started)))

    state, limit = websocket.app.state, websocket.app.state.settings.max_watchers
    if state.watchers >= limit:
        subscription.close()
        await websocket.send_denial_response(JSONResponse(
            {"error": f"{state.watchers} watchers are connected, the most this dashboard "
                      "allows: close a tab, or start udplab with a higher --max-watchers"},
            status_code=429))
        return
    state.watchers += 1
    tasks: list[asyncio.Task] = []
    try:
        await websocket.accept()
        tasks = [asyncio.create_task(receive()), asyncio.create_task(pump())]
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        state.watchers -= 1
        subscription.close()
        for task in tasks:
            task.cancel()
        for outcome in await asyncio.gather(*tasks, return_exceptions=True):
            if isinstance(outcome, Exception) and not isinstance(
                outcome, WebSocketDisconnect | RuntimeError | OSError
            ):
                raise outcome


async def json_stream(websocket: WebSocket, supervisor: Supervisor, settings: Settings) -> None:
    """`WS /api/events`: `{"events": [...], "dropped": N}` per batch; the first adds `workers`."""
    subscription = supervisor.bus.subscribe()
    first = json.dumps({"events": [], "dropped": 0,
                        "workers": [w.to_dict() for w in supervisor.workers.values()]})

    def flush(events: list[Event], dropped: int) -> str:
        return json.dumps({"events": [e.to_dict() for e in events], "dropped": dropped})

    await serve(websocket, subscription, first, flush, settings.flush_interval)


async def page_stream(websocket: WebSocket, supervisor: Supervisor, renderer: Renderer,
                      settings: Settings, experiments: Experiments, recipes: Recipes,
                      viewer: bool = False) -> None:
    """`WS /ws/page`: a full snapshot on connect, then batched card and row fragments."""
    subscription = supervisor.bus.subscribe()
    recent = list(supervisor.bus.recent)[-settings.page_rows:]
    last_seq = recent[-1].seq if recent else 0
    shown = set(supervisor.workers)
    hidden_total = 0
    runs_shown = len(experiments.runs)
    first = renderer.snapshot(supervisor.workers.values(), recent,
                              renderer.render_experiments(experiments, oob=True)
                              + renderer.render_recipe(recipes, oob=True, viewer=viewer))

    def flush(events: list[Event], dropped: int) -> str | None:
        nonlocal hidden_total, runs_shown
        events = [e for e in events if e.seq > last_seq]
        workers = supervisor.workers
        touched = set(workers) if dropped else {e.worker for e in events}
        new = [w for w in workers.values() if w.id not in shown]
        changed = [workers[i] for i in touched if i in workers and i in shown]
        removed = sorted(shown - set(workers))
        shown.difference_update(removed)
        shown.update(w.id for w in new)
        rows = events[-settings.rows_per_flush:]
        hidden = dropped + len(events) - len(rows)
        hidden_total += hidden
        extra = ""
        runs = experiments.runs.values()
        if len(runs) != runs_shown or any(touched & run.workers for run in runs):
            runs_shown = len(runs)
            extra = renderer.render_experiments(experiments, oob=True)
        run = recipes.latest
        if run and any(e.type == "step" or e.worker in run.workers.values() for e in events):
            extra += renderer.render_recipe(recipes, oob=True, viewer=viewer)
        if not (new or changed or removed or rows or hidden or extra):
            return None
        return renderer.update(new, changed, removed, rows, hidden_total if hidden else 0,
                               extra)

    await serve(websocket, subscription, first, flush, settings.flush_interval)
