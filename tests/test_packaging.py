"""The wheel carries the templates, the CSS, the vendored htmx (git-ignored static/vendor/) and
the C receive loop built for it (webapp/engine/libfastpath.so.1)."""

import os
import socket
import subprocess
import sys
import zipfile
from pathlib import Path

import httpx
import pytest

from live import start_server, stop_and_check

ROOT = Path(__file__).resolve().parent.parent

REQUIRED = [
    "webapp/__init__.py",
    "webapp/engine/history/__init__.py",
    "webapp/engine/history/pcapng.py",
    "webapp/engine/lab/__init__.py",
    "webapp/engine/lab/scenarios.py",
    "webapp/templates/base.html",
    "webapp/static/udplab.css",
    "webapp/static/vendor/htmx.min.js",
    "webapp/static/vendor/hx-ws.min.js",
    "webapp/engine/libfastpath.so.1",
]


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_wheel_contains_templates_and_static(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
         "--disable-pip-version-check", "-q", "-w", str(tmp_path), str(ROOT)],
        cwd=ROOT, capture_output=True, text=True, timeout=170,
    )
    assert proc.returncode == 0, f"pip wheel failed:\n{proc.stdout}\n{proc.stderr}"
    wheels = list(tmp_path.glob("udplab-*.whl"))
    assert len(wheels) == 1, wheels
    with zipfile.ZipFile(wheels[0]) as zf:
        names = set(zf.namelist())
        entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
        assert "udplab = webapp.cli:main" in zf.read(entry_points).decode()
    missing = [n for n in REQUIRED if n not in names]
    assert not missing, f"missing from {wheels[0].name}: {missing}"
    # nothing from the build or test machinery leaks in
    assert not [n for n in names if "__pycache__" in n or n.startswith(("tests/", "node_modules/"))]

    # Installed without -e (the wheel unpacked, first on the path, away from the checkout),
    # the app still finds its templates and static files and serves the page.
    site = tmp_path / "site"
    zipfile.ZipFile(wheels[0]).extractall(site)
    where = subprocess.run(
        [sys.executable, "-c", "import webapp; print(webapp.__file__)"],
        env={**os.environ, "PYTHONPATH": str(site)}, cwd=tmp_path,
        capture_output=True, text=True, timeout=30,
    )
    assert where.stdout.strip() == str(site / "webapp" / "__init__.py")
    server = start_server(tmp_path / "run", pythonpath=site, cwd=tmp_path)
    try:
        page = httpx.get(f"{server.base}/", headers=server.bearer, timeout=5)
        assert page.status_code == 200 and "hx-ws:connect" in page.text
        for path in ("/static/udplab.css", "/static/vendor/htmx.min.js",
                     "/static/vendor/hx-ws.min.js"):
            assert httpx.get(f"{server.base}{path}", timeout=5).status_code == 200, path
        # and a server worker answers, through the wheel's own C receive loop
        worker = httpx.post(f"{server.base}/api/workers", headers=server.bearer, timeout=5,
                            json={"kind": "server", "host": "127.0.0.1", "port": 0})
        assert worker.status_code == 201, worker.text
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.settimeout(5)
            sock.sendto(b"from the wheel", ("127.0.0.1", worker.json()["local"][1]))
            assert sock.recvfrom(100)[0] == b"Your data was 14 bytes long"
    finally:
        stop_and_check(server)
