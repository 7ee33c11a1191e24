# --- CI: a skipped test is a failure -------------------------------------------------
# In CI (env var CI set, e.g. CI=true) nothing may be silently skipped: a missing browser,
# tool or capability must fail the run instead of hiding behind an "s". Locally skips
# stay skips. (xfail is left alone: pytest reports it as skipped + wasxfail.)
import os

import pytest

_CI = os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    if not _CI:
        return
    report = outcome.get_result()
    if report.skipped and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = f"skips are errors in CI (CI={os.environ['CI']!r}): {reason}"


# --- fixtures ------------------------------------------------------------------------

pytest.register_assert_rewrite("live")

from live import LiveServer, start_server, stop_and_check  # noqa: E402


@pytest.fixture(scope="session")
def live(tmp_path_factory) -> LiveServer:
    """One real UDP Lab (uvicorn on a free port) shared by the tests that need no fresh app."""
    # Many tests try wrong tokens on purpose: the per-address limit on them (tested on an app
    # of its own) would refuse the rest of the session.
    server = start_server(tmp_path_factory.mktemp("udplab-session"),
                          args=("--max-token-failures", "0"))
    yield server
    stop_and_check(server)
