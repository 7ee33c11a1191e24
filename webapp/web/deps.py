"""Dependency aliases: the engine and renderer that routes call into."""

from typing import Annotated

from fastapi import Depends
from starlette.requests import HTTPConnection

from webapp.engine import Supervisor
from webapp.engine.experiments import BindingExplorer, Experiments
from webapp.engine.lab.scenarios import LabScenarios
from webapp.engine.recipes import Recipes
from webapp.fleet.fleet import Fleet
from webapp.web.render import Renderer
from webapp.web.settings import Settings


def _supervisor(conn: HTTPConnection) -> Supervisor:
    return conn.app.state.supervisor


def _experiments(conn: HTTPConnection) -> Experiments:
    return conn.app.state.experiments


def _binding(conn: HTTPConnection) -> BindingExplorer:
    return conn.app.state.binding


def _lab_scenarios(conn: HTTPConnection) -> LabScenarios:
    return conn.app.state.lab_scenarios


def _recipes(conn: HTTPConnection) -> Recipes:
    return conn.app.state.recipes


def _fleet(conn: HTTPConnection) -> Fleet:
    return conn.app.state.fleet


def _renderer(conn: HTTPConnection) -> Renderer:
    return conn.app.state.renderer


def _settings(conn: HTTPConnection) -> Settings:
    return conn.app.state.settings


SupervisorDep = Annotated[Supervisor, Depends(_supervisor)]
BindingDep = Annotated[BindingExplorer, Depends(_binding)]
LabScenariosDep = Annotated[LabScenarios, Depends(_lab_scenarios)]
RecipesDep = Annotated[Recipes, Depends(_recipes)]
ExperimentsDep = Annotated[Experiments, Depends(_experiments)]
RendererDep = Annotated[Renderer, Depends(_renderer)]
SettingsDep = Annotated[Settings, Depends(_settings)]
FleetDep = Annotated[Fleet, Depends(_fleet)]
