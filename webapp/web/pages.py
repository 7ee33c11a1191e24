"""The page: the dashboard itself, its forms (which also work without JavaScript), the token
login, and the page's WebSocket of HTML fragments."""

import html
import inspect
from typing import Any
from urllib.parse import quote

from markupsafe import Markup

from fastapi import APIRouter, Request, WebSocket
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from webapp.engine import EngineError
from webapp.engine.errors import UnknownWorker
from webapp.engine.interfaces import host_choices
from webapp.engine import interfaces, ports
from webapp.engine.history.datagrams import payload_of
from webapp.engine.forge import can_forge
from webapp.engine.lab.scenarios import SCENARIOS
from webapp.web.deps import (
    BindingDep, ExperimentsDep, FleetDep, LabScenariosDep, RecipesDep, RendererDep,
    SettingsDep, SupervisorDep,
)
from webapp.fleet.remote import Unreachable
from webapp.fleet.wire import SEP
from webapp.web.stream import page_stream

router = APIRouter(include_in_schema=False)


# Short enough to show whole in the select at a phone's width (the issue saw them cut).
CLIENT_MODE_LABELS = [
    ("promiscuous", "promiscuous: any reply"),
    ("check-address", "check-address: its server only"),
    ("connected", "connected: connect() first"),
    ("request-id", "request-id: an ID per request"),
]


def page(supervisor, renderer, settings, experiments, recipes, *, status: int = 200,
         errors: dict[str, str] | None = None, values: dict[str, Any] | None = None,
         port_query: str | None = None, options_worker: str | None = None,
         options_html: str = "", binding_html: str = "", viewer: bool = False, fleet=None,
         remote=(), lab_html: str = "") -> HTMLResponse:
    """The whole dashboard, with a form's error next to it when there is one; with a fleet
    (--nats), the Machines panel, a machine picker on every worker form, and the other
    machines' workers (`remote`: the page's cards of them) in the worker pickers."""
    in_fleet = fleet is not None and fleet.connection is not None
    recent = list(supervisor.bus.recent)[-settings.page_rows:]
    partial = renderer.env.get_template
    destinations = interfaces.broadcast_choices(settings.allow_limited_broadcast)
    body = partial("index.html").render(
        interfaces_html=Markup(partial("partials/_interfaces.html").render(
            interfaces=interfaces.interfaces())),
        port_query=port_query,
        port_html=Markup(_port_fragment(renderer, port_query)),
        options_worker=options_worker,
        options_html=Markup(options_html
                            or partial("partials/_options.html").render()),
        binding_html=Markup(binding_html or partial("partials/_binding.html").render()),
        broadcasts=destinations,
        lab=supervisor.lab.to_dict(),
        recipes=recipes.catalogue(),
        recipe_html=renderer.render_recipe(recipes, viewer=viewer),
        viewer=viewer,
        ladder_html=renderer.render_ladder(supervisor),
        lab_html=Markup(lab_html or _lab_fragment(renderer, supervisor.lab.to_dict(), fleet)),
        workers=list(supervisor.workers.values()),
        pickers_html=renderer.render_pickers([*supervisor.workers.values(), *remote]),
        keep_ended=supervisor.keep_ended,
        rows=renderer.render_rows(recent),
        render_card=renderer.render_card,
        experiments_html=renderer.render_experiments(experiments),
        modes=CLIENT_MODE_LABELS,
        can_forge=can_forge(),
        hosts=host_choices(),
        errors=errors or {},
        values=values or {},
        page_rows=settings.page_rows,
        machines=fleet.status() if in_fleet else None,
        machines_html=renderer.render_machines(fleet) if in_fleet else "",
    )
    return HTMLResponse(body, status_code=status, headers={"Cache-Control": "no-store"})


