"""Worker specs: defaults, form strings, and a BadSpec naming the field and the cause."""

import math

import pytest

from webapp.engine import BadSpec, Conflict, EngineError, Refused, UnknownWorker
from webapp.engine.backoff import Backoff
from webapp.engine.specs import ClientSpec, ServerSpec, parse_spec


def test_error_statuses():
    assert BadSpec.status == 422
    assert Conflict.status == 409
    assert UnknownWorker.status == 404
    assert Refused.status == 403
    for cls in (BadSpec, Conflict, UnknownWorker, Refused):
        assert issubclass(cls, EngineError)
    error = BadSpec("The port is wrong", field="port")
    assert str(error) == error.message == "The port is wrong"
    assert error.field == "port"
    assert error.status == 422


def test_server_defaults():
    spec = parse_spec({"kind": "server"})
    assert isinstance(spec, ServerSpec)
    assert (spec.host, spec.port, spec.reply) == ("127.0.0.1", 1060, "length")
    assert spec.drop_rate == 0.0
    assert spec.seed is None
    assert spec.name is None
    assert spec.to_dict() == {
        "kind": "server", "name": None, "host": "127.0.0.1", "port": 1060,
        "reply": "length", "drop_rate": 0.0, "seed": None, "delay": 0.0, "duplicate": False,
        "rcvbuf": None, "reuse_addr": False, "v6only": False, "where": None,
    }


def test_client_defaults():
    spec = parse_spec({"kind": "client"})
    assert isinstance(spec, ClientSpec)
    assert (spec.host, spec.port, spec.mode) == ("127.0.0.1", 1060, "promiscuous")
    assert spec.count == 1
    assert spec.message is None  # the book's `The time is …`, made fresh per request
    assert (spec.timeout, spec.backoff, spec.give_up_after) == (0.1, 2.0, 2.0)
    assert spec.schedule == Backoff(0.1, 2.0, 2.0)
    assert spec.to_dict()["kind"] == "client"


def test_form_strings_are_accepted():
    spec = parse_spec({
        "kind": "server", "port": "1060", "drop_rate": "0.5", "seed": "7", "name": "",
        "host": " 127.0.0.1 ",
    })
    assert spec.port == 1060
    assert spec.drop_rate == 0.5
    assert spec.seed == 7
    assert spec.name is None
    assert spec.host == "127.0.0.1"
    client = parse_spec({
        "kind": "client", "port": " 2000 ", "count": "3", "interval": "0", "timeout": "0.02",
        "backoff": "1.5", "give_up_after": "0.5", "message": "", "mode": "connected",
    })
    assert (client.port, client.count, client.interval) == (2000, 3, 0.0)
    assert client.schedule == Backoff(0.02, 1.5, 0.5)
    assert client.message is None
    assert client.mode == "connected"


@pytest.mark.parametrize("port", ["domain", " domain ", "ntp"])
def test_service_names_stay_names(port):
    # resolved when the worker starts, not while checking the spec
    assert parse_spec({"kind": "client", "port": port}).port == port.strip()


def test_port_bounds_are_allowed():
    assert parse_spec({"kind": "server", "port": 0}).port == 0
    assert parse_spec({"kind": "server", "port": 65535}).port == 65535


def test_server_host_may_be_empty_for_all_interfaces():
    assert parse_spec({"kind": "server", "host": ""}).host == ""


def test_names_are_kept():
    assert parse_spec({"kind": "server", "name": "lab-1_a"}).name == "lab-1_a"


def bad(raw) -> BadSpec:
    with pytest.raises(BadSpec) as caught:
        parse_spec(raw)
    error = caught.value
    assert error.status == 422
    assert error.message == str(error) and len(error.message) > 20
    return error


def test_not_a_dict():
    for raw in (None, [], "server", 42, [("kind", "server")]):
        error = bad(raw)
        assert "JSON object" in error.message


def test_missing_kind():
    error = bad({"port": 1060})
    assert error.field == "kind"
    assert "server" in error.message and "client" in error.message


