"""`create_app(settings)` assembles the app: engine, security guard, routes, error mapping."""

import asyncio
import ipaddress
import logging
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from webapp import __version__
from webapp.engine import EngineError, Supervisor
from webapp.engine.errors import bounded
from webapp.engine.experiments import BindingExplorer, Experiments
from webapp.engine import lab
from webapp.engine.lab.scenarios import LabScenarios
from webapp.engine.policy import Policy
from webapp.engine.recipes import Recipes
from webapp.fleet import fleet
from webapp.web import api, history, pages
from webapp.web.fleetrecipe import TwoMachines
from webapp.web.render import Renderer, make_environment
from webapp.web.security import Guard
from webapp.web.stream import PageHub, json_hub
from webapp.web.settings import Settings

log = logging.getLogger("udplab")


def create_app(settings: Settings | None = None) -> FastAPI:
    """A new app with its own supervisor; nothing is shared between apps."""
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        policy = Policy(
            allow_limited_broadcast=settings.allow_limited_broadcast,
            allowed_networks=tuple(ipaddress.ip_network(n) for n in settings.allowed_networks),
            max_multicast_ttl=settings.max_multicast_ttl,
            worker_rate=settings.worker_rate,
            worker_bytes=settings.worker_bytes,
            app_factor=settings.app_factor,
            max_workers=settings.max_workers,
            amplification=settings.allow_amplification,
            replies_per_source=settings.replies_per_source,
            events_per_second=settings.events_per_second,
        )
        loop = asyncio.get_running_loop()
        orphans = await loop.run_in_executor(None, lab.clean_orphans)
        if orphans:
            log.info("removed %d namespaces left by a lab whose app was killed", len(orphans))
        async with Supervisor(history=settings.worker_history, policy=policy,
                              keep_ended=settings.keep_ended) as supervisor, \
                history.running(app, supervisor, settings.data_dir,
                                cap=settings.history_events) as recorder, \
                fleet.running(supervisor, settings.nats_url, settings.nats_creds,
                              recorder=recorder) as machines:
            app.state.supervisor = supervisor
            app.state.fleet = machines
            app.state.experiments = Experiments(supervisor)
            app.state.binding = BindingExplorer(supervisor)
            app.state.lab_scenarios = LabScenarios(supervisor)
            app.state.recipes = Recipes(
                supervisor, app.state.experiments, app.state.binding, app.state.lab_scenarios,
                actions={"machines": TwoMachines(machines)})
            app.state.json_hub = json_hub(supervisor, settings)
            app.state.page_hub = PageHub(supervisor, app.state.renderer, settings,
                                         app.state.experiments, app.state.recipes,
                                         fleet=machines)
            yield

    app = FastAPI(
        title="UDP Lab",
        version=__version__,
        description="Run the UDP experiments of chapter 2 of *Foundations of Python Network "
        "Programming* on real sockets. Every route but /api/health needs "
        "`Authorization: Bearer <token>`.",
        lifespan=lifespan,
        docs_url=None,  # served below from the npm-installed Swagger UI, CSP-clean
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.watchers = 0
    app.state.watcher_kinds = {"viewers": 0, "drivers": 0}  # counted apart, each with its cap
    app.state.watcher_addresses = {}  # client address -> its watchers (a per-address cap)
    env = make_environment(settings.templates_dir)
    app.state.renderer = Renderer(env)

    app.mount("/static", StaticFiles(directory=settings.static_dir), name="static")
    app.include_router(api.router)
    app.include_router(pages.router)
    app.include_router(history.router)

    @app.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        return HTMLResponse(env.get_template("docs.html").render())

    @app.exception_handler(EngineError)
    async def engine_error(request: Request, exc: EngineError) -> JSONResponse:
        body = {"error": exc.message}
        if exc.field:
            body["field"] = exc.field
        return JSONResponse(body, status_code=exc.status)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        messages = {404: "There is nothing at this address: see /docs for the API's routes",
                    405: "This address does not take that method: see /docs"}
        return JSONResponse({"error": messages.get(exc.status_code, str(exc.detail))},
                            status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()))
        return JSONResponse(
            {"error": bounded(f"Bad request at {where or 'the body'}: "
                              f"{first.get('msg', 'invalid')}")},
            status_code=422,
        )

    @app.exception_handler(RecursionError)
    async def too_deep(request: Request, exc: RecursionError) -> JSONResponse:
        # json.loads of `[[[[…` 200 000 deep runs out of stack: bad input, not a bug of ours.
        return JSONResponse(
            {"error": "The body is JSON nested too deeply to read (more than about 900 "
                      "levels): send plain JSON, as the API's examples and the exports are"},
            status_code=422,
        )

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return JSONResponse(
            {"error": "UDP Lab hit an internal error; the workers keep running. "
                      "The server log has the details."},
            status_code=500,
        )

    app.add_middleware(Guard, settings=settings)
    return app