@router.get("/")
async def dashboard(request: Request, supervisor: SupervisorDep, renderer: RendererDep,
                    settings: SettingsDep, experiments: ExperimentsDep,
                    recipes: RecipesDep, fleet: FleetDep) -> Response:
    """The dashboard; `/?token=…` exchanges the token for a cookie and drops it from the URL."""
    token = request.query_params.get("token")
    view = request.query_params.get("view")
    if token is None and view is None:
        options_worker = request.query_params.get("options")
        lab = request.query_params.get("lab")  # the Lab panel's machine (its picker's GET)
        return page(supervisor, renderer, settings, experiments, recipes,
                    port_query=request.query_params.get("port"),
                    options_worker=options_worker,
                    options_html=await _options_fragment(renderer, fleet, options_worker),
                    viewer=_is_viewer(request), fleet=fleet, remote=_remote_cards(request),
                    lab_html=await _lab_panel(renderer, supervisor, fleet, lab) if lab else "")
    # The guard has checked the token already; exchange it for a cookie and drop it from
    # the address bar (a teacher's token must not end up on the projector).
    response = RedirectResponse("/", status_code=303)
    if token is not None:
        response.set_cookie(settings.cookie_name, settings.token, httponly=True,
                            samesite="strict", path="/")
    else:
        response.set_cookie(settings.viewer_cookie_name, settings.viewer_token, httponly=True,
                            samesite="strict", path="/")
    return response


def _remote_cards(request: Request) -> list:
    """The page's cards of other machines' workers (none without --nats)."""
    return list(request.app.state.page_hub.remote.cards.values())


def _is_viewer(conn) -> bool:
    return getattr(conn.state, "udplab_auth", None) == "viewer"


@router.post("/workers")
async def start_from_form(request: Request, supervisor: SupervisorDep, renderer: RendererDep,
                          settings: SettingsDep, experiments: ExperimentsDep,
                          recipes: RecipesDep, fleet: FleetDep) -> Response:
    """Start a worker from a page form. htmx gets a one-line result to show by the form;
    a browser without JavaScript gets the page again (or a redirect to it)."""
    form = await request.form()
    raw = {key: value for key, value in form.items() if isinstance(value, str) and value != ""}
    kind = raw.get("kind", "")
    htmx = request.headers.get("hx-request") == "true"
    template = renderer.env.get_template("partials/_form_result.html")
    try:
        # the machine picker (with --nats), or an impostor aimed at another machine's client
        # (`b:client-1`): the fleet starts it where it belongs and aims it
        if "machine" in raw or SEP in raw.get("target", ""):
            worker = await fleet.start(raw)
            if worker["machine"] != fleet.local.name:
                request.app.state.page_hub.remote.started(worker)
        else:
            worker = await supervisor.start(raw)
    except EngineError as exc:
        if htmx:
            return HTMLResponse(template.render(error=exc), status_code=exc.status)
        return page(supervisor, renderer, settings, experiments, recipes, status=exc.status,
                    errors={kind: exc.message}, values={kind: raw}, fleet=fleet,
                    remote=_remote_cards(request))
    if htmx:
        return HTMLResponse(template.render(worker=worker))
    return RedirectResponse("/", status_code=303)


def _in_page_words(exc: EngineError) -> str:
    """An engine error as the page says it: where to look is a panel, not an API route."""
    if isinstance(exc, UnknownWorker):
        return f"{exc.message}: the Workers panel shows the ones there are"
    return exc.message


def _on(request: Request, worker_id: str, local, verb: str):
    """A card's action: on this machine, or (an id like `b:client-1`) on the worker's own."""
    if SEP in worker_id:
        return lambda: request.app.state.fleet.call(worker_id, verb)
    return lambda: local(worker_id)


async def _act(request: Request, action) -> Response:
    """Run a card's button action (sync or async) and answer htmx or a plain form."""
    try:
        result = action()
        if inspect.isawaitable(result):
            await result
    except EngineError as exc:
        if request.headers.get("hx-request") == "true":
            return HTMLResponse(f"<p class=error>{html.escape(_in_page_words(exc))}</p>",
                                status_code=exc.status)
        raise
    if request.headers.get("hx-request") == "true":
        return Response(status_code=204)  # the WebSocket brings the new card
    return RedirectResponse("/", status_code=303)


@router.post("/workers/{worker_id}/stop")
async def stop_from_page(worker_id: str, request: Request,
                         supervisor: SupervisorDep) -> Response:
    """The card's Stop button."""
    return await _act(request, _on(request, worker_id, supervisor.stop, "stop"))


@router.post("/workers/clear")
async def clear_from_page(request: Request, supervisor: SupervisorDep) -> Response:
    """The Workers panel's "Clear ended" button (other machines' ended cards go too, at the
    page's next redraw)."""
    request.app.state.page_hub.remote.remove_ended()
    return await _act(request, supervisor.remove_ended)


