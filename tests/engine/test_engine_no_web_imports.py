"""The engine is web-free: importing all of it loads no web library, nor NATS."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

CHECK = """
import importlib, pkgutil, sys
import webapp.engine
modules = ["webapp.engine"]
for info in pkgutil.walk_packages(webapp.engine.__path__, "webapp.engine."):
    importlib.import_module(info.name)
    modules.append(info.name)
web = sorted(name for name in sys.modules
             if name.split(".")[0] in {"fastapi", "starlette", "jinja2", "pydantic", "uvicorn", "nats"})
print(len(modules), ",".join(web))
"""


def test_engine_imports_no_web_library():
    # a fresh interpreter: this test process may well have imported FastAPI already
    result = subprocess.run(
        [sys.executable, "-c", CHECK], cwd=ROOT, env={"PYTHONPATH": str(ROOT)},
        capture_output=True, text=True, timeout=30, check=False,
    )
    assert result.returncode == 0, result.stderr
    count, _, web = result.stdout.strip().partition(" ")
    assert int(count) >= 10  # it did import every module, workers included
    assert web == "", f"the engine imported {web}"


def test_the_check_sees_nats_when_it_is_imported():
    # the check above can fail: a module that imports nats shows up in its list
    result = subprocess.run(
        [sys.executable, "-c", "import webapp.fleet.agent\n" + CHECK], cwd=ROOT,
        env={"PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode == 0, result.stderr
    assert "nats" in result.stdout.split()[1].split(","), result.stdout


def test_the_app_loads_the_capture_library_only_for_a_capture():
    # dpkt holds ~6 MiB: the idle app (issue 8: <= 60 MiB) must not carry it.
    check = ("import sys, webapp.cli, webapp.web.app; before = 'dpkt' in sys.modules; "
             "from webapp.engine.history import export; "
             "capture = export.to_pcapng([]); print(before, 'dpkt' in sys.modules, len(capture))")
    result = subprocess.run([sys.executable, "-c", check], cwd=ROOT,
                            env={"PYTHONPATH": str(ROOT)}, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    before, after, size = result.stdout.split()
    assert (before, after) == ("False", "True") and int(size) > 0, result.stdout


def test_the_dashboard_without_nats_loads_no_nats_client():
    # `make run` needs no NATS at all: the fleet's local machine is plain code
    check = ("import sys, webapp.cli, webapp.web.app, webapp.fleet.fleet; "
             "print('nats' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", check], cwd=ROOT,
                            env={"PYTHONPATH": str(ROOT)}, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"
