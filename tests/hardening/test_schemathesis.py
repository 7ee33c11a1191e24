"""Schemathesis against the app's own /openapi.json: no 5xx on any operation, with data that
fits the schema and data that does not, and no traceback in the log.

The app runs inside a network namespace of the test (loopback and a veth to nowhere): the
generated specs name arbitrary hosts, and POST /api/lab builds the virtual LAN (namespaces
of the app's own, deleted when it stops). Every request is made from a thread inside that
namespace. Examples are few per operation and the whole run is bounded in time.
"""

import time

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error

from webapp.engine import lab as lab_module

EXAMPLES = 40  # per operation
SLOW = {  # operations that run experiments or build things: fewer examples
    "POST /api/experiments/impostor": 4,
    "POST /api/lab": 3,
    "DELETE /api/lab": 3,
    "POST /api/lab/scenarios/{name}": 4,
    "POST /api/recipes/{name}": 4,
    "POST /api/recipes/runs/{run_id}/next": 6,
    "POST /api/experiments/binding": 8,
    "POST /api/history/{history_id}/run": 8,
}
BUDGET = 120.0  # seconds for the whole run


def run_schemathesis(server) -> dict:
    schema = schemathesis.openapi.from_url(f"{server.base}/openapi.json",
                                           headers=server.bearer)
    operations = [result.ok() for result in schema.get_all_operations()]
    summary = {"operations": len(operations), "calls": 0, "statuses": {}, "not_json_4xx": set(),
               "failures": {}}
    started = time.monotonic()

    import requests
    session = requests.Session()
    session.headers.update(server.bearer)

    def cleanup(response) -> None:
        # Workers a call started (POST /api/workers, a history re-run) are stopped at once.
        if response.status_code == 201:
            try:
                body = response.json()
            except ValueError:
                return
            if isinstance(body, dict) and "kind" in body and "id" in body:
                session.delete(f"{server.base}/api/workers/{body['id']}", timeout=10)

    for operation in operations:
        label = f"{operation.method.upper()} {operation.path}"
        strategies = [operation.as_strategy(GenerationMode.POSITIVE)]
        try:
            strategies.append(operation.as_strategy(GenerationMode.NEGATIVE))
        except Exception:  # an operation with nothing to negate
            pass

        @settings(max_examples=SLOW.get(label, EXAMPLES), deadline=None, database=None,
                  suppress_health_check=list(HealthCheck), print_blob=True)
        @given(case=st.one_of(*strategies))
        def exercise(case):
            response = case.call_and_validate(base_url=server.base, session=session,
                                              headers=server.bearer,
                                              checks=[not_a_server_error], timeout=30)
            summary["calls"] += 1
            summary["statuses"][response.status_code] = \
                summary["statuses"].get(response.status_code, 0) + 1
            if 400 <= response.status_code < 500 and operation.path.startswith("/api/"):
                try:
                    ok = isinstance(response.json().get("error"), str)
                except (ValueError, AttributeError):
                    ok = False
                if not ok:
                    summary["not_json_4xx"].add((label, response.status_code))
            cleanup(response)

        try:
            exercise()
        except (Exception, BaseExceptionGroup) as exc:  # keep going: report every operation
            summary["failures"][label] = str(exc).strip()[:1500]
        assert time.monotonic() - started < BUDGET, \
            f"schemathesis ran past its {BUDGET} s budget at {label}"
    summary["seconds"] = time.monotonic() - started
    session.close()
    return summary


@pytest.mark.timeout(240)
def test_no_server_error_on_any_operation(make_net, apps):
    net = make_net()
    server, http = apps.start_in(net.a)
    summary = net.a.call(run_schemathesis, server, timeout=200)
    failures = summary.pop("failures")
    print(summary)
    assert not failures, "server errors:\n\n" + "\n\n".join(
        f"{label}:\n{text}" for label, text in failures.items())
    assert summary["operations"] >= 30, summary
    assert summary["calls"] >= 300, summary
    assert not any(status >= 500 for status in summary["statuses"]), summary
    assert http.get("/api/health").json() == {"status": "ok"}
    log = server.log()
    assert "Traceback" not in log and "internal error" not in log, log[-4000:]
    # The app builds and tears down its lab itself: none of its namespaces outlive it.
    http.delete("/api/lab")
    pid = server.proc.pid
    apps.close()
    apps.started.clear()
    apps.clients.clear()
    left = [n for n in lab_module.namespaces() if n.startswith(f"{lab_module.PREFIX}{pid}-")]
    assert not left, f"the app left lab namespaces behind: {left}"