@router.post("/workers/{worker_id}/pause")
async def pause_from_page(worker_id: str, request: Request,
                          supervisor: SupervisorDep) -> Response:
    """A server card's Pause button."""
    return await _act(request, _on(request, worker_id, supervisor.pause, "pause"))


@router.post("/workers/{worker_id}/resume")
async def resume_from_page(worker_id: str, request: Request,
                           supervisor: SupervisorDep) -> Response:
    """A server card's Resume button."""
    return await _act(request, _on(request, worker_id, supervisor.resume, "resume"))


@router.post("/experiments/impostor")
async def impostor_from_page(request: Request, experiments: ExperimentsDep) -> Response:
    """The "Who was fooled?" button."""
    form = await request.form()
    forge = form.get("forge") == "on"
    htmx = request.headers.get("hx-request") == "true"
    try:
        run = await experiments.impostor(forge=forge)
    except EngineError as exc:
        if htmx:
            return HTMLResponse(f"<p class=error>{html.escape(exc.message)}</p>",
                                status_code=exc.status)
        raise
    if htmx:
        return HTMLResponse(f"<p class=ok>Started {html.escape(run.id)}: watch the table.</p>")
    return RedirectResponse("/", status_code=303)


def _port_fragment(renderer, query: str | None) -> str:
    template = renderer.env.get_template("partials/_port_result.html")
    if not query:
        return template.render()
    try:
        return template.render(port=ports.lookup(query))
    except EngineError as exc:
        return template.render(error=exc.message)


async def _options_fragment(renderer, fleet, worker_id: str | None, changed=None,
                            error: str | None = None) -> str:
    """The socket options panel's body for a worker of any machine, asked through its
    `Machine` (a lost one is said so at once, not after a request's timeout)."""
    template = renderer.env.get_template("partials/_options.html")
    if not worker_id:
        return template.render()
    try:
        machine, local_id = fleet.locate(worker_id)
        _refuse_lost(machine)
        worker = await machine.get(local_id)
        options = await machine.options(local_id)
    except EngineError as exc:
        return template.render(error=_in_page_words(exc))
    return template.render(worker=worker, options=options, changed=changed, error=error)


def _refuse_lost(machine) -> None:
    """`Unreachable` now for a machine silent too long (its agent would not answer)."""
    if not machine.local and machine.status()["state"] == "lost":
        raise Unreachable(f"Machine {machine.name} is lost (its agent has gone silent): its "
                          "workers' sockets cannot be read or set until it is back; their "
                          "downloads still work", field="machine")


@router.get("/ports")
async def port_from_page(renderer: RendererDep, port: str = "") -> HTMLResponse:
    """The port lookup box."""
    return HTMLResponse(_port_fragment(renderer, port))


@router.get("/options")
async def options_from_page(fleet: FleetDep, renderer: RendererDep,
                            options: str = "") -> HTMLResponse:
    """The socket options panel for one worker (of any machine)."""
    return HTMLResponse(await _options_fragment(renderer, fleet, options))


@router.post("/workers/{worker_id}/options")
async def set_option_from_page(worker_id: str, request: Request, fleet: FleetDep,
                               renderer: RendererDep) -> Response:
    """A Set button in the socket options panel: set on the worker's own machine."""
    form = await request.form()
    changed, error = None, None
    try:
        machine, local_id = fleet.locate(worker_id)
        _refuse_lost(machine)
        changed = await machine.set_option(local_id, str(form.get("name", "")),
                                           str(form.get("value", "")))
    except EngineError as exc:
        error = exc.message
    if request.headers.get("hx-request") != "true":
        return RedirectResponse(f"/?options={quote(worker_id)}#options", status_code=303)
    return HTMLResponse(await _options_fragment(renderer, fleet, worker_id, changed, error))


@router.post("/experiments/binding")
async def binding_from_page(request: Request, binding: BindingDep, supervisor: SupervisorDep,
                            renderer: RendererDep, settings: SettingsDep,
                            experiments: ExperimentsDep, recipes: RecipesDep,
                            fleet: FleetDep) -> Response:
    """The binding explorer's button."""
    form = await request.form()
    template = renderer.env.get_template("partials/_binding.html")
    try:
        fragment = template.render(run=await binding.run(
            interface=str(form.get("interface", "")).strip() or None))
    except EngineError as exc:
        fragment = template.render(error=exc.message)
    if request.headers.get("hx-request") == "true":
        return HTMLResponse(fragment)
    return page(supervisor, renderer, settings, experiments, recipes, binding_html=fragment,
                fleet=fleet, remote=_remote_cards(request))