@pytest.mark.parametrize("kind", ["teapot", "", 3, None, ["server"]])
def test_unknown_kind(kind):
    error = bad({"kind": kind})
    assert error.field == "kind"
    assert repr(kind) in error.message
    assert "server, client" in error.message


def test_unknown_field_is_named_with_the_known_ones():
    error = bad({"kind": "server", "colour": "red"})
    assert error.field == "colour"
    assert "'colour'" in error.message
    assert "drop_rate" in error.message and "port" in error.message
    # a client field on a server is unknown too
    assert bad({"kind": "server", "count": 3}).field == "count"


@pytest.mark.parametrize("port", [-1, 70000, 65536, "-1", "70000"])
def test_port_out_of_range(port):
    error = bad({"kind": "server", "port": port})
    assert error.field == "port"
    assert "65535" in error.message


@pytest.mark.parametrize(
    "port",
    ["a b", True, False, 1.5, None, [], "", "²", "1060x", "-domain",
     pytest.param("9" * 5000, id="5000-digits")],
)
def test_port_not_a_number_or_a_name(port):
    error = bad({"kind": "client", "port": port})
    assert error.field == "port"
    assert "service name" in error.message


@pytest.mark.parametrize("rate", [2, -0.1, "x", math.nan, "nan", math.inf, "inf", True, None,
                                  pytest.param(10**400, id="huge-int")])
def test_bad_drop_rate(rate):
    error = bad({"kind": "server", "drop_rate": rate})
    assert error.field == "drop_rate"
    assert "from 0 to 1" in error.message


@pytest.mark.parametrize("count", [0, -1, "0", 1.5, "many", True,
                                   pytest.param(10**400, id="huge-int"),
                                   pytest.param("1" * 400, id="huge-digits")])
def test_bad_count(count):
    error = bad({"kind": "client", "count": count})
    assert error.field == "count"
    assert "whole number" in error.message


@pytest.mark.parametrize("seed", [1.5, "x", 2**63, pytest.param(10**400, id="huge-int")])
def test_bad_seed(seed):
    assert bad({"kind": "server", "seed": seed}).field == "seed"


@pytest.mark.parametrize(
    ("field", "value"),
    [("timeout", 0), ("timeout", 61), ("backoff", 0.5), ("give_up_after", -1), ("interval", -1)],
)
def test_bad_client_numbers(field, value):
    error = bad({"kind": "client", field: value})
    assert error.field == field
    assert "must be a number" in error.message


def test_bad_mode():
    error = bad({"kind": "client", "mode": "telepathic"})
    assert error.field == "mode"
    assert "'telepathic'" in error.message
    assert "promiscuous" in error.message and "connected" in error.message


def test_bad_reply():
    error = bad({"kind": "server", "reply": "shout"})
    assert error.field == "reply"
    assert "length, echo, none" in error.message


@pytest.mark.parametrize("name", ["Has Space", "UPPER", "-dash-first", "x" * 49, 5, "é"])
def test_bad_name(name):
    error = bad({"kind": "server", "name": name})
    assert error.field == "name"
    assert "48 lower-case letters" in error.message


@pytest.mark.parametrize("host", ["", "   "])
def test_empty_client_host(host):
    error = bad({"kind": "client", "host": host})
    assert error.field == "host"
    assert "empty" in error.message


@pytest.mark.parametrize("host", ["local host", 127, None, "a" * 254])
def test_bad_host(host):
    error = bad({"kind": "server", "host": host})
    assert error.field == "host"
    assert "127.0.0.1" in error.message


def test_huge_message():
    error = bad({"kind": "client", "message": "x" * 65508})
    assert error.field == "message"
    assert "65507" in error.message
    # the limit is in bytes, not characters
    assert bad({"kind": "client", "message": "é" * 40000}).field == "message"
    assert parse_spec({"kind": "client", "message": "x" * 65507}).message == "x" * 65507


def test_message_must_be_text():
    assert bad({"kind": "client", "message": 42}).field == "message"