def _lab_choices(fleet, chosen: str) -> list[dict[str, Any]] | None:
    """The Lab panel's machine picker: this machine and every agent that is up (and the one
    shown, whatever its state); None without a fleet (no picker)."""
    if fleet is None or fleet.connection is None:
        return None
    return [m for m in fleet.status() if m["local"] or m["state"] == "up"
            or m["name"] == chosen]


def _lab_fragment(renderer, lab: dict | None, fleet, chosen: str = "", *,
                  error: str | None = None, result_html: str = "") -> str:
    """The Lab panel of machine `chosen` ("": this one); `lab` None when it did not answer."""
    return renderer.env.get_template("partials/_lab.html").render(
        lab=lab, machines=_lab_choices(fleet, chosen), chosen=chosen,
        scenarios=SCENARIOS, error=error,
        result_html=Markup(result_html or '<div id="lab-result"></div>'))


def _lab_machine(fleet, name: Any):
    """The machine a Lab panel form names (absent or "": this one), and its name there ("":
    this one); `UnknownMachine` when the fleet has none of that name."""
    where = fleet.named(name if isinstance(name, str) and name else None)
    return where, ("" if where is fleet.local else where.name)


async def _lab_panel(renderer, supervisor, fleet, name: Any, *, error: str | None = None,
                     result_html: str = "") -> str:
    """The Lab panel of the machine called `name`, its lab asked of that machine."""
    try:
        where, chosen = _lab_machine(fleet, name)
    except EngineError as exc:
        return _lab_fragment(renderer, supervisor.lab.to_dict(), fleet, error=exc.message)
    if not chosen:
        return _lab_fragment(renderer, supervisor.lab.to_dict(), fleet, error=error,
                             result_html=result_html)
    try:
        lab = await where.lab()
    except EngineError as exc:  # lost meanwhile: the picker stays, to choose another
        lab, error = None, error or exc.message
    return _lab_fragment(renderer, lab, fleet, chosen, error=error, result_html=result_html)


async def _lab_action(request: Request, supervisor, renderer, fleet, act) -> Response:
    """Build or tear down the lab of the machine the form names (`machine`, absent: this
    one): `act(machine)` does it (this one is the fleet's LocalMachine, over the same
    supervisor)."""
    form = await request.form()
    error, chosen = None, ""
    try:
        where, chosen = _lab_machine(fleet, form.get("machine"))
        await act(where)
    except EngineError as exc:
        error = exc.message
    if request.headers.get("hx-request") != "true":
        return RedirectResponse(f"/?lab={quote(chosen)}#lab" if chosen else "/#lab",
                                status_code=303)
    panel = await _lab_panel(renderer, supervisor, fleet, chosen, error=error)
    if chosen:  # another machine's lab: this one's, and so the forms' "On" field, is as it was
        return HTMLResponse(panel)
    # Every form's "On" field follows the lab, swapped in place: a page reload would wipe
    # what the person typed in the other forms and close the panels they opened.
    where = renderer.env.get_template("partials/_where.html").render(
        lab=supervisor.lab.to_dict(), where=None)
    return HTMLResponse(panel + f'<div hx-swap-oob="innerHTML:.where-field">{where}</div>')


@router.get("/lab")
async def lab_panel_of(request: Request, supervisor: SupervisorDep, renderer: RendererDep,
                       fleet: FleetDep) -> Response:
    """The Lab panel's machine picker (`?lab=b`): htmx swaps in that machine's panel; a
    plain GET goes to the page showing it."""
    name = request.query_params.get("lab", "")
    if request.headers.get("hx-request") != "true":
        return RedirectResponse(f"/?lab={quote(name)}#lab" if name else "/#lab",
                                status_code=303)
    return HTMLResponse(await _lab_panel(renderer, supervisor, fleet, name))


@router.post("/lab")
async def build_lab_from_page(request: Request, supervisor: SupervisorDep,
                              renderer: RendererDep, fleet: FleetDep) -> Response:
    """The Lab panel's Build button: htmx swaps the panel and every form's "On" field."""
    return await _lab_action(request, supervisor, renderer, fleet,
                             lambda where: where.build_lab())


@router.post("/lab/delete")
async def teardown_lab_from_page(request: Request, supervisor: SupervisorDep,
                                 renderer: RendererDep, fleet: FleetDep) -> Response:
    """The Lab panel's Tear down button."""
    return await _lab_action(request, supervisor, renderer, fleet,
                             lambda where: where.teardown_lab())


@router.post("/lab/scenarios/{name}")
async def lab_scenario_from_page(name: str, request: Request, scenarios: LabScenariosDep,
                                 supervisor: SupervisorDep, renderer: RendererDep,
                                 settings: SettingsDep, experiments: ExperimentsDep,
                                 recipes: RecipesDep, fleet: FleetDep) -> Response:
    """A scenario button of the Lab panel, on the lab of the machine the form names."""
    form = await request.form()
    template = renderer.env.get_template("partials/_lab_result.html")
    chosen = ""
    try:
        where, chosen = _lab_machine(fleet, form.get("machine"))
        run = await (where.lab_scenario(name) if chosen else scenarios.run(name))
        fragment = template.render(run=run)
    except EngineError as exc:
        fragment = template.render(error=exc.message)
    if request.headers.get("hx-request") == "true":
        return HTMLResponse(fragment)
    # without JavaScript: the page, its Lab panel showing that machine's lab and the result
    return page(supervisor, renderer, settings, experiments, recipes, fleet=fleet,
                remote=_remote_cards(request), viewer=_is_viewer(request),
                lab_html=await _lab_panel(renderer, supervisor, fleet, chosen,
                                          result_html=fragment))


@router.get("/datagram/{seq}")
async def datagram(seq: int, supervisor: SupervisorDep, renderer: RendererDep) -> HTMLResponse:
    """One datagram of the ladder: addresses, size, payload as text and hex."""
    template = renderer.env.get_template("partials/_datagram.html")
    found = next((e for e in supervisor.bus.recent if e.seq == seq), None)
    if found is None:
        found = next((e for w in supervisor.workers.values() for e in w.history
                      if e.seq == seq), None)
    if found is None or not hasattr(found, "peer"):
        return HTMLResponse(template.render(missing=True), status_code=404)
    data, exact = payload_of(found.to_dict())
    incoming = found.type in ("received", "reply", "rejected", "dropped")
    source, destination = (found.peer, found.local) if incoming else (found.local, found.peer)
    return HTMLResponse(template.render(event=found, source=source, destination=destination,
                                        hex=data[:256].hex(" "), exact=exact))


@router.post("/recipes")
async def recipe_from_page(request: Request, recipes: RecipesDep,
                           supervisor: SupervisorDep) -> Response:
    """The Recipes panel: Play (every step) or Step by step (the first one now)."""
    form = await request.form()
    try:
        run = recipes.start(str(form.get("name", "")))
    except EngineError as exc:
        if request.headers.get("hx-request") == "true":
            return HTMLResponse(f"<p class=error>{html.escape(_in_page_words(exc))}</p>",
                                status_code=exc.status)
        raise
    if form.get("mode") == "step":
        supervisor.spawn(recipes.next(run), name=f"recipe {run.id}")
    else:
        supervisor.spawn(recipes.play_all(run), name=f"recipe {run.id}")
    if request.headers.get("hx-request") == "true":
        return HTMLResponse("")  # clears an earlier refusal; the WebSocket brings the steps
    return RedirectResponse("/#recipes", status_code=303)


@router.post("/recipes/runs/{run_id}/next")
async def recipe_next_from_page(run_id: str, request: Request, recipes: RecipesDep,
                                supervisor: SupervisorDep) -> Response:
    """The Next step button (and the N key)."""
    run = recipes.get(run_id)
    supervisor.spawn(recipes.next(run), name=f"recipe {run.id}")
    if request.headers.get("hx-request") == "true":
        return Response(status_code=204)
    return RedirectResponse("/#recipes", status_code=303)


@router.post("/workers/{worker_id}/remove")
async def remove_from_page(worker_id: str, request: Request,
                           supervisor: SupervisorDep) -> Response:
    """The card's Remove button (stops first if needed)."""
    return await _act(request, _on(request, worker_id, supervisor.remove, "remove"))


@router.websocket("/ws/page")
async def page_socket(websocket: WebSocket) -> None:
    """The page's live parts as htmx fragments."""
    await page_stream(websocket, websocket.app.state.page_hub, viewer=_is_viewer(websocket))
